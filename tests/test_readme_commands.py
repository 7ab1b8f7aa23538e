"""Every command README.md shows, run as a real process on demo data (issue #12).

The README flow is chained as a user would run it: make-demo, then build-dataset on its songs,
preprocess into ./tensors and train on them. Paths are the README's own relative ones, from a
scratch working folder. ``sidestep-tui --demo`` itself is covered by the terminal tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts
SIDESTEP = str(BIN / "sidestep")
SIDESTEP_TUI = str(BIN / "sidestep-tui")

# Each README command this module runs: (program, first word after it).
COVERED = {
    ("sidestep-tui", "--help"), ("sidestep-tui", "--demo"), ("sidestep-tui", ""),
    ("sidestep", "--help"), ("sidestep", "build-dataset"), ("sidestep", "preprocess"),
    ("sidestep", "check-dataset"),
    ("sidestep", "fixed"), ("sidestep", "make-demo"), ("sidestep", "gpu"),
    ("sidestep", "vram-estimate"), ("sidestep", "presets"),
}


def readme_commands() -> set[tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = set()
    for m in re.finditer(r"uv run (sidestep(?:-tui)?)\b[ \t]*([^\s`]*)", text):
        found.add((m.group(1), m.group(2)))
    return found


def test_every_readme_command_is_covered():
    # a command added to the README must get a test here
    assert readme_commands() <= COVERED, readme_commands() - COVERED


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The working folder: ./demo (from `sidestep make-demo`), ./checkpoints and ./songs."""
    root = tmp_path_factory.mktemp("readme")
    (root / "config").mkdir()
    env = dict(os.environ, SIDESTEP_CONFIG_DIR=str(root / "config"),
               SIDESTEP_CACHE_DIR=str(root / "cache"), XDG_CACHE_HOME=str(root / "cache"))
    run = Runner(root, env)
    run(SIDESTEP, "--plain", "make-demo", "demo", "--clips", "1")
    assert (root / "demo" / "tensors" / "manifest.json").is_file()
    os.symlink(root / "demo" / "checkpoints", root / "checkpoints")
    songs = root / "songs"
    songs.mkdir()
    for f in (root / "demo" / "audio").glob("clip_*"):
        shutil.copy(f, songs / f.name)
    return run


class Runner:
    def __init__(self, cwd: Path, env: dict):
        self.cwd, self.env = cwd, env

    def __call__(self, *argv: str, expect: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        shown = " ".join(Path(a).name if a in (SIDESTEP, SIDESTEP_TUI) else a for a in argv)
        assert proc.returncode == expect, f"{shown}: exit {proc.returncode}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"{shown}:\n{proc.stderr}"
        return proc


TRAIN = ["--checkpoint-dir", "./checkpoints", "--model-variant", "turbo",
         "--dataset-dir", "./tensors", "--output-dir", "./output/my_lora"]


def test_songs_to_adapter(ws):
    report = ws(SIDESTEP, "--plain", "check-dataset", "./songs").stdout
    assert "usable" in report and "too_short" in report  # the demo's clips are 1.6 s
    ws(SIDESTEP, "--plain", "build-dataset", "-i", "./songs", "--tag", "my-style",
       "--output", "./songs/dataset.json")
    doc = json.loads((ws.cwd / "songs" / "dataset.json").read_text())
    assert doc["samples"][0]["custom_tag"] == "my-style"
    ws(SIDESTEP, "--plain", "preprocess", "--checkpoint-dir", "./checkpoints",
       "--audio-dir", "./songs", "--dataset-json", "./songs/dataset.json",
       "--tensor-output", "./tensors", "--normalize", "lufs")
    assert list((ws.cwd / "tensors").glob("*.pt"))
    ws(SIDESTEP, "--plain", "--yes", "fixed", *TRAIN, "--vram-profile", "auto",
       "--epochs", "1")
    assert (ws.cwd / "output" / "my_lora" / "final" / "adapter").is_dir()


def test_print_config(ws):
    for extra in (["--preset", "recommended"], []):
        proc = ws(SIDESTEP, "fixed", *TRAIN, *extra, "--print-config")
        assert json.loads(proc.stdout)


def test_help(ws):
    assert ws(SIDESTEP, "--help").stdout.startswith("usage: sidestep")
    assert "--demo" in ws(SIDESTEP_TUI, "--help").stdout
    assert "--demo" in ws(sys.executable, str(REPO / "sidestep_tui.py"), "--help").stdout


def test_presets(ws):
    ws(SIDESTEP, "--plain", "presets", "save", "mine", "--rank", "8",
       "--description", "my preset")
    assert "mine" in ws(SIDESTEP, "--plain", "presets", "list").stdout
    ws(SIDESTEP, "--plain", "presets", "view", "mine")
    ws(SIDESTEP, "--plain", "presets", "export", "mine", "./mine.json")
    ws(SIDESTEP, "--plain", "presets", "delete", "mine")
    ws(SIDESTEP, "--plain", "presets", "import", "./mine.json")
    assert "8" in ws(SIDESTEP, "--plain", "presets", "view", "mine").stdout


def test_gpu_and_vram(ws):
    ws(SIDESTEP, "--plain", "gpu")
    ws(SIDESTEP, "--plain", "vram-estimate", "--checkpoint-dir", "./checkpoints",
       "--preset", "vram_12gb")
    proc = ws(SIDESTEP, "vram-estimate", "--checkpoint-dir", "./checkpoints",
              "--preset", "vram_12gb", "--json")
    assert json.loads(proc.stdout)["peak_mib"] > 0
