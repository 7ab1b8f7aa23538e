"""The real app under a pseudo-terminal: a hang-up (the terminal closed, e.g. a killed tmux
session or a dropped SSH connection) or SIGTERM during a run saves a checkpoint and exits."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The child takes the pty as its controlling terminal, then starts the app as `sidestep-tui
# --demo` does, with enough epochs that the run is still going when the test ends it.
CHILD = """
import fcntl, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
from sidestep.tui.app import SideStepApp
new_training = SideStepApp.action_new_training
def long_run(self, mode="fixed", explicit=None, preset=None):
    new_training(self, mode, {**(explicit or {}), "epochs": 500}, preset)
SideStepApp.action_new_training = long_run
from sidestep.launch import main
sys.exit(main(["--demo"]))
"""


class PtyApp:
    """The app in a new session whose controlling terminal is a pty we hold the master of."""

    def __init__(self, cache: Path, config: Path, cwd: Path):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 32, 100, 0, 0))
        env = {**os.environ, "SIDESTEP_CACHE_DIR": str(cache),
               "SIDESTEP_CONFIG_DIR": str(config), "TERM": "xterm-256color",
               "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, env=env, start_new_session=True)
        os.close(slave)
        self.output = bytearray()
        self._stop = threading.Event()
        # Keep draining the screen output: a full pty buffer would block the app's writes.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.output += data

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def hang_up(self) -> None:
        """Close the master side: the kernel hangs up the terminal and sends SIGHUP."""
        self._stop.set()
        self._reader.join(5)
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.master >= 0:
            self.hang_up()


def _demo_run_dir(cache: Path) -> Path | None:
    runs = sorted((cache / "demo" / "runs").glob("demo-*"))
    return runs[-1] if runs else None


def _stepped(run_dir: Path | None) -> bool:
    if run_dir is None or not (run_dir / "events.jsonl").exists():
        return False
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        try:
            if json.loads(line).get("type") == "step":
                return True
        except ValueError:
            pass
    return False


def _start_run(app: PtyApp, cache: Path, timeout: float = 240) -> Path:
    """Wait for the demo form, start it with ctrl+s, wait for the first optimizer step."""
    deadline = time.monotonic() + timeout
    while b"ready" not in app.output and time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output[-3000:]
        time.sleep(0.3)
    time.sleep(1.0)
    while _demo_run_dir(cache) is None and time.monotonic() < deadline:
        app.send(b"\x13")  # ctrl+s
        time.sleep(2.0)
    while not _stepped(_demo_run_dir(cache)) and time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output[-3000:]
        time.sleep(0.3)
    run_dir = _demo_run_dir(cache)
    assert _stepped(run_dir), app.output[-3000:]
    return run_dir


def _assert_saved(run_dir: Path) -> None:
    assert list(run_dir.glob("checkpoint-*/COMPLETE")), sorted(os.listdir(run_dir))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def pty_app(demo_root, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(demo_root, cache / "demo", ignore=shutil.ignore_patterns("runs"))
    app = PtyApp(cache, tmp_path / "config", tmp_path)
    yield app, cache
    app.close()


@pytest.mark.slow
def test_hangup_during_a_run_saves_and_exits(pty_app):
    app, cache = pty_app
    run_dir = _start_run(app, cache)
    app.hang_up()
    started = time.monotonic()
    code = _wait(app.proc, 10)
    assert code is not None, "the app did not exit within 10 s of the hang-up"
    assert time.monotonic() - started < 10
    assert code == 130
    _assert_saved(run_dir)


@pytest.mark.slow
def test_sigterm_during_a_run_saves_and_exits(pty_app):
    app, cache = pty_app
    run_dir = _start_run(app, cache)
    app.proc.send_signal(signal.SIGTERM)
    code = _wait(app.proc, 10)
    assert code is not None, app.output[-3000:]
    assert code == 130
    _assert_saved(run_dir)
    # the terminal is left usable: out of the alternate screen, cursor shown
    time.sleep(0.3)
    assert b"\x1b[?1049l" in app.output
    # ... and says, after the app's screen, how the run ended and where it resumes
    after = app.output.split(b"\x1b[?1049l")[-1].decode(errors="replace")
    saved = json.loads((run_dir / "run.json").read_text())["checkpoint_path"]
    assert f"{run_dir.name}: stopped at step" in after, after
    assert f"resume with: sidestep fixed --resume-from {saved}" in after, after
