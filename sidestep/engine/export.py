"""``sidestep export``: an adapter as ComfyUI, acestep.cpp or PEFT loads it at training strength.

- ``comfyui`` / ``acestep-cpp``: one .safetensors file. LoRA as ``base_model.model.<module>``
  ``.lora_down.weight`` / ``.lora_up.weight`` plus a float32 scalar ``.alpha`` per module, so
  alpha / rank is exactly the scale PEFT applied in training (both runtimes use 1.0 without
  it). LoKR as LyCORIS ``lycoris_<module with _>`` keys with ``alpha`` and the ``lokr_config``
  metadata; for acestep.cpp a factorised ``lokr_w1_a/_b`` is multiplied out (it reads only a
  full ``lokr_w1``).
- ``peft``: an ``adapter_config.json`` + ``adapter_model.safetensors`` folder (LoRA only).

``normalize_alpha`` folds each module's scale into its up (LoKR: ``w1``) factor and sets alpha
to the rank, for runtimes that ignore alpha. Nothing is written until every check has passed;
files are written to a temporary sibling and renamed. Rules: docs/adapter-formats.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sidestep.config.atomic import fsync_dir, write_bytes
from sidestep.engine.adapter_keys import (
    LYCORIS_PREFIX, PEFT_PREFIX, Decoder, LokrModule, Source, lokr_config, lokr_modules,
    open_source, peft_pairs, peft_scale)
from sidestep.engine.adapters import LORA_CONFIG, LORA_WEIGHTS, AdapterError

FORMATS = ("comfyui", "acestep-cpp", "peft")
# What a PEFT folder may hold for --force to replace it (never an arbitrary folder).
_PEFT_FILES = {LORA_CONFIG, LORA_WEIGHTS, "README.md"}


class ExportError(AdapterError):
    pass


@dataclass
class ExportResult:
    output: Path
    fmt: str
    kind: str                      # lora | lokr
    modules: int
    notes: list[str] = field(default_factory=list)


def export_adapter(source, fmt: str, output, normalize_alpha: bool = False,
                   force: bool = False, decoder: Decoder | None = None) -> ExportResult:
    """Export ``source`` (an adapter, checkpoint or run folder) to ``output`` in ``fmt``.
    Raises ``AdapterError`` (bad source) or ``ExportError`` (bad output), before writing."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; pick one of {', '.join(FORMATS)}")
    src_path = Path(source)
    if not src_path.is_dir():
        raise AdapterError(f"{src_path}: expected an adapter, checkpoint or run folder")
    src = open_source(src_path)
    output = Path(output)
    _check_output(output, fmt, force, src)
    if decoder is None:
        decoder = Decoder.from_model_dir(src.model_dir) if src.model_dir else Decoder.standard()
    if (src.config or {}).get("use_dora") or any("lora_magnitude_vector" in k
                                                    for k in src.tensors):
        # A DoRA weight is magnitude * (W + BA) / ||W + BA||: not an additive delta, so the
        # single-file LoRA formats below cannot carry it yet.
        raise ExportError(f"{src.file}: a DoRA adapter cannot be exported yet; ACE-Step's own "
                          "loader and PEFT load its folder (final/adapter) as it is")
    if src.is_lokr:
        if fmt == "peft":
            raise ExportError(f"{src.file}: a LoKR adapter has no PEFT LoRA form; export it "
                              "with --format comfyui or acestep-cpp (ACE-Step loads the LoKR "
                              "folder itself)")
        modules = lokr_modules(src, decoder)
        tensors, notes = _lokr_tensors(modules, fmt, normalize_alpha, lokr_config(src.metadata))
        meta = {"format": "pt", "lokr_config": src.metadata.get("lokr_config", "{}"),
                "sidestep_export": _stamp(src, fmt, normalize_alpha)}
        _write_file(output, tensors, meta)
        return ExportResult(output, fmt, "lokr", len(modules), notes)
    pairs = peft_pairs(src, decoder)
    if fmt == "peft":
        _write_peft(output, src, pairs, normalize_alpha, force)
        return ExportResult(output, fmt, "lora", len(pairs))
    tensors = {}
    for p in pairs:
        rank = p.down.shape[0]
        key = PEFT_PREFIX + p.name
        tensors[f"{key}.lora_down.weight"] = p.down.float().contiguous()
        if normalize_alpha:
            tensors[f"{key}.lora_up.weight"] = (p.up.double() * p.scale).float().contiguous()
            alpha = float(rank)
        else:
            tensors[f"{key}.lora_up.weight"] = p.up.float().contiguous()
            alpha = p.scale * rank
        # a 0-dim float32 tensor: acestep.cpp reads no other alpha shape or dtype
        tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    _write_file(output, tensors, {"format": "pt",
                                  "sidestep_export": _stamp(src, fmt, normalize_alpha)})
    return ExportResult(output, fmt, "lora", len(pairs))


