"""Preprocessing (issue #14): resumable (a rerun encodes only what is missing), atomic per file,
cancellable without partial files, one bad song reported while the rest are written, and long
audio encoded in tiles that agree with a whole-song encode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sidestep.data.dataset_json import load_dataset_json
from sidestep.data.preprocess import (STATE_FILE, PreprocessError, load_vae, preprocess,
                                      vae_encode)
from sidestep.data.tensors import list_files, validate
from sidestep.model.checkpoints import DiscoveryError


@pytest.fixture(scope="module")
def songs(demo_root, tmp_path_factory):
    """Three demo songs in a folder of their own (their dataset.json records point to it)."""
    _meta, samples = load_dataset_json(demo_root / "audio" / "dataset.json")
    return samples[:3]


def run(samples, demo_root, out, **kw):
    events = []
    result = preprocess(samples, demo_root / "checkpoints", "turbo", out,
                        progress=events.append, **kw)
    return result, events


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")}


def leftovers(folder: Path) -> list[str]:
    """Cut-off writes anywhere, and (once a run completes) pass-1 files."""
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or p.name == ".sidestep-pass1")


def test_rerun_encodes_only_the_missing_file(songs, demo_root, tmp_path):
    out = tmp_path / "t"
    first, events = run(songs, demo_root, out)
    assert len(first.written) == 3 and not first.failed
    assert [e.phase for e in events if e.phase in ("plan", "done")] == ["plan", "done"]
    assert {e.phase for e in events} >= {"encode", "condition", "load"}
    before = mtimes(out)
    (out / f"{songs[1].id}.pt").unlink()

    second, events = run(songs, demo_root, out)
    assert [p.name for p in second.written] == [f"{songs[1].id}.pt"]
    assert sorted(p.name for p in second.reused) == sorted(
        f"{s.id}.pt" for s in (songs[0], songs[2]))
    after = mtimes(out)
    assert after[f"{songs[0].id}.pt"] == before[f"{songs[0].id}.pt"]
    assert after[f"{songs[2].id}.pt"] == before[f"{songs[2].id}.pt"]
    assert after[f"{songs[1].id}.pt"] != before[f"{songs[1].id}.pt"]
    assert sum(e.phase == "encode" for e in events) == 1
    # the manifest lists all three, in dataset order, and training accepts them
    assert [p.name for p in list_files(out)] == [f"{s.id}.pt" for s in songs]
    assert len(validate(list_files(out), 64, 128)) == 3

    # a changed caption is a changed input: that song alone is encoded again
    songs_edited = [songs[0], songs[1], type(songs[2])(**{**songs[2].__dict__,
                                                          "caption": "a new caption"})]
    third, _ = run(songs_edited, demo_root, out)
    assert [p.name for p in third.written] == [f"{songs[2].id}.pt"]
    assert not leftovers(out)


def test_latents_do_not_depend_on_which_songs_were_encoded(songs, demo_root, tmp_path):
    run(songs, demo_root, tmp_path / "all")
    run(songs[2:], demo_root, tmp_path / "one")
    name = f"{songs[2].id}.pt"
    a = torch.load(tmp_path / "all" / name, weights_only=True)
    b = torch.load(tmp_path / "one" / name, weights_only=True)
    assert torch.equal(a["target_latents"], b["target_latents"])


@pytest.mark.parametrize("stop_in", ["encode", "condition"])
def test_cancel_leaves_no_partial_file_and_a_rerun_finishes(songs, demo_root, tmp_path,
                                                            stop_in):
    out = tmp_path / "t"
    seen = []

    def progress(e):
        seen.append(e.phase)

    def cancel():  # asked while the second song of the chosen pass is under way
        return seen.count(stop_in) >= 2

    result = preprocess(songs, demo_root / "checkpoints", "turbo", out, progress=progress,
                        cancel=cancel)
    assert result.cancelled and seen[-1] == "cancelled"
    done = sorted(p.name for p in out.glob("*.pt"))
    # the song under way finishes (whole); the third is never started
    assert len(done) == (2 if stop_in == "condition" else 0)
    assert [p.name for p in result.written] == done
    # pass-1 work is kept for the rerun: the songs through pass 1 but not pass 2
    assert result.half_done == (1 if stop_in == "condition" else 2)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for name in done:  # complete, loadable files only
        torch.load(out / name, weights_only=True)

    again, events = run(songs, demo_root, out)
    assert len(again.written) == 3 - len(done) and len(again.reused) == len(done)
    # only the song that never went through pass 1 is encoded again
    assert sum(e.phase == "encode" for e in events) == (0 if stop_in == "condition" else 1)
    assert not leftovers(out)


def test_a_cancelled_re_encode_keeps_the_files_it_had_not_reached(songs, demo_root, tmp_path):
    """Preprocessing a finished folder again with other settings, cancelled after one song:
    the manifest listed that one only, so the folder's other good tensors no longer trained."""
    out = tmp_path / "t"
    run(songs, demo_root, out)
    before = mtimes(out)
    seen = []
    result = preprocess(songs, demo_root / "checkpoints", "turbo", out, max_duration=1.0,
                        progress=lambda e: seen.append(e.phase),
                        cancel=lambda: seen.count("condition") >= 1)
    assert result.cancelled and len(result.written) == 1
    assert len(result.earlier) == 2
    assert [p.name for p in list_files(out)] == [f"{s.id}.pt" for s in songs]
    after = mtimes(out)  # the two it had not reached are the earlier run's, untouched
    assert sum(after[name] == before[name] for name in before) == 2
    again, _ = run(songs, demo_root, out, max_duration=1.0)  # the rerun replaces them
    assert len(again.written) == 2 and len(again.reused) == 1 and not again.earlier


