"""``sidestep check-adapter``: what each inference runtime would make of an adapter.

For ACE-Step's own loader, PEFT (what diffusers-style code uses), ComfyUI and acestep.cpp:
whether it loads, how many modules land on decoder Linear weights, which keys it drops and the
strength it applies relative to training, and for a DoRA (PEFT magnitudes, or a
``dora_scale``) whether it applies the weight decomposition as trained. Plus problems in the file
itself: foreign keys, missing alpha, rank or shape mismatches. The key rules are each runtime's
public loader code, summarised with sources in docs/adapter-formats.md.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sidestep.engine.adapter_keys import (
    LOHA_PARTS, LOKR_PARTS, LYCORIS_PREFIX, PEFT_PREFIX, Decoder, Source, dora_axis,
    config_rank_mismatch, export_stamp, fmt_keys, lokr_config, open_source, peft_scale,
    peft_targets)
from sidestep.engine.adapters import LOHA_WEIGHTS, LOKR_WEIGHTS, LORA_CONFIG, AdapterError

RUNTIMES = ("acestep", "peft", "comfyui", "acestep-cpp")
TITLES = {"acestep": "ACE-Step 1.5 loader", "peft": "PEFT / diffusers",
          "comfyui": "ComfyUI", "acestep-cpp": "acestep.cpp"}
_LORA_SUFFIX = {"lora_A.weight": "down", "lora_A.default.weight": "down",
                "lora_down.weight": "down", "lora_B.weight": "up",
                "lora_B.default.weight": "up", "lora_up.weight": "up",
                # PEFT's DoRA magnitude (0.21 saves the first form)
                "lora_magnitude_vector.default.weight": "magnitude",
                "lora_magnitude_vector.default": "magnitude",
                "lora_magnitude_vector.weight": "magnitude",
                "lora_magnitude_vector": "magnitude"}
_OTHER_SUFFIX = ("alpha", "dora_scale", "scalar", *LOKR_PARTS, *LOHA_PARTS)
_HADA = LOHA_PARTS[:4]
_SHOW = 8  # keys listed per finding; the count is always given


@dataclass
class Problem:
    kind: str          # foreign-keys | missing-alpha | rank-mismatch | shape-mismatch | ...
    message: str


@dataclass
class RuntimeVerdict:
    runtime: str
    loads: bool
    modules: int                       # modules applied to decoder Linear weights
    dropped: list[str]                 # keys it would not use
    strength: float | list[float] | None  # vs training: 1.0 same, [min, max] if it varies
    note: str = ""
    # DoRA / weight decomposition: applied (as trained) | differs (its own arithmetic, not
    # training's) | dropped (plays as the plain adapter); None when there is none
    dora: str | None = None


@dataclass
class AdapterReport:
    path: str
    file: str
    kind: str                          # lora | dora | lokr | loha
    modules: int
    decoder: str
    problems: list[Problem] = field(default_factory=list)
    runtimes: list[RuntimeVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Group:
    """The keys sharing one module prefix (``base_model.model.layers.0.self_attn.q_proj``)."""
    prefix: str
    name: str | None                   # the decoder Linear it names, if any
    style: str                         # peft | lycoris | comfy-full | comfy-unet | decoder | bare
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def lora(self) -> bool:
        return "down" in self.parts or "up" in self.parts

    def lokr(self) -> bool:
        return any(p in self.parts for p in LOKR_PARTS)

    def loha(self) -> bool:
        return any(p in self.parts for p in LOHA_PARTS)

    def decomposed(self) -> bool:
        return "magnitude" in self.parts or "dora_scale" in self.parts

    def lora_rank(self) -> int | None:
        d, u = self.parts.get("down"), self.parts.get("up")
        if d is None or u is None or d.ndim != 2 or u.ndim != 2 or d.shape[0] != u.shape[1]:
            return None
        return int(d.shape[0])

    def alpha(self) -> float | None:
        a = self.parts.get("alpha")
        return float(a.float().reshape(-1)[0]) if a is not None and a.numel() == 1 else None

    def loha_rank(self) -> int | None:
        b = self.parts.get("hada_w1_b")
        return int(b.shape[0]) if b is not None and b.ndim == 2 else None

    def weight_shape(self) -> tuple[int, int] | None:
        """(out, in) of the weight change its factors make (None when they do not multiply)."""
        try:
            shape = tuple(_product(self).shape)
        except (RuntimeError, KeyError, IndexError):
            return None
        return shape if len(shape) == 2 else None

    def lokr_dim(self, w2_only: bool = False) -> int | None:
        if "lokr_w2_b" in self.parts:
            return int(self.parts["lokr_w2_b"].shape[0])
        if not w2_only and "lokr_w1_b" in self.parts:
            return int(self.parts["lokr_w1_b"].shape[0])
        return None


def _split(key: str) -> tuple[str, str] | None:
    for suffix in (*_LORA_SUFFIX, *_OTHER_SUFFIX):
        if key.endswith("." + suffix):
            return key[:-len(suffix) - 1], suffix
    return None


def _module(prefix: str, decoder: Decoder) -> tuple[str | None, str]:
    for lead, style in ((PEFT_PREFIX, "peft"), ("diffusion_model.decoder.", "comfy-full"),
                        ("decoder.", "decoder")):
        if prefix.startswith(lead):
            rest = prefix[len(lead):]
            return (rest if decoder.is_linear(rest) else None), style
    for lead, style in ((LYCORIS_PREFIX, "lycoris"), ("lora_unet_decoder_", "comfy-unet")):
        if prefix.startswith(lead):
            return decoder.from_flat(prefix[len(lead):]), style
    return (prefix if decoder.is_linear(prefix) else None), "bare"


def _groups(src: Source, decoder: Decoder) -> tuple[dict[str, _Group], list[str]]:
    groups: dict[str, _Group] = {}
    unparsed = []
    for key, value in src.tensors.items():
        split = _split(key)
        if split is None:
            unparsed.append(key)
            continue
        prefix, suffix = split
        if prefix not in groups:
            name, style = _module(prefix, decoder)
            groups[prefix] = _Group(prefix, name, style)
        part = _LORA_SUFFIX.get(suffix, suffix)
        groups[prefix].parts[part] = value
        groups[prefix].keys[part] = key
    return groups, unparsed


def _fmt_keys(keys: list[str]) -> str:
    return fmt_keys(keys, _SHOW)


def check_adapter(path, decoder: Decoder | None = None) -> AdapterReport:
    """Raises ``AdapterError`` when ``path`` is not a readable adapter."""
    src = open_source(Path(path))
    if decoder is None:
        decoder = Decoder.from_model_dir(src.model_dir) if src.model_dir else Decoder.standard()
    groups, unparsed = _groups(src, decoder)
    if not groups:
        raise AdapterError(f"{src.file}: no LoRA, DoRA, LoKR or LoHA weights in it")
    kind = "loha" if any(g.loha() for g in groups.values()) else \
        "lokr" if any(g.lokr() for g in groups.values()) else \
        "dora" if any(g.decomposed() for g in groups.values()) else "lora"
    report = AdapterReport(str(path), str(src.file), kind,
                           sum(1 for g in groups.values() if g.name), decoder.origin)
    stamp = export_stamp(src.metadata)
    if stamp.get("dora_base"):
        report.notes.append(f"`sidestep export --format {stamp.get('format')}` wrote this from "
                            f"{stamp.get('source')}; its dora_scale is computed for that "
                            "runtime from the base weights in "
                            f"{stamp['dora_base']}")
    intended = _intended(src, groups, kind, report)
    _problems(src, groups, unparsed, decoder, kind, report)
    for rt in RUNTIMES:
        report.runtimes.append(_RUNNERS[rt](src, groups, unparsed, intended, decoder))
    return report


def _intended(src: Source, groups: dict[str, _Group], kind: str,
              report: AdapterReport) -> dict[str, float] | None:
    """Each module's scale in training: PEFT's from adapter_config.json, LyCORIS' alpha / rank
    for LoKR, alpha / rank of a single file's own ``.alpha``; None when nothing says."""
    out = {}
    for g in groups.values():
        if not g.name:
            continue
        if kind == "lokr":
            dim, alpha = g.lokr_dim(), g.alpha()
            out[g.prefix] = 1.0 if dim is None else (alpha / dim if alpha is not None else None)
        elif kind == "loha":
            rank, alpha = g.loha_rank(), g.alpha()
            out[g.prefix] = alpha / rank if rank and alpha is not None else None
        elif src.config is not None:
            out[g.prefix] = peft_scale(src.config, g.name)[1]
        else:
            rank, alpha = g.lora_rank(), g.alpha()
            out[g.prefix] = alpha / rank if rank and alpha is not None else None
    if any(v is None for v in out.values()):
        report.notes.append("some modules state no alpha and there is no adapter_config.json: "
                            "the strength they were trained at is unknown; strengths below "
                            "assume 1.0")
        out = {k: (1.0 if v is None else v) for k, v in out.items()}
    return out


