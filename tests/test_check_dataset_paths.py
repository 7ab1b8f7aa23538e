"""check-dataset's text output names files inside the folder relative to it (the summary line
names the folder once); paths outside it stay whole, and --json keeps full paths."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from sidestep.cli import main


def test_findings_name_files_relative_to_the_folder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "songs"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "sub" / "x.wav", np.zeros((48000 * 6, 2), dtype="float32") + 0.1, 48000)
    (folder / "sub" / "x.json").write_text("{")
    for given in (str(folder), "songs"):
        monkeypatch.chdir(tmp_path)
        main(["--plain", "check-dataset", given])
        lines = capsys.readouterr().out.splitlines()
        findings = [ln for ln in lines if ln.startswith(("error", "warning", "note"))]
        assert any("sub/x.json" in ln for ln in findings)
        assert not any(str(folder) in ln or " songs/" in ln for ln in findings), findings
    main(["check-dataset", str(folder), "--json"])
    assert str(folder) in json.dumps(json.loads(capsys.readouterr().out))


def test_only_paths_inside_are_shortened(tmp_path):
    from sidestep.cli.data_cmds import inside_names

    short = inside_names(tmp_path / "ds")
    assert short(f"{tmp_path}/ds/a.wav and {tmp_path}/ds2/b.wav") == f"a.wav and {tmp_path}/ds2/b.wav"
    assert inside_names(tmp_path / ".")("../x and ./y") in ("../x and ./y", "../x and y")