def test_a_corrupt_song_is_reported_and_the_others_written(songs, demo_root, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    bad_audio = folder / "broken.wav"
    bad_audio.write_bytes(b"RIFF....WAVEfmt not audio at all" * 4)
    broken = type(songs[0])(**{**songs[0].__dict__, "id": "broken",
                               "audio_path": str(bad_audio), "filename": "broken.wav"})
    result, _ = run([broken, *songs[:2]], demo_root, tmp_path / "t")
    assert [Path(f).name for f, _reason in result.failed] == ["broken.wav"]
    assert len(result.written) == 2


def test_refusals_change_nothing(songs, demo_root, tmp_path):
    clash = type(songs[1])(**{**songs[1].__dict__, "id": songs[0].id})
    out = tmp_path / "t"
    with pytest.raises(PreprocessError, match="both be written"):
        run([songs[0], clash], demo_root, out)
    assert not out.exists()
    with pytest.raises(DiscoveryError):
        preprocess(songs, demo_root / "checkpoints", "no-such-model", out)
    assert not out.exists()


def test_a_failed_write_leaves_neither_half_a_file_nor_its_temporary(tmp_path):
    from sidestep.data.preprocess import _save_atomic

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError):
        _save_atomic({"x": torch.zeros(3), "y": Unpicklable()}, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_tiled_encoding_matches_a_whole_encode(demo_root):
    vae = load_vae(demo_root / "checkpoints" / "vae", "cpu", torch.float32)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 48_000 * 8, generator=g) * 0.2
    whole = vae_encode(vae, audio, torch.Generator().manual_seed(1), tile_seconds=60)
    tiled = vae_encode(vae, audio, torch.Generator().manual_seed(1), tile_seconds=4)
    assert whole.shape == tiled.shape == (200, 64)
    # Same noise; only the posterior near the tile joins differs, and by little.
    err = (whole - tiled).abs()
    assert float(err.mean()) < 0.05 * float(whole.abs().mean())


def test_state_file_is_ours_and_a_broken_one_is_safe(songs, demo_root, tmp_path):
    out = tmp_path / "t"
    run(songs[:1], demo_root, out)
    (out / STATE_FILE).write_text("{broken")
    again, _ = run(songs[:1], demo_root, out)
    assert len(again.written) == 1  # no trustworthy record: encoded again, never skipped
    recorded = json.loads((out / STATE_FILE).read_text())["files"]
    assert list(recorded) == [songs[0].id]  # and the record is whole again
    third, _ = run(songs[:1], demo_root, out)
    assert [p.name for p in third.reused] == [f"{songs[0].id}.pt"]