def _problems(src, groups, unparsed, decoder: Decoder, kind: str, report) -> None:
    add = report.problems.append
    foreign = list(unparsed) + [k for g in groups.values() if not g.name for k in g.keys.values()]
    if foreign:
        add(Problem("foreign-keys", f"{len(foreign)} keys name no decoder Linear or no adapter "
                                    f"weight, and every runtime drops them: "
                                    f"{_fmt_keys(foreign)}"))
    named = [g for g in groups.values() if g.name]
    if kind == "loha":
        shapes = _loha_problems(named, decoder, add)
    elif kind in ("lora", "dora"):
        half = [g.prefix for g in named if not ("down" in g.parts and "up" in g.parts)]
        if half:
            add(Problem("incomplete", f"{len(half)} modules lack a LoRA half (down/lora_A or "
                                      f"up/lora_B): {_fmt_keys(half)}"))
        bad = [f"{g.prefix} (down {tuple(g.parts['down'].shape)}, up "
               f"{tuple(g.parts['up'].shape)})" for g in named
               if "down" in g.parts and "up" in g.parts and g.lora_rank() is None]
        if bad:
            add(Problem("rank-mismatch", f"{len(bad)} modules' down and up factors do not share "
                                         f"a rank: {_fmt_keys(bad)}"))
        if src.config is not None:
            finding = config_rank_mismatch(src.config, [(g.prefix, g.name, g.lora_rank())
                                                        for g in named
                                                        if g.lora_rank() is not None])
            if finding:
                add(Problem("rank-mismatch", finding))
        else:
            no_alpha = [g.prefix for g in named if g.alpha() is None]
            if no_alpha:
                add(Problem("missing-alpha", f"{len(no_alpha)} modules have no .alpha and there "
                                             f"is no {LORA_CONFIG}: ComfyUI and acestep.cpp "
                                             "apply scale 1.0, whatever alpha/rank training "
                                             f"used: {_fmt_keys(no_alpha)}"))
        shapes = [f"{g.prefix} ({tuple(g.parts['up'].shape[:1])}x"
                  f"{tuple(g.parts['down'].shape[1:])} vs {decoder.shape(g.name)})"
                  for g in named if g.lora_rank() and decoder.shape(g.name)
                  and (g.parts["up"].shape[0], g.parts["down"].shape[1])
                  != decoder.shape(g.name)]
    else:
        no_alpha = [g.prefix for g in named if g.lokr() and g.alpha() is None]
        if no_alpha:
            add(Problem("missing-alpha", f"{len(no_alpha)} LoKR modules have no alpha "
                                         f"(acestep.cpp skips them): {_fmt_keys(no_alpha)}"))
        bad, shapes = _multiply_out(named, _lokr_product, decoder)
        if bad:
            add(Problem("rank-mismatch", f"{len(bad)} LoKR modules' factors do not multiply "
                                         f"out: {_fmt_keys(bad)}"))
    shapes += _decomposition_shapes(named)
    if shapes:
        add(Problem("shape-mismatch", f"{len(shapes)} modules do not fit the decoder's weight "
                                      f"shape: {_fmt_keys(shapes)}"))


