"""Adapter files as inference runtimes read them: where an adapter lives, which decoder Linear
each key names, the scale each module carries, and the weight change it makes.

Shared by ``export`` and ``adapter_check``; the rules and their public sources are listed in
docs/adapter-formats.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sidestep.engine.adapters import (LOHA_WEIGHTS, LOKR_WEIGHTS, LORA_CONFIG, LORA_WEIGHTS,
                                      AdapterError)

PEFT_PREFIX = "base_model.model."
LYCORIS_PREFIX = "lycoris_"
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
              "lokr_t2")

# The DiT decoder's Linear modules (checked against reference/acestep/real_keys_turbo.json and
# sidestep.model.decoder): per layer attention and MLP projections, plus five outside layers.
_LAYER_TAILS = [f"{side}.{p}_proj" for side in ("self_attn", "cross_attn") for p in "qkvo"] + \
    [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
_OTHER = [f"{t}.{n}" for t in ("time_embed", "time_embed_r")
          for n in ("linear_1", "linear_2", "time_proj")] + ["condition_embedder"]
_FLAT_TAIL = {t.replace(".", "_"): t for t in _LAYER_TAILS}
_FLAT_OTHER = {t.replace(".", "_"): t for t in _OTHER}
_STANDARD = re.compile(r"layers\.\d+\.(" + "|".join(re.escape(t) for t in _LAYER_TAILS) + ")|" +
                       "|".join(re.escape(t) for t in _OTHER))


class Decoder:
    """The decoder's Linear modules: exact names and (out, in) shapes when the model is known,
    else the standard ACE-Step 1.5 naming (any layer count, shapes not checked)."""

    def __init__(self, shapes: dict[str, tuple[int, int]] | None, origin: str):
        self.shapes = shapes
        self.origin = origin
        self._flat = {n.replace(".", "_"): n for n in shapes} if shapes else {}

    @classmethod
    def standard(cls) -> "Decoder":
        return cls(None, "standard ACE-Step 1.5 decoder naming (shapes not checked)")

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> "Decoder":
        """Built on the meta device from the model's config.json: no weights are read."""
        from sidestep.model.config import AceStepConfig
        from sidestep.model.decoder import AceStepDecoder

        path = Path(model_dir) / "config.json"
        try:
            cfg = AceStepConfig.from_dict(json.loads(path.read_text(encoding="utf-8")),
                                          str(path))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{path}: cannot read the model config ({exc})") from None
        with torch.device("meta"):
            decoder = AceStepDecoder(cfg)
        shapes = {n: (m.out_features, m.in_features) for n, m in decoder.named_modules()
                  if isinstance(m, torch.nn.Linear)}
        return cls(shapes, f"{model_dir} ({len(shapes)} decoder Linears)")

    def is_linear(self, name: str) -> bool:
        if self.shapes is not None:
            return name in self.shapes
        return _STANDARD.fullmatch(name) is not None

    def shape(self, name: str) -> tuple[int, int] | None:
        return self.shapes.get(name) if self.shapes else None

    def from_flat(self, flat: str) -> str | None:
        """``layers_0_self_attn_q_proj`` -> ``layers.0.self_attn.q_proj`` (a Linear) or None."""
        if self.shapes is not None:
            return self._flat.get(flat)
        m = re.fullmatch(r"layers_(\d+)_(.+)", flat)
        if m and m.group(2) in _FLAT_TAIL:
            return f"layers.{m.group(1)}.{_FLAT_TAIL[m.group(2)]}"
        return _FLAT_OTHER.get(flat)


def model_dir_for(adapter_dir: Path) -> Path | None:
    """The model a run trained on, from the run folder's run.json (``final/adapter`` and
    ``checkpoint-*/adapter`` both sit two levels below it)."""
    run_file = Path(adapter_dir).resolve().parent.parent / "run.json"
    try:
        data = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = data.get("model_path") if isinstance(data, dict) else None
    if isinstance(path, str) and (Path(path) / "config.json").is_file():
        return Path(path)
    return None


