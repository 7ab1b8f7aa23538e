"""Dataset folders and output paths (issue #12): a copied tensor folder trains on its own
files, bad output paths are refused before anything is written, and sidecar text that is not
UTF-8 is reported."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from sidestep.cli import main
from sidestep.data.tensors import DataError, list_files, validate

LATENT_DIM, COND_DIM = 64, 128  # the demo model's sizes


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (with its bytes' hash): equal before and after
    means nothing was created, changed or removed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# -- manifest.json --------------------------------------------------------------------------------
def test_manifest_entries_are_relative(demo_root):
    tensors = demo_root / "tensors"
    entries = json.loads((tensors / "manifest.json").read_text())["samples"]
    assert entries and all(not Path(e).is_absolute() for e in entries)
    assert all((tensors / e).is_file() for e in entries)


def _copy_and_corrupt(demo_root, tmp_path) -> tuple[Path, Path]:
    copy = tmp_path / "copy"
    shutil.copytree(demo_root / "tensors", copy)
    bad = sorted(copy.glob("*.pt"))[3]
    bad.write_bytes(b"not a tensor file")
    return copy, bad


def test_copied_folder_uses_its_own_files(demo_root, tmp_path):
    copy, bad = _copy_and_corrupt(demo_root, tmp_path)
    files = list_files(copy)
    assert files and all(f.parent == copy for f in files)
    with pytest.raises(DataError, match=str(bad)):
        validate(files, LATENT_DIM, COND_DIM)


def test_old_absolute_manifest_resolves_by_name(demo_root, tmp_path):
    copy, bad = _copy_and_corrupt(demo_root, tmp_path)
    original = demo_root / "tensors"
    names = [f.name for f in sorted(copy.glob("*.pt"))]
    # what preprocessing used to write: absolute paths into the original folder
    (copy / "manifest.json").write_text(json.dumps(
        {"samples": [str(original / n) for n in names], "num_samples": len(names)}))
    files = list_files(copy)
    assert files == [copy / n for n in names]
    with pytest.raises(DataError, match=str(bad)):
        validate(files, LATENT_DIM, COND_DIM)


@pytest.mark.parametrize("entry", ["/somewhere/else/gone.pt", "../outside.pt"])
def test_manifest_entry_outside_the_folder_is_an_error(tmp_path, entry):
    folder = tmp_path / "tensors"
    folder.mkdir()
    (tmp_path / "outside.pt").write_bytes(b"x")
    (folder / "a.pt").write_bytes(b"x")
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"samples": ["a.pt", entry]}))
    with pytest.raises(DataError) as exc:
        list_files(folder)
    msg = str(exc.value)
    assert str(manifest) in msg and entry in msg and "outside the dataset folder" in msg
    assert "delete" in msg


def test_manifest_entry_missing_is_an_error(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": ["a.pt", "b.pt"]}))
    with pytest.raises(DataError, match="b.pt, which is missing"):
        list_files(tmp_path)


# -- output paths ---------------------------------------------------------------------------------
@pytest.fixture
def workspace(demo_root, tmp_path):
    """tmp/songs (three demo clips with sidecars) and an existing tmp/out folder."""
    songs = tmp_path / "songs"
    songs.mkdir()
    for src in sorted((demo_root / "audio").glob("clip_0[0-2]*")):
        shutil.copy(src, songs / src.name)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    return tmp_path


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main(["--plain", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_build_dataset_output_is_a_folder(workspace, capsys):
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"),
                         "--output", str(workspace / "out")], capsys)
    assert code == 2
    assert str(workspace / "out") in err and "is a folder" in err
    assert str(workspace / "out" / "dataset.json") in err  # the fix: a file path
    assert tree_digest(workspace) == before


def test_build_dataset_counts_one_song_as_one_song(workspace, capsys):
    songs = workspace / "one"
    songs.mkdir()
    shutil.copy(next((workspace / "songs").glob("*.wav")), songs)
    code = main(["--plain", "build-dataset", "-i", str(songs)])
    assert code == 0
    assert f"wrote {songs / 'dataset.json'}: 1 song (" in capsys.readouterr().out


def test_build_dataset_output_under_a_file(workspace, capsys):
    before = tree_digest(workspace)
    target = workspace / "out" / "keep.txt" / "dataset.json"
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"),
                         "--output", str(target)], capsys)
    assert code == 2
    assert str(target) in err and "is a file, not a folder" in err
    assert tree_digest(workspace) == before


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_sidecars_saved_as_unicode_with_a_byte_order_mark_are_read(workspace, capsys, codec):
    """Windows editors save "Unicode" as UTF-16 with a byte-order mark: the caption was read
    as UTF-8, turned into U+FFFD noise and trained into the adapter (with a warning to
    re-save it); a .json sidecar with a UTF-8 mark was refused as not JSON."""
    songs = workspace / "songs"
    text = "caption: 夜のピアノ, café\nbpm: 90\n"
    bom = {"utf-16-be": b"\xfe\xff"}.get(codec, b"")
    (songs / "clip_01.txt").write_bytes(bom + text.encode(codec))
    (songs / "clip_02.txt").unlink()  # (its .txt would win over the .json)
    (songs / "clip_02.json").write_bytes(bom + json.dumps(
        {"caption": "Песня", "bpm": 120}, ensure_ascii=False).encode(codec))
    out = workspace / "dataset.json"
    code, err = run_cli(["build-dataset", "-i", str(songs), "--output", str(out)], capsys)
    assert code == 0 and "UTF-8" not in err, err
    samples = {s["filename"]: s for s in json.loads(out.read_text())["samples"]}
    assert (samples["clip_01.wav"]["caption"], samples["clip_01.wav"]["bpm"]) == \
        ("夜のピアノ, café", 90)
    assert (samples["clip_02.wav"]["caption"], samples["clip_02.wav"]["bpm"]) == ("Песня", 120)


def test_song_ids_keep_letters_of_any_script(tmp_path):
    """Japanese or Cyrillic file names all became "_" (so every such song clashed with the
    next, or trained as _.pt); an accent macOS stores apart from its letter is kept with it."""
    from sidestep.data.dataset_json import sample_id

    for name, sid in (("夜の歌.wav", "夜の歌"), ("Песня 1.flac", "Песня_1"),
                      ("cafe\u0301.wav", "café"), ("a/b c?.wav", "a_b_c_"),
                      ("mix v1.2.wav", "mix_v1.2")):
        assert sample_id(tmp_path / name, tmp_path) == sid, name


def test_every_id_clash_is_named_at_once(demo_root, workspace, capsys):
    songs = workspace / "songs"
    for name in ("clip_00.flac", "clip_01.mp3", "clip_01.ogg"):
        shutil.copy(songs / "clip_00.wav", songs / name)
    before = tree_digest(workspace)
    code, err = run_cli(_preprocess_argv(demo_root, workspace, workspace / "t"), capsys)
    assert code == 2
    assert "clip_00.flac and " in err and "clip_00.wav would both be written as clip_00.pt" in err
    assert " would all be written as clip_01.pt" in err
    assert tree_digest(workspace) == before


def _preprocess_argv(demo_root, workspace, tensor_output):
    return ["preprocess", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--audio-dir", str(workspace / "songs"), "--tensor-output", str(tensor_output),
            "--device", "cpu"]


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_preprocess_tensor_output_is_a_file(demo_root, workspace, capsys, where):
    target = workspace / "out" / "keep.txt"
    if where == "under-file":
        target = target / "tensors"
    before = tree_digest(workspace)
    code, err = run_cli(_preprocess_argv(demo_root, workspace, target), capsys)
    assert code == 2
    assert str(target) in err and "not a folder" in err
    assert tree_digest(workspace) == before


def test_read_only_output_folder_is_refused(demo_root, workspace, capsys, monkeypatch):
    # root writes anywhere, so the permission check itself is simulated; the real case is
    # test_read_only_output_folder_for_real below (skipped as root).
    from sidestep.data import paths

    ro = workspace / "out"
    monkeypatch.setattr(paths, "_writable", lambda folder: Path(folder) != ro)
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"),
                         "--output", str(ro / "dataset.json")], capsys)
    assert code == 2 and f"no permission to write in {ro}" in err
    code, err = run_cli(_preprocess_argv(demo_root, workspace, ro / "tensors"), capsys)
    assert code == 2 and f"no permission to write in {ro}" in err
    assert tree_digest(workspace) == before


def test_write_error_the_checks_miss_is_reported(workspace, capsys, monkeypatch):
    from sidestep.config import atomic

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "write_json", refuse)
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"),
                         "--output", str(workspace / "out" / "dataset.json")], capsys)
    assert code == 2 and "Permission denied" in err and "dataset.json" in err
    assert tree_digest(workspace) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores file permissions")
def test_read_only_output_folder_for_real(workspace, capsys):
    ro = workspace / "out"
    ro.chmod(0o555)
    try:
        before = tree_digest(workspace)
        code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"),
                             "--output", str(ro / "dataset.json")], capsys)
        assert code == 2 and str(ro) in err
        assert tree_digest(workspace) == before
    finally:
        ro.chmod(0o755)


# -- sidecar text ---------------------------------------------------------------------------------
def test_sidecar_that_is_not_utf8_is_reported(workspace, capsys):
    songs = workspace / "songs"
    bad = songs / "clip_01.txt"
    bad.write_bytes(b"caption: caf\xe9 ambient piano\n")
    out = workspace / "dataset.json"
    code, err = run_cli(["build-dataset", "-i", str(songs), "--output", str(out)], capsys)
    assert code == 0
    assert f"warning: {bad}: not valid UTF-8" in err
    captions = {s["filename"]: s["caption"] for s in json.loads(out.read_text())["samples"]}
    assert captions["clip_01.wav"] == "caf\ufffd ambient piano"
    assert sum("UTF-8" in line for line in err.splitlines()) == 1  # only the bad file


def test_sidecar_warnings_reach_preprocess_scans(workspace):
    from sidestep.data.dataset_json import samples_from

    (workspace / "songs" / "clip_00.txt").write_bytes(b"\xff\xfe broken")
    warnings: list[str] = []
    samples_from(str(workspace / "songs"), None, warnings)
    assert len(warnings) == 1 and "clip_00.txt" in warnings[0]


def test_build_dataset_keeps_an_edited_dataset_json_unless_forced(workspace, capsys):
    """dataset.json holds captions the user edited: rebuilding it is refused (exit 2, the file
    unchanged) unless --force says to replace it."""
    songs = workspace / "songs"
    assert run_cli(["build-dataset", "-i", str(songs)], capsys)[0] == 0
    target = songs / "dataset.json"
    edited = target.read_text().replace('"caption": "', '"caption": "MY EDIT ', 1)
    target.write_text(edited)
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(songs), "--tag", "new"], capsys)
    # no --output was typed: the line must not quote one (tryout: "--output ... already exists")
    assert code == 2 and "--output songs" not in err and f"--output {target}" not in err
    assert (f"{target} already exists (the default --output); pass --force to replace it or "
            "--output to write elsewhere") in err
    assert tree_digest(workspace) == before
    code, err = run_cli(["build-dataset", "-i", str(songs), "--output", str(target)], capsys)
    assert code == 2 and f"--output {target} already exists; pass --force" in err
    assert tree_digest(workspace) == before
    code, _ = run_cli(["build-dataset", "-i", str(songs), "--tag", "new", "--force"], capsys)
    assert code == 0 and "MY EDIT" not in target.read_text()


def test_outputs_in_a_folder_that_does_not_exist_are_refused(workspace, capsys):
    """A typo in an output file's folder: exit 2, and no folder appears anywhere."""
    missing = workspace / "no-such" / "dir"
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"), "--output",
                         str(missing / "dataset.json")], capsys)
    assert code == 2 and f"the folder {missing} does not exist" in err
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs" / "clip_00.wav")],
                        capsys)
    assert code == 2 and "is a file; give the folder" in err
    assert tree_digest(workspace) == before


