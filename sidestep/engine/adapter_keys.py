"""Adapter files as inference runtimes read them: where an adapter lives, which decoder Linear
each key names, the scale each module carries, and the weight change it makes.

Shared by ``export`` and ``adapter_check``; the rules and their public sources are listed in
docs/adapter-formats.md.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sidestep.engine.adapters import (LOHA_WEIGHTS, LOKR_WEIGHTS, LORA_CONFIG, LORA_WEIGHTS,
                                      AdapterError)

ADAPTER_FILES = (LORA_WEIGHTS, LOKR_WEIGHTS, LOHA_WEIGHTS)
PEFT_PREFIX = "base_model.model."
LYCORIS_PREFIX = "lycoris_"
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
              "lokr_t2")
LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
# PEFT's DoRA magnitude: saved as `lora_magnitude_vector` (0.21); other versions add the
# adapter name and/or `.weight`.
MAGNITUDE = re.compile(r"(.+)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?")
# The epsilons the DoRA rescales add to a norm: LyCORIS and ComfyUI take the dtype's eps of the
# weight they normalise (float32 in LyCORIS, whose dora_scale is float32, and in ComfyUI's usual
# patch path); acestep.cpp adds bfloat16's eps whatever the dtype. PEFT adds none.
EPS_F32 = float(torch.finfo(torch.float32).eps)
EPS_BF16 = float(torch.finfo(torch.bfloat16).eps)

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

    def __init__(self, shapes: dict[str, tuple[int, int]] | None, origin: str,
                 model_dir: Path | None = None):
        self.shapes = shapes
        self.origin = origin
        self.model_dir = model_dir           # where the base weights are (DoRA needs them)
        self._flat = {n.replace(".", "_"): n for n in shapes} if shapes else {}

    @classmethod
    def standard(cls) -> "Decoder":
        return cls(None, "the standard ACE-Step 1.5 decoder names, shapes not checked")

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
        return cls(shapes, f"{model_dir} ({len(shapes)} decoder Linears)", Path(model_dir))

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
    if not isinstance(path, str):
        return None
    if not os.path.isabs(path):
        # written relative to where the run started (before it was kept absolute): not to
        # the current folder, which may hold another model of that name; the run's own
        # (absolute) checkpoint folder holds it
        root = (data.get("config") or {}).get("checkpoint_dir")
        if not isinstance(root, str) or not os.path.isabs(root):
            return None
        path = os.path.join(root, Path(path).name)
    if (Path(path) / "config.json").is_file():
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
        if any((candidate / n).is_file() for n in ADAPTER_FILES):
            return candidate
    raise AdapterError(_no_final(path) or
                       f"{path}: not an adapter: no {', '.join(ADAPTER_FILES)} in it, in "
                       "adapter/ (a checkpoint) or in final/adapter/ (a run)")


def _no_final(run: Path) -> str | None:
    """For a run folder without final/adapter (stopped or failed before its end): what it
    holds instead, to give in its place. None when ``run`` is not a run folder."""
    from sidestep.engine.checkpointing import list_checkpoints
    from sidestep.engine.run_dir import BEST_ADAPTER, BEST_DIR, RUN_FILE, read_run

    if not (run / RUN_FILE).is_file():
        return None
    status = (read_run(run) or {}).get("status") or "unknown"
    instead = []
    if any((run / BEST_ADAPTER / n).is_file() for n in ADAPTER_FILES):
        instead.append(f"its best adapter, {run / BEST_DIR}")
    checkpoints = list_checkpoints(run)
    if checkpoints:
        instead.append(f"its latest checkpoint, {checkpoints[-1]}")
    return (f"{run}: the run has no final adapter (final/adapter/ is written when it "
            f"completes; status: {status}); " + (f"give {' or '.join(instead)}" if instead
                                                 else "it saved no best adapter or checkpoint "
                                                      "either"))


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

    @property
    def is_loha(self) -> bool:
        return any(k.rsplit(".", 1)[-1] in LOHA_PARTS for k in self.tensors)


def open_source(path: Path) -> Source:
    """A folder (adapter, checkpoint, run) or a single .safetensors file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    folder = None
    if path.is_dir():
        folder = adapter_dir(path)
        file = next(folder / n for n in ADAPTER_FILES if (folder / n).is_file())
    elif path.is_file():
        file = path
    else:
        raise AdapterError(f"{path}: not found")
    try:
        with safe_open(str(file), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(file))
    except (OSError, SafetensorError, ValueError) as exc:
        if file.suffix != ".safetensors":  # a checkpoint's training_state.pt, a .bin, ...
            raise AdapterError(
                f"{file}: not an adapter file (adapters are .safetensors files); give the "
                f"adapter file, or a folder that holds one: a run folder, a checkpoint folder "
                f"or its adapter/ folder") from None
        raise AdapterError(f"{file}: not a readable .safetensors file ({exc})") from None
    config = None
    cfg_path = file.parent / LORA_CONFIG
    if file.name == LORA_WEIGHTS and cfg_path.is_file():
        config = read_lora_config(cfg_path)
    return Source(file=file, folder=folder or (file.parent if config else None),
                  tensors=tensors, metadata=metadata, config=config,
                  model_dir=model_dir_for(file.parent))