def _multiply_out(groups: list[_Group], product, decoder: Decoder) -> tuple[list[str], list[str]]:
    """(modules whose factors do not multiply, modules whose product misfits the decoder)."""
    bad, shapes = [], []
    for g in groups:
        try:
            delta = product(g)
        except (RuntimeError, KeyError, IndexError) as exc:
            bad.append(f"{g.prefix} ({str(exc).splitlines()[0][:60]})")
            continue
        if decoder.shape(g.name) and tuple(delta.shape) != decoder.shape(g.name):
            shapes.append(f"{g.prefix} ({tuple(delta.shape)} vs {decoder.shape(g.name)})")
    return bad, shapes


def _loha_problems(named: list[_Group], decoder: Decoder, add) -> list[str]:
    """incomplete, missing-alpha and rank-mismatch said here; the shape mismatches returned."""
    part = [f"{g.prefix} ({', '.join(k for k in _HADA if k not in g.parts)} missing)"
            for g in named if g.loha() and not all(k in g.parts for k in _HADA)]
    if part:
        add(Problem("incomplete", f"{len(part)} LoHA modules lack a factor: {_fmt_keys(part)}"))
    whole = [g for g in named if g.loha() and all(k in g.parts for k in _HADA)]
    no_alpha = [g.prefix for g in whole if g.alpha() is None]
    if no_alpha:
        add(Problem("missing-alpha", f"{len(no_alpha)} LoHA modules have no alpha (ComfyUI "
                                     f"applies scale 1.0): {_fmt_keys(no_alpha)}"))
    bad, shapes = _multiply_out(whole, _product, decoder)
    if bad:
        add(Problem("rank-mismatch", f"{len(bad)} LoHA modules' factors do not multiply out: "
                                     f"{_fmt_keys(bad)}"))
    return shapes


