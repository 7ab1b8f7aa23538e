"""A process started with standard input closed (`<&-`, some nohup and ssh setups) or not a
terminal: a clear refusal, never a traceback ('NoneType' object has no attribute 'isatty')."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], stdin: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python args`` with standard input ``closed`` (fd 0 closed before exec) or a file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIDESTEP_CONFIG_DIR": str(tmp_path / "cfg"),
           "SIDESTEP_CACHE_DIR": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path)}
    if stdin == "closed":
        return subprocess.run([sys.executable, *args], stdin=None, capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path,
                              preexec_fn=lambda: os.close(0))
    with open(os.devnull) as null:
        return subprocess.run([sys.executable, *args], stdin=null, capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path)


def test_training_without_a_terminal_to_confirm_on(demo_root, small_tensors, tmp_path):
    args = ["-m", "sidestep", "--plain", "fixed", "--checkpoint-dir",
            str(demo_root / "checkpoints"), "--dataset-dir", str(small_tensors),
            "--output-dir", str(tmp_path / "run")]
    done = _run(args, "closed", tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no terminal to confirm on; pass --yes" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("stdin", ["closed", "devnull"])
def test_the_app_needs_a_terminal_for_its_keys(tmp_path, stdin):
    """Closed: a traceback; /dev/null: an app drawn where no key could reach it, until killed."""
    done = _run([str(ROOT / "sidestep_tui.py"), "--demo"], stdin, tmp_path)
    assert done.returncode == 2
    assert "standard input is not a terminal" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists()  # refused before the demo was built
