"""Shared fixtures. Every test gets its own config and cache folders, so nothing a test does
touches the user's real settings or presets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores: one intra-op thread each (set before torch is imported;
    # the processes tests start inherit it). Tests of the thread policy unset it themselves.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("SIDESTEP_CACHE_DIR", str(home / "cache"))
    # `uv run pytest`: the commands the tool prints would start with "uv run" (resume_command)
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)
    # ... and a full path to the script when the venv is not on PATH (pytest run as
    # .venv/bin/pytest): the tests expect plain `sidestep`
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable),
                                                os.environ.get("PATH", "")]))
    yield


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run with the working directory in a fresh folder (local presets live in ./presets)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The full demo tree (tiny checkpoints, 12 clips, tensors), made once per test session."""
    from sidestep.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("demo"), seed=0, clips=12)


@pytest.fixture(scope="session")
def small_tensors(demo_root, tmp_path_factory):
    """Six of the demo's tensor files (no manifest): quick training runs."""
    import shutil

    folder = tmp_path_factory.mktemp("small_tensors")
    for path in sorted((demo_root / "tensors").glob("*.pt"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def train_config(demo_root, dataset, out, mode="fixed", **overrides):
    """A resolved TrainingConfig for quick CPU runs on the demo model."""
    from sidestep.config.resolve import resolve

    values = dict(checkpoint_dir=str(demo_root / "checkpoints"), dataset_dir=str(dataset),
                  output_dir=str(out), num_workers=0, epochs=2, learning_rate=1e-3,
                  warmup_steps=2, save_every=1, log_every=1, gradient_accumulation=2,
                  device="cpu")
    if overrides.get("adapter_type") == "lokr":
        values.update(lokr_linear_dim=4, lokr_linear_alpha=8)
    else:
        values.update(rank=4, alpha=8)
    values.update(overrides)
    return resolve(mode, values).config


def tree_hash(root: Path) -> str:
    """One hash of a folder's names and bytes: a refused command must leave it the same."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def trained_run(demo_root, dataset, out, **overrides) -> Path:
    """A finished tiny run in ``out`` (1 epoch unless told), for tests that read one."""
    from sidestep.engine.trainer import Trainer

    overrides.setdefault("epochs", 1)
    result = Trainer(train_config(demo_root, dataset, out, **overrides), [Recorder()]).run()
    assert result.status == "completed", result.error
    return out


class Recorder:
    """A sink that keeps every event (for assertions)."""

    def __init__(self):
        self.events = []

    def handle(self, event):
        self.events.append(event)

    def close(self):
        pass

    def of(self, kind):
        return [e for e in self.events if e.type == kind]


@pytest.fixture
def tui_env(tmp_path, monkeypatch, demo_root, small_tensors):
    """A working directory with ./checkpoints (the demo models), ./tensors (six songs) and
    settings pointing there, so screens show short, stable paths."""
    import json as _json

    monkeypatch.chdir(tmp_path)
    os.symlink(demo_root / "checkpoints", tmp_path / "checkpoints")
    os.symlink(small_tensors, tmp_path / "tensors")
    config_dir = Path(os.environ["SIDESTEP_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "settings.json").write_text(_json.dumps(
        {"checkpoint_dir": "./checkpoints", "output_root": "./output", "refresh_hz": 10.0}))
    monkeypatch.setenv("TZ", "UTC")
    import time as _time

    _time.tzset()
    return tmp_path


def make_app(**kw):
    from sidestep.tui.app import SideStepApp

    kw.setdefault("prewarm", False)
    kw.setdefault("install_signals", False)
    kw.setdefault("gpu_reader", lambda: [])
    return SideStepApp(**kw)


def form_built(app) -> bool:
    """A training form is the screen and all its rows are built (hidden ones come a moment
    after it shows)."""
    from sidestep.tui.screens.train_form import TrainingFormScreen

    return isinstance(app.screen, TrainingFormScreen) and app.screen.built


KEY_CHARS = {"slash": "/", "space": " ", "minus": "-", "plus": "+"}


async def burst(pilot, app, keys, timeout: float = 30.0) -> None:
    """Keys that all reach the app before it has handled the first (a slow SSH link), then a
    wait until it has handled every one: they are handed out one at a time, each after the one
    before has settled (tui/typeahead.py), which takes seconds on a loaded machine. A key is a
    name ("tab", "a") or a (name, character) pair."""
    from textual import events

    start = app.typed.serial
    for key in keys:
        name, char = key if isinstance(key, tuple) else (
            key, key if len(key) == 1 else KEY_CHARS.get(key))
        app.post_message(events.Key(name, char))
    assert await wait_until(pilot, lambda: app.typed.serial >= start + len(keys)
                            and app.typed.idle, timeout, step=0.05)


async def wait_until(pilot, predicate, timeout=240.0, step=0.2):
    import time as _time

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(step)
    return predicate()
