"""Where Side-Step keeps its files: config (settings, global presets), cache (demo assets)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "sidestep"


def config_dir() -> Path:
    """Per-user config folder: ``%APPDATA%\\sidestep`` on Windows, else XDG (``~/.config``).

    ``SIDESTEP_CONFIG_DIR`` overrides both (tests and portable installs use it).
    """
    override = os.environ.get("SIDESTEP_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform.startswith("win"):
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / APP
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP


def cache_dir() -> Path:
    """Per-user cache folder (``$XDG_CACHE_HOME/sidestep``, ``%LOCALAPPDATA%`` on Windows)."""
    override = os.environ.get("SIDESTEP_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP


def global_presets_dir() -> Path:
    return config_dir() / "presets"


def local_presets_dir() -> Path:
    """Project-local presets: ``./presets`` in the working directory (searched first)."""
    return Path.cwd() / "presets"


def builtin_presets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "presets"


def settings_path() -> Path:
    return config_dir() / "settings.json"


def same_place(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name one file or folder: on disk when both exist (links, ./ and
    absolute spellings), else as written, made absolute."""
    a, b = os.path.expanduser(str(a)), os.path.expanduser(str(b))
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def short(path: Path | str) -> str:
    """``path`` relative to the working directory when it is inside it (for display)."""
    p = Path(path)
    try:
        here = Path.cwd().resolve()
        rel = p.resolve().relative_to(here)
    except (ValueError, OSError):
        return str(p)
    if here == Path(here.anchor):  # from /, "./tmp/runs" only hides that the path is absolute
        return str(p)
    return "./" + str(rel) if str(rel) != "." else "."