def _decomposition_shapes(named: list[_Group]) -> list[str]:
    """A magnitude needs one value per output row; a dora_scale (out, 1) or (1, in)."""
    out = []
    for g in named:
        shape = g.weight_shape()
        if shape is None:
            continue
        mag, ds = g.parts.get("magnitude"), g.parts.get("dora_scale")
        if mag is not None and mag.numel() != shape[0]:
            out.append(f"{g.keys['magnitude']} ({mag.numel()} values for {shape[0]} rows)")
        if ds is not None and dora_axis(ds, shape) is None:
            out.append(f"{g.keys['dora_scale']} ({tuple(ds.shape)}, neither ({shape[0]}, 1) "
                       f"nor (1, {shape[1]}))")
    return out


def _product(g: _Group) -> torch.Tensor:
    """The module's weight change up to its scale: B A, kron(w1, w2) or the Hadamard product."""
    p = g.parts
    if g.loha():
        return (p["hada_w1_a"].float() @ p["hada_w1_b"].float()) * \
            (p["hada_w2_a"].float() @ p["hada_w2_b"].float())
    if g.lora():
        return p["up"].float() @ p["down"].float()
    return _lokr_product(g)


def _lokr_product(g: _Group) -> torch.Tensor:
    p = g.parts
    w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"].float() @ p["lokr_w1_b"].float()
    w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"].float() @ p["lokr_w2_b"].float()
    return torch.kron(w1.float(), w2.float())


def _strength(ratios: list[float]) -> float | list[float] | None:
    if not ratios:
        return None
    lo, hi = min(ratios), max(ratios)
    return round(lo, 6) if abs(hi - lo) <= 1e-6 * max(1.0, abs(hi)) else [round(lo, 6),
                                                                           round(hi, 6)]


def _shape_ok(g: _Group, decoder: Decoder) -> bool:
    want = decoder.shape(g.name)
    if want is None:
        return True
    try:
        if g.lora():
            return (g.parts["up"].shape[0], g.parts["down"].shape[1]) == want
        return tuple(_product(g).shape) == want
    except (RuntimeError, KeyError, IndexError):
        return False


def _origin(src: Source) -> str:
    """Whose DoRA arithmetic a magnitude or dora_scale was made for: ``peft`` (a PEFT folder's
    magnitudes), ``lycoris`` (a LyCORIS file), the format ``sidestep export`` wrote it for, or
    ``file`` (another single file: ComfyUI's convention)."""
    stamp = export_stamp(src.metadata)
    if stamp.get("dora_base"):
        return str(stamp.get("format"))
    if src.config is not None:
        return "peft"
    if src.is_lokr or src.is_loha:
        return "lycoris"
    return "file"