def adapter_dir(path: Path) -> Path:
    """The adapter folder for an adapter folder, a checkpoint folder or a run folder (its final
    adapter); raises ``AdapterError`` naming what was looked for."""
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"{path}: not found")
    if not path.is_dir():
        raise AdapterError(f"{path}: expected a folder (an adapter, a checkpoint or a run)")
    for candidate in (path, path / "adapter", path / "final" / "adapter"):
        if (candidate / LORA_WEIGHTS).is_file() or (candidate / LOKR_WEIGHTS).is_file():
            return candidate
        if (candidate / LOHA_WEIGHTS).is_file():
            raise AdapterError(f"{candidate / LOHA_WEIGHTS}: LoHA adapters cannot be exported or "
                               "checked yet; the file already holds LyCORIS' own keys")
    raise AdapterError(f"{path}: not an adapter: no {LORA_WEIGHTS} or {LOKR_WEIGHTS} in it, in "
                       "adapter/ (a checkpoint) or in final/adapter/ (a run)")


@dataclass
class Source:
    """One adapter file with what sits beside it."""

    file: Path
    folder: Path | None                  # the adapter folder when one was given
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    config: dict[str, Any] | None        # adapter_config.json next to a PEFT file
    model_dir: Path | None = None        # the model the run trained on, when known
    notes: list[str] = field(default_factory=list)

    @property
    def is_lokr(self) -> bool:
        return any(k.rsplit(".", 1)[-1] in LOKR_PARTS for k in self.tensors)