def test_ctrl_c_in_the_cli_keeps_finished_files_and_a_rerun_completes(demo_root, tmp_path):
    """The user's path: `sidestep preprocess`, Ctrl+C during pass 1, the same command again."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "tensors"
    audio = tmp_path / "audio"  # five of the demo's songs (with their sidecars): enough here
    audio.mkdir()
    for f in (demo_root / "audio").iterdir():
        if f.name.startswith(tuple(f"clip_0{i}." for i in range(5))):
            (audio / f.name).symlink_to(f)
    argv = [str(Path(sys.executable).parent / "sidestep"), "--plain", "preprocess",
            "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--audio-dir", str(audio), "--tensor-output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[encode 3/"):
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "cancelled: 0 of 5 songs are done" in rest
    assert "stopping after this song" in err and "Traceback" not in err
    assert not list(out.glob("*.pt")) and not list(out.rglob("*.tmp"))
    assert "half-done (pass 1 kept)" in rest  # the songs encoded so far are not lost

    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 5 tensor files" in done.stdout and "half-done earlier" in done.stdout
    # nothing from the libraries (progress bars, bitsandbytes' kernel warning, deprecations)
    assert done.stderr == ""
    assert not leftovers(out)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert "wrote 0 tensor files (kept 5 finished earlier)" in again.stdout


def test_a_stop_during_the_trainers_preprocessing_ends_stopped(demo_root, tmp_path):
    from conftest import Recorder, train_config
    from sidestep.engine.control import Control
    from sidestep.engine.trainer import Trainer

    cfg = train_config(demo_root, tmp_path / "tensors", tmp_path / "run", preprocess=True,
                       audio_dir=str(demo_root / "audio"), tensor_output=str(tmp_path / "tensors"))
    control = Control()
    control.request_stop("test")
    result = Trainer(cfg, [Recorder()], control).run()
    assert result.status == "stopped" and result.error is None
    assert not list((tmp_path / "tensors").glob("*.pt"))
    assert not (tmp_path / "run").exists()  # nothing trained, nothing kept


def test_a_closed_stdout_stops_the_cli_and_says_so_on_stderr(demo_root, tmp_path):
    """`sidestep preprocess ... | head -1`: stopped at the next song, exit 130, and the reason
    is on stderr, the one stream still there."""
    import subprocess
    import sys

    out = tmp_path / "tensors"
    audio = tmp_path / "audio"  # five of the demo's songs (with their sidecars): enough here
    audio.mkdir()
    for f in (demo_root / "audio").iterdir():
        if f.name.startswith(tuple(f"clip_0{i}." for i in range(5))):
            (audio / f.name).symlink_to(f)
    argv = [str(Path(sys.executable).parent / "sidestep"), "--plain", "preprocess",
            "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--audio-dir", str(audio), "--tensor-output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    proc.stdout.readline()
    proc.stdout.close()  # the reader went away, as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 130
    assert "output closed, so stopped" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp"))


def test_time_left_follows_the_songs_lengths(monkeypatch):
    """A 30 s song took 3 s: a 10-minute one next is 60 s away, not another 3 s (a count of
    files said 52 s, then 10:30 at the next song); a song of unknown length counts as 1 s, and
    --max-duration caps what is encoded."""
    import time

    from sidestep.data.dataset_json import Sample
    from sidestep.data.preprocess import _Clock, _encoded_seconds

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    clock = _Clock([30.0, 600.0, 0.0])
    assert clock.eta(0) is None  # no pace yet
    now[0] += 3.0
    clock.tick()
    assert clock.eta(1) == pytest.approx(3.0 / 30 * 601)
    song = Sample(id="a", audio_path="/a.wav", filename="a.wav", caption="", duration=600.0)
    assert (_encoded_seconds(song, 0.0), _encoded_seconds(song, 30.0)) == (600.0, 30.0)