def test_preprocess_dataset_json_that_is_a_folder(demo_root, workspace, capsys):
    """--dataset-json given the songs folder (a common slip): one clear line, exit 2."""
    before = tree_digest(workspace)
    argv = _preprocess_argv(demo_root, workspace, workspace / "tensors")
    code, err = run_cli([*argv, "--dataset-json", str(workspace / "songs")], capsys)
    assert code == 2 and "is a folder; give its dataset.json" in err
    assert tree_digest(workspace) == before


def test_audio_dir_finds_songs_a_dataset_json_names_elsewhere(workspace, capsys):
    """The songs moved (another machine, another folder): --audio-dir next to the dataset.json
    takes each song from there, by its relative path or, for an absolute one, its file name; a
    song not there keeps the written path; a missing --audio-dir is an error."""
    from sidestep.data.dataset_json import DatasetError, samples_from

    songs = workspace / "songs"
    assert run_cli(["build-dataset", "-i", str(songs)], capsys)[0] == 0
    doc = json.loads((songs / "dataset.json").read_text())
    assert all(Path(s["audio_path"]).is_absolute() for s in doc["samples"])
    doc["samples"][1]["audio_path"] = "sub/" + doc["samples"][1]["filename"]  # a relative one
    moved = workspace / "moved"
    (moved / "sub").mkdir(parents=True)
    keep = doc["samples"][2]["filename"]  # not copied: keeps the written path
    for s in doc["samples"]:
        if s["filename"] != keep:
            dest = moved / s["audio_path"] if not s["audio_path"].startswith("/") else moved
            shutil.copy(songs / s["filename"], dest if dest.suffix else dest / s["filename"])
    manifest = workspace / "elsewhere.json"
    manifest.write_text(json.dumps(doc))
    _, samples = samples_from(str(moved), str(manifest))
    where = {s.filename: Path(s.audio_path) for s in samples}
    assert where[doc["samples"][0]["filename"]] == (moved / doc["samples"][0]["filename"])
    assert where[doc["samples"][1]["filename"]] == moved / "sub" / doc["samples"][1]["filename"]
    assert where[keep] == Path(doc["samples"][2]["audio_path"])
    _, unmoved = samples_from(None, str(manifest))
    assert Path(unmoved[0].audio_path).parent == songs
    with pytest.raises(DatasetError, match="audio folder not found"):
        samples_from(str(workspace / "typo"), str(manifest))


