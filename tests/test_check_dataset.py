"""``check-dataset`` (issue #14): each problem kind is found in a folder made to hold it, the
JSON has the documented shape, the exit code says whether training can go ahead, and the
check changes nothing in the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sidestep.cli import main
from sidestep.data.check import check_dataset
from tests.test_dataset_paths import tree_digest

RATE = 48_000


def tone(seconds: float, rate: int = RATE, amp: float = 0.3, freq: float = 220.0):
    t = np.arange(int(seconds * rate)) / rate
    mono = amp * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t))
    return np.stack([mono, mono * 0.9], axis=1).astype(np.float32)


def record(frames: int = 50, tokens: int = 8, cond: int = 128) -> dict:
    return {"target_latents": torch.randn(frames, 64), "attention_mask": torch.ones(frames),
            "encoder_hidden_states": torch.randn(tokens, cond),
            "encoder_attention_mask": torch.ones(tokens, dtype=torch.bool),
            "context_latents": torch.randn(frames, 128), "metadata": {"caption": "x"}}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    sf.write(d / "good.wav", tone(8), RATE, subtype="PCM_16")
    (d / "good.txt").write_text("caption: warm piano\nbpm: 90\n")
    sf.write(d / "copy_of_good.flac", sf.read(d / "good.wav", dtype="int16")[0], RATE,
             subtype="PCM_16")
    (d / "copy_of_good.txt").write_text("a copy")
    (d / "unreadable.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    sf.write(d / "empty.wav", np.zeros((0, 2), np.float32), RATE)
    sf.write(d / "silent.wav", np.zeros((RATE * 6, 2), np.float32), RATE)
    (d / "silent.txt").write_text("silence")
    sf.write(d / "clipped.wav", np.clip(tone(6, amp=3.0), -1, 1), RATE)
    (d / "clipped.txt").write_text("loud")
    sf.write(d / "short.wav", tone(2, freq=330), RATE)
    (d / "short.txt").write_text("short")
    sf.write(d / "chunky.wav", tone(12, freq=440), RATE)
    (d / "chunky.txt").write_text("twelve seconds")
    sf.write(d / "low_rate.wav", tone(6, rate=22_050, freq=550), 22_050)
    (d / "low_rate.txt").write_text("low rate")
    sf.write(d / "no_caption.wav", tone(6, freq=660), RATE)
    sf.write(d / "bad_json.wav", tone(6, freq=770), RATE)
    (d / "bad_json.json").write_text("{not json")
    sf.write(d / "latin1.wav", tone(6, freq=880), RATE)
    (d / "latin1.txt").write_bytes("caption: caf\xe9 jazz".encode("latin-1"))
    sf.write(d / "instr.wav", tone(6, freq=990), RATE)
    (d / "instr.json").write_text(json.dumps({"caption": "ambient", "is_instrumental": True,
                                              "lyrics": "[Verse]\nla la la"}))
    sf.write(d / "clash.wav", tone(6, freq=1100), RATE)
    sf.write(d / "clash.ogg", tone(6, freq=1200), RATE)
    torch.save(record(), d / "ok.pt")
    torch.save(record(cond=96), d / "other_model.pt")
    (d / "garbage.pt").write_bytes(b"\x00" * 100)
    return d


def kinds(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in report.problems:
        out.setdefault(p.kind, set()).add(p.file.rsplit("/", 1)[-1])
    return out


def test_every_problem_kind_is_found(bad_folder):
    report = check_dataset(bad_folder, chunk_duration=30)
    found = kinds(report)
    assert found["unreadable"] == {"unreadable.wav"}
    assert found["empty"] == {"empty.wav"}
    assert found["silence"] == {"silent.wav"}
    assert found["clipping"] == {"clipped.wav"}
    assert found["too_short"] == {"short.wav"}
    assert "chunky.wav" in found["shorter_than_chunk"]
    assert found["mixed_sample_rates"] == {bad_folder.name}
    assert found["duplicate"] == {"good.wav"} or found["duplicate"] == {"copy_of_good.flac"}
    assert "no_caption.wav" in found["missing_sidecar"]
    assert found["bad_sidecar"] == {"bad_json.wav", "latin1.wav"}
    assert found["lyrics_on_instrumental"] == {"instr.wav"}
    assert found["name_clash"] & {"clash.wav", "clash.ogg"}
    assert found["latent_width"] == {"other_model.pt"}
    assert found["bad_tensor"] == {"garbage.pt"}
    # clean files raise nothing of their own
    assert not any(p.file.endswith("/ok.pt") for p in report.problems)
    by_file = {(p.file.rsplit("/", 1)[-1], p.kind): p.severity for p in report.problems}
    assert by_file[("bad_json.wav", "bad_sidecar")] == "error"
    assert by_file[("latin1.wav", "bad_sidecar")] == "warning"
    assert by_file[("silent.wav", "silence")] == "warning"
    assert not report.usable


def test_model_widths_decide_over_the_majority(tmp_path):
    torch.save(record(cond=96), tmp_path / "a.pt")
    torch.save(record(cond=96), tmp_path / "b.pt")
    assert check_dataset(tmp_path).usable  # consistent with each other
    report = check_dataset(tmp_path, latent_width=64, cond_width=128)
    assert [p.kind for p in report.problems] == ["latent_width", "latent_width",
                                                 "no_usable_files"]
    assert "preprocess it again" in report.problems[0].message and not report.usable


def test_cli_json_shape_exit_codes_and_no_changes(bad_folder, tmp_path, capsys):
    before = tree_digest(bad_folder)
    assert main(["check-dataset", str(bad_folder), "--json", "--chunk-duration", "30"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["usable"] is False
    assert doc["audio_files"] == 15 and doc["tensor_files"] == 3
    assert all(set(p) == {"file", "kind", "severity", "message"} for p in doc["problems"])
    assert {p["severity"] for p in doc["problems"]} <= {"error", "warning", "info"}
    assert tree_digest(bad_folder) == before

    good = tmp_path / "good"
    good.mkdir()
    sf.write(good / "song.wav", tone(8), RATE)
    (good / "song.txt").write_text("caption: piano")
    assert main(["--plain", "check-dataset", str(good)]) == 0
    assert "usable" in capsys.readouterr().out
    assert main(["--plain", "check-dataset", str(good / "song.wav")]) == 2
    assert "not a folder" in capsys.readouterr().out


def test_cli_checks_tensors_against_the_model(demo_root, tmp_path, capsys):
    torch.save(record(cond=96), tmp_path / "x.pt")
    code = main(["--plain", "check-dataset", str(tmp_path), "--checkpoint-dir",
                 str(demo_root / "checkpoints")])
    assert code == 2
    assert "[latent_width]" in capsys.readouterr().out
    assert main(["--plain", "check-dataset", str(demo_root / "tensors"), "--checkpoint-dir",
                 str(demo_root / "checkpoints")]) == 0


def test_what_preprocessing_would_refuse_or_miss(tmp_path):
    """From trying it as a user: names that clash once made file-safe, songs in hidden
    folders, a manifest naming a missing file, audio too short for the VAE."""
    sf.write(tmp_path / "my song.wav", tone(6), RATE)
    sf.write(tmp_path / "my_song.wav", tone(6, freq=330), RATE)
    (tmp_path / ".stems").mkdir()
    sf.write(tmp_path / ".stems" / "hidden.wav", tone(6), RATE)
    sf.write(tmp_path / "blip.wav", tone(0.1), RATE)
    torch.save(record(), tmp_path / "ok.pt")
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": ["ok.pt", "gone.pt"]}))
    report = check_dataset(tmp_path)
    found = kinds(report)
    assert found["name_clash"] & {"my song.wav", "my_song.wav"}
    assert not any("hidden" in p.file for p in report.problems)
    assert [a.path.name for a in report.audio] == ["blip.wav", "my song.wav", "my_song.wav"]
    assert found["bad_manifest"] == {"manifest.json"}
    assert ("blip.wav", "error") in {(p.file.rsplit("/", 1)[-1], p.severity)
                                     for p in report.problems if p.kind == "too_short"}
    assert not report.usable
