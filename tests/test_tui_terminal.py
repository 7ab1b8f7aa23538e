"""The real app in a pseudo-terminal (tmux): start the demo with keys, watch it finish."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def _wait_for(session: str, needle: str, timeout: float, seen: list[str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _pane(session)
        seen.append(text)
        if needle in text:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_demo_runs_to_completion_in_a_terminal(demo_root, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(demo_root, cache / "demo", ignore=shutil.ignore_patterns("runs"))
    session = f"sidestep-test-{os.getpid()}"
    env = {"SIDESTEP_CACHE_DIR": str(cache), "SIDESTEP_CONFIG_DIR": str(tmp_path / "config"),
           "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    # Textual draws on stderr, so nothing is redirected: a traceback would land on the pane.
    command = (f"cd {tmp_path} && env {exports} {sys.executable} {ROOT / 'sidestep_tui.py'} "
               f"--demo; echo SIDESTEP-EXIT=$?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "32",
                    command], check=True)
    seen: list[str] = []
    try:
        assert _wait_for(session, "✓ ready", 240, seen), seen[-1]
        subprocess.run(["tmux", "send-keys", "-t", session, "C-s"], check=True)
        assert _wait_for(session, "run completed", 300, seen), seen[-1]
        assert _wait_for(session, "step 30/30", 30, seen), seen[-1]
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        assert _wait_for(session, "SIDESTEP-EXIT=0", 60, seen), seen[-1]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert not any("Traceback" in screen for screen in seen)
    runs = list((cache / "demo" / "runs").glob("*/final/adapter/adapter_model.safetensors"))
    assert len(runs) == 1