def open_source(path: Path) -> Source:
    """A folder (adapter, checkpoint, run) or a single .safetensors file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    folder = None
    if path.is_dir():
        folder = adapter_dir(path)
        name = LORA_WEIGHTS if (folder / LORA_WEIGHTS).is_file() else LOKR_WEIGHTS
        file = folder / name
    elif path.is_file():
        file = path
    else:
        raise AdapterError(f"{path}: not found")
    try:
        with safe_open(str(file), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(file))
    except (OSError, SafetensorError, ValueError) as exc:
        raise AdapterError(f"{file}: not a readable .safetensors file ({exc})") from None
    config = None
    cfg_path = file.parent / LORA_CONFIG
    if file.name == LORA_WEIGHTS and cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{cfg_path}: unreadable ({exc})") from None
    return Source(file=file, folder=folder or (file.parent if config else None),
                  tensors=tensors, metadata=metadata, config=config,
                  model_dir=model_dir_for(file.parent))


def lokr_config(metadata: dict[str, str]) -> dict[str, Any] | None:
    try:
        value = json.loads(metadata.get("lokr_config", ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- PEFT LoRA ------------------------------------------------------------------------------
def _pattern_value(patterns: dict[str, Any] | None, name: str, default: float) -> float:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the end of the module path."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return float(value)
    return float(default)


def peft_scale(config: dict[str, Any], name: str) -> tuple[float, float]:
    """(rank, scale) PEFT gives module ``name``: lora_alpha / r, per-module patterns first,
    alpha / sqrt(r) with use_rslora."""
    r = _pattern_value(config.get("rank_pattern"), name, config.get("r", 8))
    alpha = _pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", 8))
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def peft_targets(config: dict[str, Any], name: str) -> bool:
    """Whether PEFT wraps module ``name``: a string target is a full-match regex, a list
    matches the name or its ending after a dot."""
    def matches(spec) -> bool:
        if isinstance(spec, str):
            return re.fullmatch(spec, name) is not None
        return any(name == t or name.endswith("." + t) for t in spec or ())

    return matches(config.get("target_modules")) and not matches(config.get("exclude_modules"))


@dataclass
class LoraPair:
    name: str                       # decoder-relative module name
    down: torch.Tensor              # (rank, in)
    up: torch.Tensor                # (out, rank)
    scale: float                    # what the source's own runtime multiplies up @ down by

    def delta(self) -> torch.Tensor:
        return (self.up.double() @ self.down.double()) * self.scale


def peft_pairs(src: Source, decoder: Decoder) -> list[LoraPair]:
    """The modules of a PEFT LoRA folder with PEFT's scale; ``AdapterError`` for keys that are
    not LoRA A/B on a decoder Linear, a missing half or a rank mismatch."""
    if src.config is None:
        raise AdapterError(f"{src.file}: {LORA_CONFIG} is missing beside it")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.tensors.items():
        m = re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if not m or not decoder.is_linear(m.group(1)):
            raise AdapterError(f"{src.file}: '{key}' is not a LoRA weight on a decoder Linear")
        halves.setdefault(m.group(1), {})[m.group(2)] = value
    pairs = []
    for name in sorted(halves, key=_module_order):
        h = halves[name]
        if set(h) != {"A", "B"}:
            raise AdapterError(f"{src.file}: {name} has lora_{'A' if 'A' in h else 'B'} only")
        down, up = h["A"], h["B"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise AdapterError(f"{src.file}: {name}: lora_A {tuple(down.shape)} and lora_B "
                               f"{tuple(up.shape)} do not share a rank")
        _, scale = peft_scale(src.config, name)
        pairs.append(LoraPair(name, down, up, scale))
    if not pairs:
        raise AdapterError(f"{src.file}: no LoRA weights in it")
    return pairs


# -- LyCORIS LoKR ---------------------------------------------------------------------------
@dataclass
class LokrModule:
    name: str
    parts: dict[str, torch.Tensor]  # lokr_* tensors present
    alpha: float | None
    dora_scale: torch.Tensor | None = None
    scalar: torch.Tensor | None = None

    @property
    def factor_rank(self) -> int | None:
        """The rank LyCORIS divides alpha by: w2's when factorised, else w1's, else None (both
        full: LyCORIS and ComfyUI use scale 1)."""
        if "lokr_w2_b" in self.parts:
            return int(self.parts["lokr_w2_b"].shape[0])
        if "lokr_w1_b" in self.parts:
            return int(self.parts["lokr_w1_b"].shape[0])
        return None

    def w1(self) -> torch.Tensor:
        if "lokr_w1" in self.parts:
            return self.parts["lokr_w1"].double()
        return self.parts["lokr_w1_a"].double() @ self.parts["lokr_w1_b"].double()

    def w2(self) -> torch.Tensor:
        if "lokr_w2" in self.parts:
            return self.parts["lokr_w2"].double()
        return self.parts["lokr_w2_a"].double() @ self.parts["lokr_w2_b"].double()

    def scale(self) -> float:
        """LyCORIS: alpha / rank on the Kronecker product; 1 when both halves are full."""
        rank = self.factor_rank
        if rank is None or self.alpha is None:
            return 1.0
        return self.alpha / rank

    def delta(self) -> torch.Tensor:
        mult = float(self.scalar) if self.scalar is not None else 1.0
        return torch.kron(self.w1(), self.w2()) * self.scale() * mult


def lokr_modules(src: Source, decoder: Decoder) -> list[LokrModule]:
    """The modules of a LyCORIS LoKR file; ``AdapterError`` for keys that do not name a decoder
    Linear or a module without both Kronecker halves."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.tensors.items():
        prefix, _, part = key.rpartition(".")
        name = decoder.from_flat(prefix[len(LYCORIS_PREFIX):]) \
            if prefix.startswith(LYCORIS_PREFIX) else None
        if name is None or part not in (*LOKR_PARTS, "alpha", "dora_scale", "scalar"):
            raise AdapterError(f"{src.file}: '{key}' is not a LoKR weight on a decoder Linear")
        found.setdefault(name, {})[part] = value
    modules = []
    for name in sorted(found, key=_module_order):
        p = found[name]
        parts = {k: v for k, v in p.items() if k in LOKR_PARTS}
        if not ({"lokr_w1"} <= set(parts) or {"lokr_w1_a", "lokr_w1_b"} <= set(parts)) or \
                not ({"lokr_w2"} <= set(parts) or {"lokr_w2_a", "lokr_w2_b"} <= set(parts)):
            raise AdapterError(f"{src.file}: {name} lacks a Kronecker half ({sorted(parts)})")
        alpha = float(p["alpha"]) if "alpha" in p else None
        modules.append(LokrModule(name, parts, alpha, p.get("dora_scale"), p.get("scalar")))
    if not modules:
        raise AdapterError(f"{src.file}: no LoKR weights in it")
    return modules


def _module_order(name: str):
    """Layer order (layers.2 before layers.10), then by name."""
    m = re.match(r"layers\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name)
