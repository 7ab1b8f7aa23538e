"""Real processes: SIGKILL in the middle of a save, SIGTERM during a headless CLI run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import train_config
from sidestep.engine import checkpointing as ck
from sidestep.engine.run_dir import summarize
from sidestep.engine.trainer import Trainer

HERE = Path(__file__).parent


def _wait_for(predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("phase", ["before_rename", "before_marker"])
def test_sigkill_while_saving_keeps_the_previous_checkpoint(demo_root, small_tensors, tmp_path,
                                                            phase):
    out = tmp_path / "run"
    marker = tmp_path / "frozen"
    config = dict(checkpoint_dir=str(demo_root / "checkpoints"), dataset_dir=str(small_tensors),
                  output_dir=str(out), num_workers=0, epochs=3, save_every=1, rank=4, alpha=8,
                  gradient_accumulation=2, device="cpu")
    proc = subprocess.Popen([sys.executable, str(HERE / "child_kill_during_save.py"),
                             json.dumps({"phase": phase, "marker": str(marker),
                                         "config": config})],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        frozen = _wait_for(marker.exists, 240, proc)
        assert frozen, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = out / "checkpoint-epoch-1"
    second = out / "checkpoint-epoch-2"
    assert ck.read_state(first)["epoch"] == 1  # the previous checkpoint is intact
    # killed hard: History shows it interrupted, with the intact checkpoint to resume from
    summary = summarize(out)
    assert summary.status == "interrupted" and summary.latest_checkpoint == first
    if phase == "before_rename":
        assert not second.exists()
        assert list(out.glob(".checkpoint-epoch-2.tmp-*"))
    else:
        assert second.is_dir() and not (second / "COMPLETE").exists()
    with pytest.raises(ck.CheckpointProblem):
        ck.read_state(second)
    assert not ck.is_complete(second)
    # resuming from the half checkpoint is refused; from the previous one it works
    bad = Trainer(train_config(demo_root, small_tensors, out, epochs=3,
                               resume_from=str(second))).run()
    assert bad.status == "failed" and bad.error_kind == "input"
    good = Trainer(train_config(demo_root, small_tensors, out, epochs=3,
                                resume_from=str(first))).run()
    assert good.status == "completed", good.error
    assert not list(out.glob(".checkpoint-*"))  # temp folders were tidied
    assert ck.is_complete(out / "checkpoint-epoch-2")


def _cli(demo_root, small_tensors, out, *extra):
    return [sys.executable, "-m", "sidestep", "--plain", "-y", "fixed",
            "--checkpoint-dir", str(demo_root / "checkpoints"), "--dataset-dir",
            str(small_tensors), "--output-dir", str(out), "--num-workers", "0", "--rank", "4",
            "--alpha", "8", "--epochs", "500", "--save-every", "100", "--log-every", "1",
            "--device", "cpu", *extra]


def _start(argv):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_step(proc, timeout=240):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("step "):
            return lines
    raise AssertionError("no training step seen:\n" + "".join(lines[-30:]))


def test_sigterm_saves_exits_130_and_resumes(demo_root, small_tensors, tmp_path):
    out = tmp_path / "cli"
    proc = _start(_cli(demo_root, small_tensors, out))
    try:
        _wait_for_step(proc)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest[-2000:]
    assert "SIGTERM: stopping at the next micro-batch" in rest  # queued by the handler
    assert "resume with: sidestep fixed --resume-from" in rest and "Traceback" not in rest
    saved = [p for p in out.glob("checkpoint-step-*")]
    assert len(saved) == 1 and ck.is_complete(saved[0])
    state = ck.read_state(saved[0])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped"
    # the checkpoint resumes: finish the epoch it stopped in
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=state["epoch"] + 1,
                                  rank=4, alpha=8, gradient_accumulation=4, save_every=100,
                                  resume_from=str(saved[0]))
                     ).run()
    assert result.status == "completed", result.error


def test_second_signal_exits_at_once(monkeypatch):
    """Signals sent back to back merge in the kernel, so the handler is driven directly. The
    handler writes nothing itself (the terminal may be gone): its notice is queued."""
    from sidestep.cli.signals import SignalStop
    from sidestep.engine.control import Control

    def no_io(*_args):
        raise OSError(5, "Input/output error")

    exits, notices = [], []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    monkeypatch.setattr(os, "write", no_io)
    control = Control()
    with SignalStop(control, notices.append) as stopper:
        assert signal.getsignal(signal.SIGTERM) == stopper._handle
        stopper._handle(signal.SIGHUP, None)
        assert control.stop_requested and exits == []
        assert control.stop_reason == "SIGHUP received"
        assert notices and notices[0].startswith("SIGHUP: stopping")
        stopper._handle(signal.SIGINT, None)
        assert exits == [130]
    assert signal.getsignal(signal.SIGTERM) != stopper._handle  # restored afterwards


def test_one_event_sent_twice_is_one_request(monkeypatch):
    """A hung-up terminal's SIGHUP arrives twice under `uv run` (the process group's and uv's
    forwarded copy): that must still stop and save, not exit at once. Likewise a repeat of the
    same signal within a second; a later one is a second request."""
    from sidestep.cli.signals import SignalStop
    from sidestep.engine.control import Control

    clock = [100.0]
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    said: list[str] = []
    with SignalStop(Control(), said.append) as stopper:
        stopper._handle(signal.SIGHUP, None)
        stopper._handle(signal.SIGHUP, None)
        clock[0] += 30
        stopper._handle(signal.SIGHUP, None)
        assert exits == [] and stopper.control.stop_requested
    # no one is there to send another: the notice does not ask for one
    assert said == ["SIGHUP: stopping at the next micro-batch and saving a checkpoint"]
    with SignalStop(Control(), said.append) as stopper:
        stopper._handle(signal.SIGTERM, None)
        assert said[-1].endswith("send it again, a second or more later, to exit at once")
        clock[0] += 0.2
        stopper._handle(signal.SIGTERM, None)  # forwarded copy
        assert exits == []
        clock[0] += 5
        stopper._handle(signal.SIGTERM, None)  # the user means it
        assert exits == [130]
    assert signal.getsignal(signal.SIGTERM) != stopper._handle  # restored afterwards


def test_a_sigterm_to_the_whole_process_group_still_saves(demo_root, small_tensors, tmp_path):
    """A signal to the run's process group (an SSH session that drops, `kill -- -PGID`, a job
    manager) reached the data-loader workers too: they died mid-batch, the run failed on them
    ("DataLoader worker ... is killed by signal: Terminated") and kept only its last epoch
    checkpoint."""
    out = tmp_path / "group"
    argv = _cli(demo_root, small_tensors, out)
    argv[argv.index("--num-workers") + 1] = "2"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    try:
        _wait_for_step(proc)
        os.killpg(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, rest[-2000:]
    assert "killed by signal" not in rest and "Traceback" not in rest
    saved = list(out.glob("checkpoint-step-*"))
    assert len(saved) == 1 and ck.is_complete(saved[0])
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
