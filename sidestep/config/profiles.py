"""VRAM profiles as presets: ``--vram-profile 8gb|12gb|16gb|24gb|auto`` and the form's selector.

A profile is one of the ``vram_*`` built-in presets; ``auto`` picks it from the detected card.
Precedence when resolving: defaults < profile < ``--preset`` < explicit values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from sidestep.config.vram import GIB_MIB, PROFILES, pick_profile, profile_preset

PROFILE_CHOICES = ("auto", *PROFILES, "none")


def detect_gpus() -> list[dict]:
    from sidestep.telemetry.nvml import detect_vram

    return detect_vram()


def resolve_profile(name: str | None, detect: Callable[[], list[dict]] | None = None
                    ) -> tuple[str | None, str | None]:
    """(preset name or None, note to show). ``none``/empty means no profile."""
    if not name or name == "none":
        return None, None
    if name == "auto":
        gpus = (detect or detect_gpus)()
        if not gpus:
            return None, "no GPU detected: the auto VRAM profile was not applied"
        gpu = gpus[0]
        tier = pick_profile(gpu["total_mib"])
        return profile_preset(tier), (f"auto VRAM profile {tier} for {gpu.get('name') or 'GPU'}"
                                      f" ({gpu['total_mib'] / GIB_MIB:.0f} GiB)")
    return profile_preset(name), None


def profile_values(name: str | None, detect=None) -> tuple[dict[str, Any], str | None]:
    """The preset values a profile contributes, and a note."""
    from sidestep.config.presets import PresetStore

    preset, note = resolve_profile(name, detect)
    if preset is None:
        return {}, note
    return dict(PresetStore().load(preset).values), note


def model_config_dict(checkpoint_dir: str | None, variant: str | None) -> dict | None:
    """The model's config.json as a dict (for estimates), read without torch; None if absent."""
    from sidestep.config.variants import VariantError, folder_for

    if not checkpoint_dir or not variant:
        return None
    try:
        path = Path(checkpoint_dir).expanduser() / folder_for(variant) / "config.json"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, VariantError):
        return None
    return data if isinstance(data, dict) and data.get("model_type") == "acestep" else None