def test_a_song_named_with_dots_finds_its_sidecars(workspace, capsys):
    """"mix v1.2 final.wav" reads "mix v1.2 final.txt" and ".json" (they were looked for as
    "mix v1.txt"), and the dataset check agrees it has a caption."""
    from sidestep.data.check import check_dataset

    songs = workspace / "songs"
    shutil.copy(songs / "clip_00.wav", songs / "mix v1.2 final.wav")
    (songs / "mix v1.2 final.txt").write_text("caption: versioned mix, big drums\n")
    shutil.copy(songs / "clip_01.wav", songs / "take 2.5.wav")
    (songs / "take 2.5.json").write_text(json.dumps({"caption": "json caption", "bpm": 90}))
    out = workspace / "dataset.json"
    assert run_cli(["build-dataset", "-i", str(songs), "--output", str(out)], capsys)[0] == 0
    by_name = {s["filename"]: s for s in json.loads(out.read_text())["samples"]}
    assert by_name["mix v1.2 final.wav"]["caption"] == "versioned mix, big drums"
    assert (by_name["take 2.5.wav"]["caption"], by_name["take 2.5.wav"]["bpm"]) == \
        ("json caption", 90)
    kinds = {(Path(p.file).name, p.kind) for p in check_dataset(songs).problems}
    assert ("mix v1.2 final.wav", "missing_sidecar") not in kinds
    assert ("take 2.5.wav", "missing_sidecar") not in kinds