def read_lora_config(path: Path) -> dict[str, Any]:
    """adapter_config.json with the fields export and check-adapter use checked (r,
    lora_alpha, rank_pattern, alpha_pattern, use_rslora, use_dora, target_modules,
    exclude_modules); ``AdapterError`` naming the file, the field and what it should be."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: holds {_json_type(config)}; it should be a JSON object "
                           "(PEFT's LoRA config: r, lora_alpha, target_modules, ...)")

    def bad(field_: str, value, want: str) -> AdapterError:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return AdapterError(f"{path}: {field_} is {shown}; it should be {want}")

    rank = "a whole number of at least 1 (the LoRA rank)"
    alpha = "a finite number (the scale is alpha / r)"
    if "r" in config and not _is_rank(config["r"]):
        raise bad("r", config["r"], rank)
    if "lora_alpha" in config and not _is_number(config["lora_alpha"]):
        raise bad("lora_alpha", config["lora_alpha"], alpha)
    for name, ok, want in (("rank_pattern", _is_rank, rank), ("alpha_pattern", _is_number,
                                                               alpha)):
        patterns = config.get(name)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            raise bad(name, patterns, "an object of module-name pattern -> value, or {}")
        for key, value in patterns.items():
            if not _compiles(key):
                raise AdapterError(f"{path}: {name} key {key!r} is not a valid regular "
                                   "expression; it should match the end of a module name")
            if not ok(value):
                raise bad(f"{name}[{key!r}]", value, want)
    for name in ("use_rslora", "use_dora"):
        if config.get(name) is not None and not isinstance(config[name], bool):
            raise bad(name, config[name], "true or false")
    for name in ("target_modules", "exclude_modules"):
        spec = config.get(name)
        if spec is None or isinstance(spec, str) and _compiles(spec) or \
                isinstance(spec, list) and all(isinstance(t, str) for t in spec):
            continue
        raise bad(name, spec, "a regular expression (a string) or a list of module names")
    return config


def _json_type(value) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}".replace(
        "list", "array").replace("dict", "object").replace("str", "string")


def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value) -> bool:
    # json reads Infinity and NaN; neither is a scale a runtime can apply
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _meta_json(metadata: dict[str, str], key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(metadata.get(key, ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def lokr_config(metadata: dict[str, str]) -> dict[str, Any] | None:
    return _meta_json(metadata, "lokr_config")


def export_stamp(metadata: dict[str, str]) -> dict[str, Any]:
    """What ``sidestep export`` wrote into a file's metadata (empty for other files)."""
    return _meta_json(metadata, "sidestep_export") or {}


def base_weights(model_dir: Path, names) -> dict[str, torch.Tensor]:
    """The base model's decoder weights for ``names`` (float64), read lazily from its
    safetensors; ``AdapterError`` naming the model folder when one is missing."""
    from sidestep.model.loading import CheckpointError, iter_tensors

    want = {f"decoder.{n}.weight": n for n in names}
    out: dict[str, torch.Tensor] = {}
    try:
        for _, key, tensor in iter_tensors(Path(model_dir), keep=want.__contains__):
            out[want[key]] = tensor.double()
    except CheckpointError as exc:
        raise AdapterError(str(exc)) from None
    missing = sorted(set(want.values()) - set(out))
    if missing:
        raise AdapterError(f"{model_dir}: the base model has no decoder weight for "
                           f"{missing[0]}; pass the --checkpoint-dir the adapter was trained on")
    return out


