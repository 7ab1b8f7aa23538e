"""Model variant names: aliases, official folders, and which family (turbo or base/sft) a model is.

The family decides per-variant defaults (shift, inference steps, CFG dropout). Kept free of torch so
the CLI can resolve a config without loading anything.
"""

from __future__ import annotations

import json
from pathlib import Path

# Official folder names under a checkpoint root, and the family each belongs to.
OFFICIAL_FOLDERS: dict[str, str] = {
    "acestep-v15-turbo": "turbo",
    "acestep-v15-base": "base",
    "acestep-v15-sft": "sft",
    "acestep-v15-xl-turbo": "turbo",
    "acestep-v15-xl-base": "base",
    "acestep-v15-xl-sft": "sft",
}

# Short names users type for ``--model-variant``.
ALIASES: dict[str, str] = {
    "turbo": "acestep-v15-turbo",
    "base": "acestep-v15-base",
    "sft": "acestep-v15-sft",
    "xl-turbo": "acestep-v15-xl-turbo",
    "xl-base": "acestep-v15-xl-base",
    "xl-sft": "acestep-v15-xl-sft",
    "xl_turbo": "acestep-v15-xl-turbo",
    "xl_base": "acestep-v15-xl-base",
    "xl_sft": "acestep-v15-xl-sft",
}

FAMILIES = ("turbo", "base", "sft")


class VariantError(ValueError):
    """A model variant name that cannot name a folder under the checkpoint root."""


def check_variant_name(variant: str) -> None:
    """Reject names that would leave the checkpoint root (path traversal, absolute paths)."""
    if not variant or not variant.strip():
        raise VariantError("model variant is empty")
    if variant in (".", "..") or ".." in Path(variant).parts or variant.startswith(("/", "\\")):
        raise VariantError(f"model variant {variant!r} must be a folder name inside the "
                           "checkpoint root, not a path")
    if "/" in variant or "\\" in variant or ":" in variant:
        raise VariantError(f"model variant {variant!r} must be a single folder name "
                           "(no slashes); put the folder under --checkpoint-dir")


def folder_for(variant: str) -> str:
    """Folder name under the checkpoint root for a variant alias or folder name."""
    check_variant_name(variant)
    return ALIASES.get(variant.lower(), variant)


def official_family(variant: str) -> str | None:
    """Family of an official model named by alias or folder; None for anything else."""
    folder = ALIASES.get(variant.lower(), variant)
    return OFFICIAL_FOLDERS.get(folder)


def family_from_config(config: dict) -> str:
    """Family from a model ``config.json``: ``is_turbo`` wins, then ``model_version``."""
    if config.get("is_turbo") is True:
        return "turbo"
    version = str(config.get("model_version") or "").lower()
    if "turbo" in version:
        return "turbo"
    if "sft" in version:
        return "sft"
    return "base"


def detect_family(variant: str, base_model: str | None = None,
                  checkpoint_dir: str | None = None) -> tuple[str | None, str]:
    """(family, how it was found). Reads at most one small ``config.json``; never fails.

    Order: an explicit ``--base-model``, an official name, the folder's ``config.json``.
    """
    if base_model:
        return base_model, "--base-model"
    try:
        fam = official_family(variant)
    except VariantError:
        return None, "invalid name"
    if fam:
        return fam, "official model name"
    if checkpoint_dir:
        try:
            cfg_path = Path(checkpoint_dir) / folder_for(variant) / "config.json"
            if cfg_path.is_file():
                return family_from_config(json.loads(cfg_path.read_text())), "config.json"
        except (OSError, ValueError, VariantError):
            pass
    return None, "unknown"