def test_a_bad_tempo_leaves_out_the_tempo_not_the_song(workspace, capsys):
    """bpm 500 in a sidecar: build-dataset keeps the song without a tempo and says so; the
    dataset check warns about the same file beforehand."""
    from sidestep.data.check import check_dataset

    songs = workspace / "songs"
    (songs / "clip_02.txt").write_text("caption: noise rock\nbpm: 500\n")
    out = workspace / "dataset.json"
    code, err = run_cli(["build-dataset", "-i", str(songs), "--output", str(out)], capsys)
    assert code == 0 and "skipped" not in err
    assert "bpm 500 is outside 20-400; the song is kept without a tempo" in err
    by_name = {s["filename"]: s for s in json.loads(out.read_text())["samples"]}
    assert by_name["clip_02.wav"]["caption"] == "noise rock"
    assert by_name["clip_02.wav"]["bpm"] is None
    found = [p for p in check_dataset(songs).problems if p.kind == "bad_sidecar"]
    assert [(Path(p.file).name, p.severity) for p in found] == [("clip_02.wav", "warning")]
    assert "bpm 500" in found[0].message


def test_build_dataset_skips_audio_too_short_to_encode(workspace, capsys):
    """A 0.2 s clip, which the check calls an error and preprocessing would fail on every run,
    is skipped by build-dataset with the reason."""
    import numpy as np
    import soundfile as sf

    songs = workspace / "songs"
    sf.write(songs / "blip.wav", np.zeros((8820, 2), dtype=np.float32) + 0.1, 44100)
    out = workspace / "dataset.json"
    code, err = run_cli(["build-dataset", "-i", str(songs), "--output", str(out)], capsys)
    assert code == 0
    assert "skipped" in err and "blip.wav: only 0.20 s long" in err
    assert "blip.wav" not in {s["filename"] for s in json.loads(out.read_text())["samples"]}