def _dora(statuses: list[str]) -> str | None:
    """One word for the modules a runtime applies: dropped beats differs beats applied."""
    for word in ("dropped", "differs", "applied"):
        if word in statuses:
            return word
    return None


_DORA_NOTE = {
    "dropped": "the DoRA magnitude is not read: it plays as a plain adapter, not as trained",
    "differs": "it rescales with its own DoRA arithmetic, not training's, so the weights differ",
}


# -- the runtimes --------------------------------------------------------------------------
def _comfyui(src, groups, unparsed, intended, decoder) -> RuntimeVerdict:
    """comfy/lora.py: an ACE-Step 1.5 model maps ``base_model.model.<m>`` and
    ``lycoris_<m with _>`` (plus the generic ``diffusion_model.decoder.<m>`` and
    ``lora_unet_decoder_<m with _>``) onto decoder weights; per module it reads ``.alpha``,
    ``.dora_scale``, LoRA up/down (or lora_B/lora_A) and LyCORIS lokr_* and hada_* tensors.
    LoRA scale is alpha / rank, 1.0 without alpha; LoKR alpha / rank of a factorised half, else
    1.0; LoHA alpha / hada_w1_b's rows, else 1.0. A (out, 1) dora_scale rescales rows by the
    base W's norm, a (1, in) one columns by W + dW's (comfy/weight_adapter/base.py)."""
    used, dropped, ratios, doras = 0, list(unparsed), [], []
    origin = _origin(src)
    for g in groups.values():
        keys = list(g.keys.values())
        if not g.name or g.style not in ("peft", "lycoris", "comfy-full", "comfy-unet"):
            dropped += keys
            continue
        take = {"alpha", "dora_scale"}
        if g.lora() and "down" in g.parts and "up" in g.parts:
            take |= {"down", "up"}
            rank = g.lora_rank()
            ok = rank is not None and _shape_ok(g, decoder)
            scale = (g.alpha() / rank if g.alpha() is not None else 1.0) if rank else None
        elif g.lokr():
            take |= set(LOKR_PARTS)
            dim, alpha = g.lokr_dim(), g.alpha()
            ok = _shape_ok(g, decoder) and _multiplies(g)
            scale = alpha / dim if dim is not None and alpha is not None else 1.0
        elif g.loha() and all(k in g.parts for k in _HADA):
            take |= set(_HADA)  # Tucker hada_t1/t2 are conv only
            rank, alpha = g.loha_rank(), g.alpha()
            ok = _shape_ok(g, decoder) and _multiplies(g)
            scale = alpha / rank if rank and alpha is not None else 1.0
        else:
            dropped += keys
            continue
        ds = g.parts.get("dora_scale")
        axis = dora_axis(ds, g.weight_shape() or (0, 0)) if ds is not None and ok else None
        if ds is not None and ok:
            # a 1-D or other-shaped dora_scale breaks weight_decompose's broadcast (ComfyUI
            # issue #12938): the patch fails (a non-square weight) or is wrong (a square one)
            ok = axis is not None
        dropped += [k for p, k in g.keys.items() if p not in take]
        if ok:
            used += 1
            ratios.append(scale / intended[g.prefix])
            if ds is not None:
                # its output-axis branch normalises the base W, not W + dW as LyCORIS does;
                # the input-axis branch is LyCORIS' own arithmetic
                same = origin in ("comfyui", "file") or (origin == "lycoris" and axis == "in")
                doras.append("applied" if same else "differs")
            elif "magnitude" in g.parts:
                doras.append("dropped")
        else:
            dropped += [k for p, k in g.keys.items() if p in take]
    note = "single .safetensors file in models/loras" if src.config is None else \
        f"load {src.file.name} alone: ComfyUI does not read {LORA_CONFIG}"
    if src.config is not None and ratios and _strength(ratios) != 1.0:
        note += "; `sidestep export --format comfyui` writes the alpha it needs"
    dora = _dora(doras)
    if dora in _DORA_NOTE:
        note += f"; {_DORA_NOTE[dora]} (`sidestep export --format comfyui` writes a " \
            "dora_scale it applies as trained)"
    return RuntimeVerdict("comfyui", used > 0, used, sorted(dropped), _strength(ratios), note,
                          dora)