def _stamp(src: Source, fmt: str, normalize_alpha: bool) -> str:
    return json.dumps({"source": str(src.file), "format": fmt,
                       "normalize_alpha": normalize_alpha})


def _check_output(output: Path, fmt: str, force: bool, src: Source) -> None:
    """Every refusal, before anything is written."""
    resolved = output.resolve()
    src_dir = src.file.parent.resolve()
    if resolved == src.file.resolve() or resolved == src_dir or src_dir.is_relative_to(resolved):
        raise ExportError(f"{output}: that is the source adapter (or holds it); pick another "
                          "output")
    if fmt == "peft":
        if output.exists() and not output.is_dir():
            raise ExportError(f"{output}: is a file; --format peft writes a folder")
        if output.is_dir() and any(output.iterdir()):
            if not force:
                raise ExportError(f"{output}: already exists; pass --force to replace it")
            extra = sorted(p.name for p in output.iterdir() if p.name not in _PEFT_FILES)
            if extra:
                raise ExportError(f"{output}: holds more than a PEFT adapter ({extra[0]}, ...); "
                                  "refusing to replace it even with --force")
    else:
        if output.is_dir():
            raise ExportError(f"{output}: is a folder; --format {fmt} writes one "
                              ".safetensors file")
        if output.suffix != ".safetensors":
            raise ExportError(f"{output}: name it *.safetensors (the runtimes list only those)")
        if output.exists() and not force:
            raise ExportError(f"{output}: already exists; pass --force to replace it")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"{output}: {parent} is not a folder")


def _write_file(output: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    write_bytes(output, save(tensors, metadata=meta))


def _write_peft(output: Path, src: Source, pairs, normalize_alpha: bool, force: bool) -> None:
    from safetensors.torch import save

    config = dict(src.config)
    tensors = dict(src.tensors)
    if normalize_alpha:
        by_name = {p.name: p for p in pairs}
        for key in list(tensors):
            if ".lora_B." in key:
                name = key[len(PEFT_PREFIX):].split(".lora_B.")[0]
                tensors[key] = (tensors[key].double() * by_name[name].scale).to(
                    tensors[key].dtype)
        # alpha == r everywhere: the same patterns for both, rsLoRA off, so every scale is 1
        config["lora_alpha"] = config.get("r", 8)
        config["alpha_pattern"] = dict(config.get("rank_pattern") or {})
        config["use_rslora"] = False
        assert all(peft_scale(config, p.name)[1] == 1.0 for p in pairs)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        (tmp / LORA_WEIGHTS).write_bytes(save(tensors, metadata=src.metadata or None))
        (tmp / LORA_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
        os.replace(tmp, output)
        fsync_dir(output.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lokr_tensors(modules: list[LokrModule], fmt: str, normalize_alpha: bool,
                  config: dict | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LyCORIS keys whose delta, read with ComfyUI's and acestep.cpp's LoKR rules, is the
    trained one: alpha / rank on the product when a half is factorised, 1 when both are full
    (ComfyUI) or alpha / lokr_config.linear_dim (acestep.cpp), so full pairs get
    alpha = linear_dim with the scale folded into w1."""
    linear_dim = float((config or {}).get("linear_dim") or 0)
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for m in modules:
        scale = m.scale() * (float(m.scalar) if m.scalar is not None else 1.0)
        parts = {k: v.double() for k, v in m.parts.items()}
        if fmt == "acestep-cpp" and "lokr_w1" not in parts:
            parts["lokr_w1"] = parts.pop("lokr_w1_a") @ parts.pop("lokr_w1_b")
        probe = LokrModule(m.name, parts, None)
        rank = probe.factor_rank
        w1_key = "lokr_w1" if "lokr_w1" in parts else "lokr_w1_a"
        if rank is None:
            if not linear_dim and fmt == "acestep-cpp":
                raise AdapterError(f"{m.name}: both Kronecker halves are full and lokr_config "
                                   "has no linear_dim, which acestep.cpp needs")
            parts[w1_key] = parts[w1_key] * scale
            alpha = linear_dim or 1.0  # ComfyUI ignores alpha here
        elif normalize_alpha:
            parts[w1_key] = parts[w1_key] * scale
            alpha = float(rank)
        else:
            alpha = scale * rank
        flat = LYCORIS_PREFIX + m.name.replace(".", "_")
        for k, v in parts.items():
            out[f"{flat}.{k}"] = v.float().contiguous()
        out[f"{flat}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
        if m.dora_scale is not None:
            out[f"{flat}.dora_scale"] = m.dora_scale.float().contiguous()
    if any(m.dora_scale is not None for m in modules):
        notes.append("dora_scale (weight decomposition) is copied as is; the runtimes' DoRA "
                     "rescale is theirs")
    return out, notes