def test_a_read_only_disk_is_not_called_a_permission_problem(tmp_path, monkeypatch):
    """Under a read-only mount the fix is another disk, not "fix its permissions". (A mount
    needs privileges a test does not have: the file system's answers are stood in for.)"""
    from types import SimpleNamespace

    from sidestep.data import paths

    monkeypatch.setattr(paths.os, "access", lambda *a, **k: False)
    monkeypatch.setattr(paths.os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY))
    problem = paths.output_dir_problem(tmp_path / "run", "--output-dir")
    assert problem == (f"--output-dir {tmp_path / 'run'}: {tmp_path} is on a read-only file "
                       "system; choose a folder on a writable disk")
    monkeypatch.setattr(paths.os, "statvfs", lambda p: SimpleNamespace(f_flag=0))
    assert "no permission to write in" in paths.output_dir_problem(tmp_path / "r", "--x")


@pytest.mark.parametrize("name", ["clip_00.wav", "notes.txt", "dataset"])
def test_build_dataset_output_must_be_a_json_file(workspace, capsys, name):
    """--output naming one of the songs (or any non-.json file) is refused even with --force:
    the song is not turned into JSON, and nothing is written."""
    target = workspace / "songs" / name
    before = tree_digest(workspace)
    code, err = run_cli(["build-dataset", "-i", str(workspace / "songs"), "--output",
                         str(target), "--force"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--output {target}" in err and "ending in .json" in err
    assert str(workspace / "songs" / "dataset.json") in err  # the fix
    assert tree_digest(workspace) == before


@pytest.mark.parametrize("kind", ["run", "checkpoint", "root", "model"])
def test_preprocess_refuses_a_run_or_checkpoint_folder(demo_root, workspace, capsys, kind):
    """--tensor-output given a training run's folder, one of its checkpoints, a checkpoint root
    or a model folder: six .pt files and a manifest were dropped among the run's or the
    models' files. Refused (exit 2, one line naming the folder and a separate one), nothing
    written."""
    if kind in ("run", "checkpoint"):
        target = workspace / "my_run"
        target.mkdir()
        (target / "run.json").write_text('{"status": "completed"}')
        (target / "events.jsonl").write_text("")
        if kind == "checkpoint":
            target = target / "checkpoint-epoch-1"
            target.mkdir()
            (target / "training_state.pt").write_bytes(b"state")
        watched = workspace
    else:
        target = demo_root / "checkpoints"
        if kind == "model":
            target = target / "acestep-v15-turbo"
        watched = demo_root / "checkpoints"
    before, songs_before = tree_digest(watched), tree_digest(workspace)
    code, err = run_cli(_preprocess_argv(demo_root, workspace, target), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--tensor-output {target}" in err and "separate folder" in err
    assert tree_digest(watched) == before and tree_digest(workspace) == songs_before


def test_training_preprocess_refuses_a_run_folder(demo_root, workspace, capsys):
    """The same check when training preprocesses first: refused before any song is read."""
    run = workspace / "old_run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    before = tree_digest(workspace)
    code, err = run_cli(["--yes", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                         "--preprocess", "--audio-dir", str(workspace / "songs"),
                         "--tensor-output", str(run), "--output-dir", str(workspace / "new"),
                         "--device", "cpu", "--epochs", "1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--tensor-output {run}" in err and "training run" in err
    assert tree_digest(workspace) == before


def _train_preprocess_argv(demo_root, workspace, *extra):
    return ["--yes", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--preprocess", "--audio-dir", str(workspace / "songs"), "--output-dir",
            str(workspace / "run"), "--device", "cpu", "--epochs", "1", *extra]


def test_training_preprocess_refuses_another_dataset_dir(demo_root, workspace, capsys):
    """--tensor-output pp_t --dataset-dir other_t: every song was encoded into pp_t, then the
    run failed on other_t. Refused before any work: exit 2, one line, nothing created."""
    before = tree_digest(workspace)
    code, err = run_cli(_train_preprocess_argv(
        demo_root, workspace, "--tensor-output", str(workspace / "pp_t"), "--dataset-dir",
        str(workspace / "other_t")), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --dataset-dir") and "--tensor-output" in err
    assert tree_digest(workspace) == before


def test_preprocess_dataset_dir_defaults_to_tensor_output(workspace, monkeypatch):
    """With --preprocess, --dataset-dir is --tensor-output (given or not, however spelled),
    and a missing --tensor-output is the one thing said to be missing."""
    from sidestep.config.resolve import ConfigError, resolve

    monkeypatch.chdir(workspace)
    base = {"checkpoint_dir": "ck", "preprocess": True, "audio_dir": "songs",
            "output_dir": "run"}
    assert resolve("fixed", {**base, "tensor_output": "pp_t"}).config.dataset_dir == "pp_t"
    same = resolve("fixed", {**base, "tensor_output": "pp_t",
                             "dataset_dir": str(workspace / "pp_t")})
    assert os.path.abspath(same.config.dataset_dir) == str(workspace / "pp_t")
    with pytest.raises(ConfigError) as exc:
        resolve("fixed", base)
    assert [e.field for e in exc.value.problems] == ["tensor_output"]


@pytest.mark.parametrize("case", ["more-songs", "same-names"])
def test_preprocess_refuses_a_tensor_folder_of_other_songs(demo_root, workspace, capsys, case):
    """A folder with the 12 demo songs' tensors, given 3 songs: the 9 others were left out of
    the manifest (orphans); songs of the same names from other audio overwrote the demo's
    files. Refused before anything is written; the fix names a separate folder."""
    tensors = workspace / "tensors"
    shutil.copytree(demo_root / "tensors", tensors)
    if case == "same-names":  # clip_00..02 here, all from other audio than the demo's
        for f in sorted(tensors.glob("clip_0[3-9].pt")) + sorted(tensors.glob("clip_1*.pt")):
            f.unlink()
        songs = workspace / "songs"
        for name, src in (("clip_00", "clip_05"), ("clip_01", "clip_06"), ("clip_02", "clip_07")):
            shutil.copy(demo_root / "audio" / f"{src}.wav", songs / f"{name}.wav")
    before = tree_digest(workspace)
    code, err = run_cli(_preprocess_argv(demo_root, workspace, tensors), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--tensor-output {tensors} holds tensors of other songs" in err
    assert ("clip_03.pt" if case == "more-songs" else "clip_00.pt") in err
    assert str(workspace / "tensors-2") in err
    assert tree_digest(workspace) == before


@pytest.mark.parametrize("case", ["more-songs", "same-names"])
def test_training_preprocess_refuses_other_songs_before_its_summary(demo_root, workspace,
                                                                     capsys, case):
    """Training with --preprocess into a folder of other songs' tensors is refused like any
    other bad input: before the settings table and the memory estimate are printed (they read
    as a run that had started), exit 2, one line, nothing written."""
    tensors = workspace / "tensors"
    shutil.copytree(demo_root / "tensors", tensors)
    if case == "same-names":  # clip_00..02 here, made from other audio than these songs
        for f in sorted(tensors.glob("clip_0[3-9].pt")) + sorted(tensors.glob("clip_1*.pt")):
            f.unlink()
        for name, src in (("clip_00", "clip_05"), ("clip_01", "clip_06"), ("clip_02", "clip_07")):
            shutil.copy(demo_root / "audio" / f"{src}.wav", workspace / "songs" / f"{name}.wav")
    before = tree_digest(workspace)
    code = main(["--plain", *_train_preprocess_argv(demo_root, workspace, "--tensor-output",
                                                    str(tensors))])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert f"--tensor-output {tensors} holds tensors of other songs" in captured.err
    assert captured.out == ""  # no summary table, no memory estimate
    assert tree_digest(workspace) == before


def test_training_preprocess_takes_its_own_songs_tensors_moved(demo_root, workspace, capsys):
    """The same songs moved to another folder (same bytes, same text and settings): their
    tensors are this dataset's, so training goes on to its summary (here it then stops at the
    missing terminal for the prompt: no run is started)."""
    tensors = workspace / "tensors"
    tensors.mkdir()
    for name in ("clip_00.pt", "clip_01.pt", "clip_02.pt", ".sidestep-preprocess.json"):
        shutil.copy(demo_root / "tensors" / name, tensors / name)
    argv = [a for a in _train_preprocess_argv(demo_root, workspace, "--tensor-output",
                                              str(tensors)) if a != "--yes"]
    code = main(["--plain", *argv])
    captured = capsys.readouterr()
    assert "other songs" not in captured.err and "Side-Step training" in captured.out
    assert code == 2 and "no terminal to confirm on" in captured.err


# -- a re-preprocess that did not finish -----------------------------------------------------------
def test_a_stopped_re_preprocess_is_said_up_front_and_keeps_the_files(demo_root, workspace,
                                                                      capsys):
    """Tryout: the tensors were re-encoded with other settings, stopped before any song was
    done. The rerun said up front which finished files it would replace and why ("Stop now
    (Ctrl+C) to keep them"); afterwards the manifest listed none of them, so the folder no
    longer trained at all. They are kept, listed and usable; check-dataset notes the
    unfinished run."""
    from sidestep.data.check import check_dataset
    from sidestep.data.dataset_json import samples_from
    from sidestep.data.preprocess import preprocess

    tensors = workspace / "tensors"
    code, err = run_cli(_preprocess_argv(demo_root, workspace, tensors), capsys)
    assert code == 0 and "replaced" not in err
    before = {p.name: p.read_bytes() for p in tensors.glob("*.pt")}
    # the same songs, --normalize lufs: stopped as the first song starts
    _meta, samples = samples_from(str(workspace / "songs"), None)
    said, seen = [], []
    result = preprocess(samples, demo_root / "checkpoints", "turbo", tensors, normalize="lufs",
                        warn=said.append, progress=lambda e: seen.append(e.phase),
                        cancel=lambda: "encode" in seen)
    assert result.cancelled and not result.written and result.half_done == 1
    assert len(said) == 1 and "3 finished tensor files" in said[0]
    assert "--normalize none -> lufs" in said[0] and "clip_00.pt" in said[0]
    assert "Stop now (Ctrl+C) to keep them" in said[0]
    assert sorted(json.loads((tensors / "manifest.json").read_text())["samples"]) == \
        sorted(before)
    assert {p.name: p.read_bytes() for p in tensors.glob("*.pt")} == before
    assert [p.name for p in list_files(tensors)] == sorted(before)

    report = check_dataset(tensors)
    assert report.usable
    assert {p.kind: p.severity for p in report.problems}["unfinished_preprocess"] == "warning"


def test_re_preprocess_names_changed_captions_before_replacing(demo_root, workspace, capsys):
    """The CLI says which finished files a rerun replaces and why (here: captions edited)."""
    tensors = workspace / "tensors"
    assert run_cli(_preprocess_argv(demo_root, workspace, tensors), capsys)[0] == 0
    (workspace / "songs" / "clip_01.txt").write_text("caption: a different caption\n")
    code, err = run_cli(_preprocess_argv(demo_root, workspace, tensors), capsys)
    assert code == 0
    assert "1 finished tensor files" in err and "captions or lyrics changed (1: clip_01.pt)" in err


def test_copies_of_the_songs_with_other_captions_are_not_called_other_songs(demo_root,
                                                                            workspace, capsys):
    """Byte-identical copies of the songs in another folder, with other captions: the refusal
    keeps the folder safe but says what differs, not "tensors of other songs"."""
    tensors = workspace / "tensors"
    assert run_cli(_preprocess_argv(demo_root, workspace, tensors), capsys)[0] == 0
    copies = workspace / "copies"
    shutil.copytree(workspace / "songs", copies)
    (workspace / "songs").rename(workspace / "songs-old")  # moved, too: its path is gone
    for txt in copies.glob("clip_0?.txt"):
        txt.write_text("caption: recaptioned\n")
    before = tree_digest(workspace)
    code, err = run_cli(["preprocess", "--checkpoint-dir", str(demo_root / "checkpoints"),
                         "--audio-dir", str(copies), "--tensor-output", str(tensors),
                         "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other songs" not in err
    assert "made from copies of them in" in err and str(workspace / "songs") in err
    assert "other captions or settings" in err and str(workspace / "tensors-2") in err
    assert tree_digest(workspace) == before


def test_a_dataset_json_beside_the_songs_that_is_not_used_is_named(workspace, capsys):
    """`sidestep preprocess --audio-dir songs` over a folder with build-dataset's dataset.json
    (captions edited in it) encoded the sidecars' captions without a word about it."""
    from sidestep.data.dataset_json import samples_from

    songs = workspace / "songs"
    code, _ = run_cli(["build-dataset", "-i", str(songs)], capsys)
    assert code == 0 and (songs / "dataset.json").is_file()
    notes: list[str] = []
    samples_from(str(songs), None, notes)
    assert notes == [f"{songs / 'dataset.json'} is not used: each song's caption and lyrics "
                     f"come from its sidecar files; give --dataset-json "
                     f"{songs / 'dataset.json'} to use it"]
    notes = []
    samples_from(str(songs), str(songs / "dataset.json"), notes)
    assert notes == []
    # a song added after the dataset.json was built: not encoded, and now said so
    shutil.copy(songs / "clip_00.wav", songs / "new song.wav")
    samples_from(str(songs), str(songs / "dataset.json"), notes)
    assert notes == [f"1 audio file in {songs} is not in {songs / 'dataset.json'} and will not "
                     "be encoded (new song.wav); to include them, run `sidestep build-dataset "
                     f"--input {songs} --force` again (it replaces that dataset.json: copy any "
                     "captions you edited first), or leave out --dataset-json to read the "
                     "songs' sidecars"]