def _multiplies(g: _Group) -> bool:
    try:
        _product(g)
        return True
    except (RuntimeError, KeyError, IndexError):
        return False


def _acestep_cpp(src, groups, unparsed, intended, decoder) -> RuntimeVerdict:
    """src/adapter-merge.h: a file with any ``.lokr_w1``/``.lokr_w2`` key is LoKR (``lycoris_``
    keys; full ``lokr_w1``, an ``alpha`` and exactly one of ``lokr_w2`` or ``lokr_w2_a/_b``;
    scale alpha / rank, a full w2's rank from lokr_config.linear_dim), else LoRA: prefix
    ``base_model.model.`` or ``diffusion_model.`` stripped, ``decoder.`` added, A/B or
    down/up; alpha from a float32 scalar ``.alpha``, else lora_alpha in adapter_config.json,
    else the rank."""
    is_lokr = any(".lokr_w1" in k or ".lokr_w2" in k for k in src.tensors)
    used, dropped, ratios, doras = 0, list(unparsed), [], []
    origin = _origin(src)
    cfg_alpha = None
    if src.config is not None and isinstance(src.config.get("lora_alpha"), (int, float)):
        cfg_alpha = int(src.config["lora_alpha"])  # read as an integer, patterns ignored
    linear_dim = (lokr_config(src.metadata) or {}).get("linear_dim")
    for g in groups.values():
        keys = list(g.keys.values())
        if not g.name:
            dropped += keys
            continue
        if is_lokr:
            if g.style != "lycoris" or not g.lokr():
                dropped += keys
                continue
            p = g.parts
            factor = "lokr_w2_a" in p and "lokr_w2_b" in p
            if "lokr_w1" not in p or g.alpha() is None or factor == ("lokr_w2" in p) or \
                    not _shape_ok(g, decoder) or not _multiplies(g):
                dropped += keys
                continue
            dim = g.lokr_dim(w2_only=True) if factor else linear_dim
            ds = p.get("dora_scale")
            # its dora_scale is one value per output row: any other first dimension skips
            # the whole module
            if not dim or (ds is not None and ds.shape[0] != (g.weight_shape() or (0,))[0]):
                dropped += keys
                continue
            take = {"lokr_w1", "alpha", "dora_scale", *(("lokr_w2_a", "lokr_w2_b") if factor
                                                        else ("lokr_w2",))}
            scale = g.alpha() / dim
            if ds is not None:
                doras.append("applied" if origin == "acestep-cpp" else "differs")
        else:
            if g.style not in ("peft", "comfy-full", "decoder", "bare") or \
                    "down" not in g.parts or "up" not in g.parts:
                dropped += keys
                continue
            rank = g.lora_rank()
            if rank is None or not _shape_ok(g, decoder):
                dropped += keys
                continue
            a = g.parts.get("alpha")
            if a is not None and a.dtype == torch.float32 and a.ndim == 0:
                alpha = float(a)
            else:
                alpha = float(cfg_alpha) if cfg_alpha else float(rank)
            take = {"down", "up", "alpha"} if a is not None and a.ndim == 0 and \
                a.dtype == torch.float32 else {"down", "up"}
            scale = alpha / rank
            if g.decomposed():
                doras.append("dropped")  # the LoRA path reads no magnitude or dora_scale
        dropped += [k for part, k in g.keys.items() if part not in take]
        used += 1
        ratios.append(scale / intended[g.prefix])
    note = "point it at the .safetensors file" if src.folder is None or \
        src.file.name in (LOKR_WEIGHTS, LOHA_WEIGHTS) else "reads the PEFT folder " \
        "(adapter_config.json's lora_alpha only: no rank_pattern/alpha_pattern, no rsLoRA)"
    if src.is_loha:
        note = "does not load LoHA: it merges LoRA and LoKR only"
    dora = _dora(doras)
    if dora in _DORA_NOTE:
        note += f"; {_DORA_NOTE[dora]} (`sidestep export --format acestep-cpp` writes a " \
            "dora_scale it applies as trained)"
    return RuntimeVerdict("acestep-cpp", used > 0, used, sorted(dropped), _strength(ratios),
                          note, dora)