def row_norm(w: torch.Tensor) -> torch.Tensor:
    """Per output row, as a column: (out, 1)."""
    return w.norm(dim=1, keepdim=True)


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


def fmt_keys(keys: list[str], show: int = 8) -> str:
    """The first ``show`` of ``keys`` (sorted), with the count when there are more."""
    shown = ", ".join(sorted(keys)[:show])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > show else "")


def config_rank_mismatch(config: dict[str, Any],
                         modules: list[tuple[str, str, int]]) -> str | None:
    """check-adapter's [rank-mismatch] finding for (label, module name, rank of its weights)
    whose rank is not the config's r/rank_pattern, or None. Export refuses on the same words:
    with the wrong rank, lora_alpha / r is not the scale training applied."""
    off = []
    for label, name, rank in modules:
        want = int(peft_scale(config, name)[0])
        if rank != want:
            off.append(f"{label} (rank {rank}, config {want})")
    if not off:
        return None
    return (f"{len(off)} modules' rank differs from {LORA_CONFIG}'s r/rank_pattern (PEFT will "
            f"not load them): {fmt_keys(off)}")


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
    magnitude: torch.Tensor | None = None  # PEFT DoRA: one per output row

    def delta(self) -> torch.Tensor:
        return (self.up.double() @ self.down.double()) * self.scale


def peft_pairs(src: Source, decoder: Decoder) -> list[LoraPair]:
    """The modules of a PEFT LoRA folder with PEFT's scale; ``AdapterError`` for keys that are
    not LoRA A/B on a decoder Linear, a missing half or a rank mismatch (between the halves,
    or with the config's r/rank_pattern)."""
    if src.config is None:
        raise AdapterError(f"{src.file}: {LORA_CONFIG} is missing beside it")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.tensors.items():
        m = re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        mag = MAGNITUDE.fullmatch(key) if key.startswith(PEFT_PREFIX) else None
        name = m.group(1) if m else mag.group(1)[len(PEFT_PREFIX):] if mag else None
        if name is None or not decoder.is_linear(name):
            raise AdapterError(f"{src.file}: '{key}' is not a LoRA weight on a decoder Linear")
        halves.setdefault(name, {})[m.group(2) if m else "M"] = value
    pairs = []
    for name in sorted(halves, key=_module_order):
        h = halves[name]
        if not {"A", "B"} <= set(h):
            raise AdapterError(f"{src.file}: {name} has lora_{'A' if 'A' in h else 'B'} only"
                               if "A" in h or "B" in h else
                               f"{src.file}: {name} has a DoRA magnitude but no LoRA weights")
        down, up, mag = h["A"], h["B"], h.get("M")
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise AdapterError(f"{src.file}: {name}: lora_A {tuple(down.shape)} and lora_B "
                               f"{tuple(up.shape)} do not share a rank")
        if mag is not None and mag.numel() != up.shape[0]:
            raise AdapterError(f"{src.file}: {name}: the DoRA magnitude has {mag.numel()} values "
                               f"for {up.shape[0]} output rows")
        check_fits(src, decoder, name, "LoRA", (int(up.shape[0]), int(down.shape[1])))
        _, scale = peft_scale(src.config, name)
        pairs.append(LoraPair(name, down, up, scale,
                              None if mag is None else mag.reshape(-1)))
    if not pairs:
        raise AdapterError(f"{src.file}: no LoRA weights in it")
    finding = config_rank_mismatch(src.config, [(PEFT_PREFIX + p.name, p.name,
                                                 int(p.down.shape[0])) for p in pairs])
    if finding:
        raise AdapterError(f"{src.file.parent / LORA_CONFIG}: [rank-mismatch] {finding}; its "
                           "lora_alpha / r is then not the scale training applied: set r (and "
                           "rank_pattern) to the weights' rank")
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


def check_fits(src: Source, decoder: Decoder, name: str, kind: str,
               shape: tuple[int, ...] | None) -> None:
    """``AdapterError`` when a module's weight change is not the shape of the decoder's weight
    (an adapter trained on another model size): written out, it would not load, or (a rank-1
    case) broadcast into a wrong weight."""
    want = decoder.shape(name)
    if want and shape is not None and tuple(shape) != want:
        raise AdapterError(f"{src.file}: {name}: the {kind} makes {tuple(shape)} but the "
                           f"decoder's weight is {want}: the adapter was trained on another "
                           "model (see --checkpoint-dir / --model-variant)")


