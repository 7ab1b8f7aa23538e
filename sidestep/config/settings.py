"""User settings (``settings.json`` in the config folder): default folders and UI preferences.

Writes are atomic. A file that cannot be read as settings is kept as ``settings.json.bak`` and the
defaults are used, with a warning for the caller to show.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidestep.config import atomic, paths

THEMES = ("sidestep-dark", "sidestep-light", "textual-dark", "textual-light", "nord",
          "gruvbox", "monokai")
# How the app tells you a run it shows has ended or needs you: the terminal bell, a desktop
# notification (OSC 9 and 777 escapes, which the terminal turns into one), both, or neither.
NOTIFY_CHOICES = ("off", "bell", "desktop", "both")


@dataclass(frozen=True)
class Settings:
    checkpoint_dir: str = "./checkpoints"
    output_root: str = "./output"
    dataset_root: str = ""
    theme: str = "sidestep-dark"
    refresh_hz: float = 1.0          # how often the monitor redraws its text
    gpu_poll_seconds: float = 1.0    # NVML sampling period
    form_mode: str = "basic"         # training form opens in basic or advanced mode
    confirm_quit: bool = False     # ask even when no run is active
    keep_running: bool = False     # the form's "Keep running after I quit" starts checked
    notify: str = "desktop"        # when a run ends or needs you (NOTIFY_CHOICES)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _number(low: float, high: float):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


def _folder(optional: bool):
    """A folder path (created when needed), never a file that exists."""
    return lambda v: isinstance(v, str) and (optional or v.strip() != "") and \
        not os.path.isfile(os.path.expanduser(v.strip()))


# What each setting is called where people edit it (the app's Settings screen, its errors).
LABELS = {
    "checkpoint_dir": "Default checkpoint folder",
    "output_root": "Output root (new runs go here; History looks here)",
    "dataset_root": "Dataset root (optional)",
    "theme": "Theme",
    "refresh_hz": "Monitor refresh rate (per second)",
    "gpu_poll_seconds": "GPU sampling period (seconds)",
    "form_mode": "Training form opens in",
    "confirm_quit": "Ask before quitting when idle (a run always asks)",
    "keep_running": "New runs keep running after I quit (form default)",
    "notify": "When a run ends or needs you, tell me by",
}

# Each setting's check and, for the error, what it allows.
_CHECKS = {
    "checkpoint_dir": (_folder(True), "a folder path, not a file"),
    "output_root": (_folder(False), "a folder path (not a file)"),
    "dataset_root": (_folder(True), "a folder path, not a file, or empty"),
    "theme": (lambda v: isinstance(v, str) and v in THEMES, f"one of {', '.join(THEMES)}"),
    "refresh_hz": (_number(0.5, 30), "a number from 0.5 to 30 (redraws a second)"),
    "gpu_poll_seconds": (_number(0.2, 60), "a number of seconds from 0.2 to 60"),
    "form_mode": (lambda v: v in ("basic", "advanced"), "basic or advanced"),
    "confirm_quit": (lambda v: isinstance(v, bool), "true or false"),
    "keep_running": (lambda v: isinstance(v, bool), "true or false"),
    "notify": (lambda v: v in NOTIFY_CHOICES, f"one of {', '.join(NOTIFY_CHOICES)}"),
}


class SettingsError(ValueError):
    pass


def validate(values: dict[str, Any]) -> None:
    """Raise ``SettingsError`` naming the first invalid setting by its label."""
    for key, value in values.items():
        check = _CHECKS.get(key)
        if check is None:
            raise SettingsError(f"'{key}' is not a setting")
        if not check[0](value):
            raise SettingsError(f"{label_of(key)} must be {check[1]}; got {value!r}")


def label_of(key: str) -> str:
    return LABELS.get(key, key).split(" (")[0]


class SettingsStore:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else paths.settings_path()

    def load(self) -> tuple[Settings, list[str]]:
        """(settings, warnings). Never raises for a bad file: it is set aside as ``.bak``."""
        if not self.path.exists():
            return Settings(), []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            backup = self._set_aside()
            return Settings(), [f"{self.path} could not be read ({exc}); it was kept as "
                                f"{backup} and defaults are used"]
        warnings: list[str] = []
        kept: dict[str, Any] = {}
        for key, value in data.items():
            check = _CHECKS.get(key)
            if check is None:
                continue  # a newer version's setting: leave it alone on disk, ignore here
            if check[0](value):
                kept[key] = value
            else:
                warnings.append(f"{self.path}: '{key}' must be {check[1]}, not {value!r}; "
                                "the default is used")
        return Settings(**kept), warnings

    def save(self, settings: Settings) -> None:
        data = dataclasses.asdict(settings)
        validate(data)
        # Keep keys this version does not know (written by a newer Side-Step).
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(old, dict):
                    for key, value in old.items():
                        data.setdefault(key, value)
            except (OSError, UnicodeDecodeError, ValueError):
                pass
        atomic.write_json(self.path, data)

    def update(self, **changes: Any) -> Settings:
        validate(changes)
        current, _ = self.load()
        new = current.replace(**changes)
        self.save(new)
        return new

    def _set_aside(self) -> Path:
        backup = self.path.with_name(self.path.name + ".bak")
        try:
            self.path.replace(backup)
        except OSError:
            pass
        return backup