def _peft(src, groups, unparsed, intended, decoder) -> RuntimeVerdict:
    """PeftModel.from_pretrained(decoder, folder): adapter_config.json picks the wrapped
    modules (target_modules), keys are ``base_model.model.<m>.lora_A/lora_B.weight``; other
    keys are unexpected and ignored; a rank that differs from the config fails the load."""
    if src.config is None:
        return RuntimeVerdict("peft", False, 0, [], None,
                              f"needs a folder with {LORA_CONFIG} and adapter_model.safetensors")
    used, dropped, doras = 0, list(unparsed), []
    dora = bool(src.config.get("use_dora"))
    take = ("down", "up", "magnitude") if dora else ("down", "up")
    for g in groups.values():
        keys = list(g.keys.values())
        if not g.name or g.style != "peft" or not peft_targets(src.config, g.name):
            dropped += keys
            continue
        dropped += [k for part, k in g.keys.items() if part not in take]
        rank = g.lora_rank()
        mag = g.parts.get("magnitude") if dora else None
        if rank is None or rank != int(peft_scale(src.config, g.name)[0]) or \
                not _shape_ok(g, decoder) or \
                (mag is not None and mag.numel() != g.parts["up"].shape[0]):
            return RuntimeVerdict("peft", False, 0, sorted(dropped), None,
                                  f"{g.prefix}: size mismatch with {LORA_CONFIG}; the load "
                                  "fails")
        used += 1
        if "magnitude" in g.parts:
            doras.append("applied" if dora else "dropped")
    note = "the format training wrote"
    if _dora(doras) == "dropped":
        note = f"{LORA_CONFIG} has no use_dora: the magnitudes are unexpected keys and it " \
               "plays as a plain LoRA"
    return RuntimeVerdict("peft", used > 0, used, sorted(dropped), 1.0 if used else None,
                          note, _dora(doras))


def _acestep(src, groups, unparsed, intended, decoder) -> RuntimeVerdict:
    """ACE-Step 1.5's handler: a PEFT folder (adapter_config.json) through PeftModel, or a
    file named lokr_weights.safetensors (or a folder holding one) through LyCORIS, built from
    the ``lokr_config`` metadata and loaded with load_state_dict(strict=False)."""
    if src.is_loha:
        return RuntimeVerdict("acestep", False, 0, sorted(src.tensors), None,
                              f"reads a PEFT folder or a {LOKR_WEIGHTS} file; it does not load "
                              "LoHA")
    if src.file.name != LOKR_WEIGHTS:
        verdict = _peft(src, groups, unparsed, intended, decoder)
        verdict.runtime = "acestep"
        if src.config is None:
            verdict.note = f"needs a PEFT folder ({LORA_CONFIG}) or a {LOKR_WEIGHTS} file"
        return verdict
    cfg = lokr_config(src.metadata)
    if cfg is None:
        return RuntimeVerdict("acestep", False, 0, [], None,
                              "no lokr_config metadata: ACE-Step builds the LoKR from its "
                              "defaults, which need not match this file")
    targets = cfg.get("target_modules") or []

    def targeted(name: str) -> bool:
        return any(name == t or re.fullmatch(t, name) for t in targets)

    used, dropped, ratios, doras = 0, list(unparsed), [], []
    for g in groups.values():
        keys = list(g.keys.values())
        if not g.name or g.style != "lycoris" or not targeted(g.name) or not g.lokr():
            dropped += keys
            continue
        if not _shape_ok(g, decoder):
            return RuntimeVerdict("acestep", False, 0, sorted(dropped), None,
                                  f"{g.prefix}: shape mismatch; the load fails")
        dropped += [k for part, k in g.keys.items()
                    if part not in (*LOKR_PARTS, "alpha", "dora_scale")]
        used += 1
        ratios.append(1.0)  # LyCORIS is the training runtime
        if "dora_scale" in g.parts:
            doras.append("applied")
    return RuntimeVerdict("acestep", used > 0, used, sorted(dropped), _strength(ratios),
                          "LoKR through LyCORIS", _dora(doras))


_RUNNERS = {"acestep": _acestep, "peft": _peft, "comfyui": _comfyui,
            "acestep-cpp": _acestep_cpp}