def _kron_shape(parts: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """(out, in) of a LoKR module's Kronecker product, from its halves' shapes."""
    dims = []
    for half in ("w1", "w2"):
        whole = parts.get(f"lokr_{half}")
        if whole is not None:
            shape = tuple(whole.shape)
        else:
            a, b = parts[f"lokr_{half}_a"], parts[f"lokr_{half}_b"]
            shape = (a.shape[0], b.shape[-1])
        if len(shape) != 2:
            return None
        dims.append(shape)
    (a, b), (c, d) = dims
    return int(a * c), int(b * d)


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
        check_fits(src, decoder, name, "LoKR", _kron_shape(parts))
        alpha = float(p["alpha"]) if "alpha" in p else None
        modules.append(LokrModule(name, parts, alpha, p.get("dora_scale"), p.get("scalar")))
    if not modules:
        raise AdapterError(f"{src.file}: no LoKR weights in it")
    return modules


# -- LyCORIS LoHA --------------------------------------------------------------------------
@dataclass
class LohaModule:
    name: str
    parts: dict[str, torch.Tensor]  # hada_* tensors
    alpha: float | None
    dora_scale: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        """What LyCORIS and ComfyUI divide alpha by: ``hada_w1_b``'s rows."""
        return int(self.parts["hada_w1_b"].shape[0])

    def scale(self) -> float:
        """LyCORIS: alpha / rank (the saved alpha already holds rsLoRA's correction); ComfyUI
        takes 1.0 without alpha."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        p = {k: v.double() for k, v in self.parts.items()}
        return (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"]) * \
            self.scale()


def loha_modules(src: Source, decoder: Decoder) -> list[LohaModule]:
    """The modules of a LyCORIS LoHA file; ``AdapterError`` for keys that do not name a decoder
    Linear, a missing factor, factors that do not multiply or Tucker (conv) factors."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.tensors.items():
        prefix, _, part = key.rpartition(".")
        name = decoder.from_flat(prefix[len(LYCORIS_PREFIX):]) \
            if prefix.startswith(LYCORIS_PREFIX) else None
        if name is None or part not in (*LOHA_PARTS, "alpha", "dora_scale"):
            raise AdapterError(f"{src.file}: '{key}' is not a LoHA weight on a decoder Linear")
        found.setdefault(name, {})[part] = value
    modules = []
    for name in sorted(found, key=_module_order):
        p = found[name]
        if "hada_t1" in p or "hada_t2" in p:
            raise AdapterError(f"{src.file}: {name} has Tucker factors (hada_t1/hada_t2), which "
                               "only convolutions use; not a decoder Linear LoHA")
        parts = {k: v for k, v in p.items() if k in LOHA_PARTS}
        missing = [k for k in LOHA_PARTS[:4] if k not in parts]
        if missing:
            raise AdapterError(f"{src.file}: {name} lacks {', '.join(missing)}")
        try:
            shape = ((parts["hada_w1_a"] @ parts["hada_w1_b"]) *
                     (parts["hada_w2_a"] @ parts["hada_w2_b"])).shape
        except RuntimeError:
            shape = None
        if shape is None or len(shape) != 2:
            raise AdapterError(f"{src.file}: {name}: the LoHA factors "
                               f"{[tuple(parts[k].shape) for k in LOHA_PARTS[:4]]} do not "
                               "multiply out")
        check_fits(src, decoder, name, "LoHA", tuple(shape))
        alpha = float(p["alpha"]) if "alpha" in p else None
        modules.append(LohaModule(name, parts, alpha, p.get("dora_scale")))
    if not modules:
        raise AdapterError(f"{src.file}: no LoHA weights in it")
    return modules


# -- weight decomposition (DoRA) ------------------------------------------------------------
def dora_axis(dora_scale: torch.Tensor, shape) -> str | None:
    """Which norm a LyCORIS/ComfyUI ``dora_scale`` stands for on a weight of ``shape`` (out,
    in): ``out`` for (out, 1) (one per output row, LyCORIS' default wd_on_out), ``in`` for
    (1, in) (per input column); None for any other shape."""
    out_features, in_features = shape
    if tuple(dora_scale.shape) == (out_features, 1):
        return "out"
    if tuple(dora_scale.shape) == (1, in_features):
        return "in"
    return None


def _module_order(name: str):
    """Layer order (layers.2 before layers.10), then by name."""
    m = re.match(r"layers\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name)
