"""Shared fixtures. Every test gets its own config and cache folders, so nothing a test does
touches the user's real settings or presets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("SIDESTEP_CACHE_DIR", str(home / "cache"))
    yield


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run with the working directory in a fresh folder (local presets live in ./presets)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The full demo tree (tiny checkpoints, 12 clips, tensors), made once per test session."""
    from sidestep.model.fixtures import make_demo

    return make_demo(tmp_path_factory.mktemp("demo"), seed=0, clips=12)
