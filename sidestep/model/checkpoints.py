"""Finding models in a checkpoint root.

Layout (what users point ``--checkpoint-dir`` at)::

    checkpoints/
      acestep-v15-turbo/ acestep-v15-base/ ... <fine-tune>/   config.json, weights, silence_latent.pt
      vae/                      diffusers AutoencoderOobleck
      Qwen3-Embedding-0.6B/     transformers Qwen3 text encoder + tokenizer

Listing reads only ``config.json`` files; nothing heavy is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sidestep.config.variants import (OFFICIAL_FOLDERS, VariantError, family_from_config,
                                      folder_for)

VAE_FOLDER = "vae"
TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"
SILENCE_LATENT = "silence_latent.pt"


class DiscoveryError(ValueError):
    """A checkpoint root or model folder problem; the message names the path and the fix."""


@dataclass(frozen=True)
class ModelEntry:
    name: str            # folder name
    path: Path
    family: str          # turbo | base | sft
    official: bool
    is_xl: bool
    hidden_size: int | None
    num_layers: int | None
    sharded: bool
    has_weights: bool
    has_silence_latent: bool

    @property
    def label(self) -> str:
        size = "XL" if self.is_xl else "2B" if self.hidden_size == 2048 else \
            f"h{self.hidden_size}" if self.hidden_size else "?"
        kind = "official" if self.official else "fine-tune"
        return f"{self.name} ({self.family}, {size}, {kind})"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entry(folder: Path, config: dict) -> ModelEntry:
    official = folder.name in OFFICIAL_FOLDERS
    family = OFFICIAL_FOLDERS.get(folder.name) or family_from_config(config)
    return ModelEntry(
        name=folder.name, path=folder, family=family, official=official,
        is_xl="encoder_hidden_size" in config,
        hidden_size=config.get("hidden_size"), num_layers=config.get("num_hidden_layers"),
        sharded=(folder / "model.safetensors.index.json").is_file(),
        has_weights=(folder / "model.safetensors").is_file()
        or (folder / "model.safetensors.index.json").is_file(),
        has_silence_latent=(folder / SILENCE_LATENT).is_file(),
    )


def _not_a_root(root: Path) -> str:
    """A checkpoint root that is missing or a file, with the flag that sets it and the fix."""
    what = "is a file, not a folder" if root.exists() else "checkpoint folder not found"
    return (f"{root}: {what}; set --checkpoint-dir to the folder that holds "
            "acestep-v15-turbo/, vae/, ...")


def list_models(root: Path | str) -> list[ModelEntry]:
    """Official folders first, then fine-tunes (any subfolder whose config says acestep)."""
    root = Path(root)
    if not root.is_dir():
        raise DiscoveryError(_not_a_root(root))
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        config = _read_json(folder / "config.json")
        if config is None or config.get("model_type") != "acestep":
            continue
        found.append(_entry(folder, config))
    order = list(OFFICIAL_FOLDERS)
    found.sort(key=lambda e: (not e.official,
                              order.index(e.name) if e.official else 0, e.name.lower()))
    return found


def fuzzy_rank(entries: list[ModelEntry], query: str) -> list[ModelEntry]:
    """Entries matching ``query`` as a subsequence (case-insensitive), best matches first."""
    q = query.strip().lower()
    if not q:
        return list(entries)
    scored = []
    for e in entries:
        name = e.name.lower()
        pos, score, last = 0, 0, -1
        for ch in q:
            idx = name.find(ch, pos)
            if idx < 0:
                break
            score += 3 if idx == last + 1 else 1
            if idx == 0 or name[idx - 1] in "-_ ":
                score += 2
            last, pos = idx, idx + 1
        else:
            scored.append((-score, len(name), e))
    return [e for *_, e in sorted(scored, key=lambda t: (t[0], t[1], t[2].name))]


@dataclass(frozen=True)
class ResolvedModel:
    root: Path
    entry: ModelEntry
    family: str          # after --base-model

    @property
    def path(self) -> Path:
        return self.entry.path

    @property
    def is_turbo(self) -> bool:
        return self.family == "turbo"


def resolve_model(root: Path | str, variant: str, base_model: str | None = None) -> ResolvedModel:
    """The model folder for ``--model-variant`` (alias or folder name), checked."""
    root = Path(root)
    try:
        folder_name = folder_for(variant)
    except VariantError as exc:
        raise DiscoveryError(str(exc)) from None
    if not root.is_dir():
        raise DiscoveryError(_not_a_root(root))
    folder = root / folder_name
    if not folder.is_dir():
        names = [e.name for e in list_models(root)]
        hint = f" Available: {', '.join(names)}." if names else \
            " No ACE-Step model folders were found there."
        raise DiscoveryError(f"{folder}: model folder not found for --model-variant "
                             f"{variant!r}.{hint}")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise DiscoveryError(f"{cfg_path}: missing; a model folder needs config.json")
    config = _read_json(cfg_path)
    if config is None:
        raise DiscoveryError(f"{cfg_path}: not a readable JSON object")
    if config.get("model_type") != "acestep":
        raise DiscoveryError(f"{cfg_path}: model_type is {config.get('model_type')!r}, not "
                             "'acestep'; pick an ACE-Step 1.5 DiT folder")
    entry = _entry(folder, config)
    if not entry.has_weights:
        raise DiscoveryError(f"{folder}: no model.safetensors (or sharded index) found")
    family = base_model or entry.family
    return ResolvedModel(root=root, entry=entry, family=family)


def vae_dir(root: Path | str) -> Path:
    path = Path(root) / VAE_FOLDER
    if not (path / "config.json").is_file():
        raise DiscoveryError(f"{path}: the VAE folder (diffusers AutoencoderOobleck with "
                             "config.json) is missing from the checkpoint root")
    return path


def text_encoder_dir(root: Path | str) -> Path:
    path = Path(root) / TEXT_ENCODER_FOLDER
    if not (path / "config.json").is_file():
        raise DiscoveryError(f"{path}: the text encoder folder (Qwen3-Embedding-0.6B with its "
                             "tokenizer) is missing from the checkpoint root")
    return path


def load_silence_latent(model_dir: Path | str):
    """``silence_latent.pt`` as [1, T, C] (stored channel-first as [1, C, T])."""
    import torch

    path = Path(model_dir) / SILENCE_LATENT
    if not path.is_file():
        raise DiscoveryError(f"{path}: missing; every ACE-Step model folder ships "
                             "silence_latent.pt")
    try:
        latent = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise DiscoveryError(f"{path}: cannot be loaded safely ({type(exc).__name__}: {exc})"
                             ) from None
    if not isinstance(latent, torch.Tensor) or latent.dim() != 3 or latent.shape[0] != 1:
        raise DiscoveryError(f"{path}: expected a [1, channels, frames] tensor, got "
                             f"{getattr(latent, 'shape', type(latent).__name__)}")
    return latent.float().transpose(1, 2).contiguous()
