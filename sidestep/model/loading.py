"""Loading an ACE-Step model folder: ``config.json`` + ``model.safetensors`` (or shards).

The model is built on the meta device and the stored tensors are assigned into it, converted to
the requested dtype one at a time, so peak memory is one copy of the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch

from sidestep.model.acestep import PARTS, AceStepModel, build_acestep
from sidestep.model.config import AceStepConfig, ModelConfigError

# Parts of the upstream checkpoint that training and preprocessing never run.
SKIPPED_PREFIXES = ("tokenizer.", "detokenizer.")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A model folder that cannot be loaded; the message names the folder, file or key."""


def read_model_config(model_dir: Path | str) -> AceStepConfig:
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: model folder not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (every model folder needs its config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None
    try:
        return AceStepConfig.from_dict(data, origin=str(path))
    except ModelConfigError as exc:
        raise CheckpointError(str(exc)) from None


def weight_files(model_dir: Path) -> dict[str, list[str]]:
    """File name -> keys it holds (keys listed for sharded checkpoints, empty for single)."""
    index = model_dir / INDEX_FILE
    single = model_dir / SINGLE_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        files: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            files.setdefault(fname, []).append(key)
        for fname in files:
            if not (model_dir / fname).is_file():
                raise CheckpointError(f"{model_dir / fname}: shard listed in {INDEX_FILE} is "
                                      "missing (download incomplete?)")
        return files
    if single.is_file():
        return {SINGLE_FILE: []}
    raise CheckpointError(f"{model_dir}: no weights found (expected {SINGLE_FILE} or "
                          f"{INDEX_FILE} with its shards)")


def iter_tensors(model_dir: Path, keep=lambda key: True) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(file, key, tensor) for every stored tensor ``keep`` accepts, read lazily."""
    from safetensors import SafetensorError, safe_open

    for fname in weight_files(model_dir):
        path = model_dir / fname
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for key in fh.keys():
                    if keep(key):
                        yield fname, key, fh.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot be read: the file is truncated or corrupt "
                                  f"({exc}). Download it again.") from None


def load_acestep(model_dir: Path | str, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, parts: tuple[str, ...] = PARTS
                 ) -> AceStepModel:
    """Load a model folder strictly: every expected key present with the expected shape.

    ``parts`` picks what is built and read: training passes ``("decoder",
    "null_condition_emb")`` so the condition encoder never takes memory; preprocessing passes
    ``("encoder",)``.
    """
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    model = build_acestep(config, device="meta", parts=parts)
    expected = dict(model.state_dict())
    prefixes = tuple(p + "." if p != "null_condition_emb" else p for p in model.parts)
    ignored = SKIPPED_PREFIXES + tuple(p + "." if p != "null_condition_emb" else p
                                       for p in PARTS if p not in model.parts)

    loaded: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for fname, key, tensor in iter_tensors(model_dir, keep=lambda k: not k.startswith(ignored)):
        if key not in expected:
            unexpected.append(f"{key} ({fname})")
            continue
        want = tuple(expected[key].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{model_dir / fname}: '{key}' has shape {tuple(tensor.shape)} but config.json "
                f"describes {want}. The weights and config.json do not belong together "
                "(for example an XL checkpoint with a 2B config).")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{model_dir / fname}: '{key}' is {tensor.dtype}, not a "
                                  "floating-point tensor")
        loaded[key] = tensor.to(device=device, dtype=dtype)
    if unexpected:
        raise CheckpointError(f"{model_dir}: {len(unexpected)} unexpected tensor(s), e.g. "
                              f"{', '.join(unexpected[:3])}; this is not an ACE-Step 1.5 "
                              "checkpoint of this architecture")
    missing = [k for k in expected if k.startswith(prefixes) and k not in loaded]
    if missing:
        raise CheckpointError(f"{model_dir}: {len(missing)} tensor(s) missing from the weights, "
                              f"e.g. {', '.join(missing[:3])}")
    model.load_state_dict(loaded, strict=True, assign=True)
    model.reset_nonpersistent_buffers(device)
    return model
