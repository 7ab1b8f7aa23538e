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
