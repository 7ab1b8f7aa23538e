"""A headless run whose terminal or pipe goes away (a dropped SSH session, ``| tee`` closing)
stops and saves a complete checkpoint instead of dying with the write that failed."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from sidestep.engine.checkpointing import list_checkpoints

SIDESTEP = Path(sys.executable).parent / "sidestep"


def _train_argv(demo_root, tensors, out, *extra):
    return [str(SIDESTEP), *extra, "-y", "fixed", "--checkpoint-dir",
            str(demo_root / "checkpoints"), "--dataset-dir", str(tensors), "--output-dir",
            str(out), "--epochs", "500", "--device", "cpu", "--log-every", "1",
            "--warmup-steps", "1", "--num-workers", "1", "--rank", "4", "--alpha", "8"]


def _stepped(out: Path) -> bool:
    try:
        return '"type": "step"' in (out / "events.jsonl").read_text()
    except OSError:
        return False


def _wait_for(predicate, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended early with {proc.returncode}")
        time.sleep(0.2)
    pytest.fail("the run never took a step")


def _assert_stopped_and_saved(out: Path) -> None:
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped", info.get("error")
    saved = list_checkpoints(out)
    assert saved, "no complete checkpoint"
    assert (saved[-1] / "COMPLETE").is_file()
    log = (out / "sidestep.log").read_text()
    assert "Traceback" not in log
    assert "stopping and saving a checkpoint" in log


def _controlling_tty() -> None:  # runs in the child after setsid: the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.slow
def test_terminal_closed_mid_run_stops_and_saves(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    master, slave = os.openpty()
    proc = subprocess.Popen(_train_argv(demo_root, small_tensors, out), stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=_controlling_tty, cwd=tmp_path)
    os.close(slave)
    screen = bytearray()
    stop_reading = threading.Event()

    def drain() -> None:  # a terminal that is not read blocks the writer
        while not stop_reading.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        _wait_for(lambda: _stepped(out), 180, proc)
        stop_reading.set()
        reader.join()
        os.close(master)  # the terminal is gone: SIGHUP, and every later write fails
        master = None
        os.kill(proc.pid, signal.SIGHUP)  # `uv run` forwards its own copy of the hang-up
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        if master is not None:
            os.close(master)
    assert b"Traceback" not in screen
    _assert_stopped_and_saved(out)
    assert "SIGHUP received" in (out / "sidestep.log").read_text()


@pytest.mark.slow
def test_stdout_pipe_closed_mid_run_stops_and_saves(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(_train_argv(demo_root, small_tensors, out, "--plain"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err_file, cwd=tmp_path)
    try:
        for line in proc.stdout:  # read like `| head` would, then go away
            if line.startswith(b"step "):
                break
        proc.stdout.close()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.read_text()
    assert "Traceback" not in stderr and "error:" not in stderr, stderr
    _assert_stopped_and_saved(out)
    assert "output closed (stdout went away" in (out / "sidestep.log").read_text()
    # the last word, with stdout gone, where it can still be read (it was dropped: the pipe
    # showed the table and a few steps, then nothing said why the run ended or how to go on)
    (saved,) = out.glob("checkpoint-step-*")
    assert "(stdout went away: Broken pipe); resume with: " in stderr, stderr
    assert stderr.rstrip().endswith(f"--resume-from {saved}"), stderr


@pytest.mark.parametrize("argv", [["presets", "view", "recommended"], ["--help"],
                                  ["presets", "list"]])
def test_output_into_a_closed_pipe_is_dropped_quietly(argv, tmp_path):
    """`sidestep presets view X | head -1`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(tmp_path / "stderr.txt", "wb") as err:
        code = subprocess.run([str(SIDESTEP), *argv], stdout=write_end, stderr=err,
                              stdin=subprocess.DEVNULL, cwd=tmp_path, timeout=60).returncode
    os.close(write_end)
    assert code == 0
    assert (tmp_path / "stderr.txt").read_text() == ""


@pytest.mark.parametrize("closed", [1, 2])
def test_a_command_started_with_its_output_closed_runs_quietly(closed, tmp_path):
    """`sidestep runs >&-`: Python starts with sys.stdout None, and every command ended in
    an AttributeError traceback (exit 1) when it asked whether stdout was a terminal."""
    script = f"{SIDESTEP} presets list {'>&-' if closed == 1 else '2>&-'}; echo rc=$? >&{3 - closed}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, timeout=120)
    shown = done.stdout + done.stderr
    assert "rc=0" in shown and "Traceback" not in shown, shown
