"""``sidestep export``: an adapter as ComfyUI, acestep.cpp or PEFT loads it at training strength.

- ``comfyui`` / ``acestep-cpp``: one .safetensors file. LoRA as ``base_model.model.<module>``
  ``.lora_down.weight`` / ``.lora_up.weight`` plus a float32 scalar ``.alpha`` per module, so
  alpha / rank is exactly the scale PEFT applied in training (both runtimes use 1.0 without
  it). LoKR as LyCORIS ``lycoris_<module with _>`` keys with ``alpha`` and the ``lokr_config``
  metadata; for acestep.cpp a factorised ``lokr_w1_a/_b`` is multiplied out (it reads only a
  full ``lokr_w1``). LoHA (ComfyUI only) as LyCORIS ``hada_*`` keys with ``alpha``.
- DoRA: the magnitude is relative to the base weights, and each runtime normalises its own
  way, so the ``dora_scale`` written is recomputed from the base model for the runtime named:
  ComfyUI gets LoRA keys with a (out, 1) ``dora_scale``; acestep.cpp, which rescales only
  LoKR modules, gets each LoRA as a LoKR with a 1 x 1 ``lokr_w1``.
- ``peft``: an ``adapter_config.json`` + ``adapter_model.safetensors`` folder (LoRA, DoRA).

``normalize_alpha`` folds each module's scale into its up (LoKR: ``w1``; LoHA: ``hada_w1_a``)
factor and sets alpha to the rank, for runtimes that ignore alpha. Nothing is written until
every check has passed; files are written to a temporary sibling and renamed. Rules and their
sources: docs/adapter-formats.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sidestep.config.atomic import fsync_dir, write_bytes
from sidestep.engine.adapter_keys import (
    EPS_BF16, EPS_F32, LYCORIS_PREFIX, PEFT_PREFIX, Decoder, LohaModule, LokrModule, LoraPair,
    Source, base_weights, dora_axis, loha_modules, lokr_config, lokr_modules, open_source,
    peft_pairs, peft_scale, row_norm)
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
    kind: str                      # lora | dora | lokr | loha
    modules: int
    notes: list[str] = field(default_factory=list)


def export_adapter(source, fmt: str, output, normalize_alpha: bool = False,
                   force: bool = False, decoder: Decoder | None = None,
                   make_folder: bool = False) -> ExportResult:
    """Export ``source`` (an adapter, checkpoint or run folder) to ``output`` in ``fmt``.
    Raises ``AdapterError`` (bad source) or ``ExportError`` (bad output), before writing.
    ``output``'s folder must exist, unless ``make_folder`` (the app's <run>/export/)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; pick one of {', '.join(FORMATS)}")
    src_path = Path(source)
    if not src_path.exists():
        raise AdapterError(f"{src_path}: not found; give an adapter, checkpoint or run folder")
    if not src_path.is_dir():
        raise AdapterError(f"{src_path}: expected an adapter, checkpoint or run folder")
    _refuse_incomplete(src_path)
    src = open_source(src_path)
    _refuse_kind(src, fmt)
    output = Path(output)
    _check_output(output, fmt, force, src, make_folder)
    if decoder is None:
        decoder = Decoder.from_model_dir(src.model_dir) if src.model_dir else Decoder.standard()
    bases: list[Path] = []
    if src.is_loha or src.is_lokr:  # LyCORIS: lycoris_ keys, its config in the metadata
        kind = "loha" if src.is_loha else "lokr"
        modules = (loha_modules if src.is_loha else lokr_modules)(src, decoder)
        tensors, notes = _lycoris_tensors(src, decoder, modules, fmt, normalize_alpha, bases)
        meta = {"format": "pt", f"{kind}_config": src.metadata.get(f"{kind}_config", "{}"),
                "sidestep_export": _stamp(src, fmt, normalize_alpha, bases)}
        _write_file(output, tensors, meta)
        return ExportResult(output, fmt, kind, len(modules), notes)
    pairs = peft_pairs(src, decoder)
    kind = "dora" if any(p.magnitude is not None for p in pairs) else "lora"
    if fmt == "peft":
        _write_peft(output, src, pairs, normalize_alpha, force)
        return ExportResult(output, fmt, kind, len(pairs))
    if kind == "dora":
        base = _base(src, decoder, [p.name for p in pairs], "a DoRA magnitude", bases)
        tensors = _dora_tensors(pairs, fmt, normalize_alpha, base)
        notes = [_base_note(fmt, bases[0])]
    else:
        tensors, notes = {}, []
        for p in pairs:
            tensors.update(_lora_keys(p, normalize_alpha))
    _write_file(output, tensors, {"format": "pt",
                                  "sidestep_export": _stamp(src, fmt, normalize_alpha, bases)})
    return ExportResult(output, fmt, kind, len(pairs), notes)


def _refuse_incomplete(src_path: Path) -> None:
    """A checkpoint without its COMPLETE marker: its save did not finish, so what it holds
    may be partial (--resume-from refuses it too)."""
    from sidestep.engine.checkpointing import ADAPTER_DIR, MARKER, STATE_FILE, list_checkpoints

    folder = src_path.parent if src_path.name == ADAPTER_DIR else src_path
    if not folder.name.lstrip(".").startswith("checkpoint-") and \
            not (folder / STATE_FILE).is_file():
        return
    if (folder / MARKER).is_file():
        return
    newest = list_checkpoints(folder.parent)
    instead = (f"export the last complete one, {newest[-1]}" if newest else
               "the run has no complete checkpoint; export its final/ or best/ adapter")
    raise AdapterError(f"{folder}: incomplete checkpoint (no {MARKER} marker: its save did "
                       f"not finish); {instead}")


def _refuse_kind(src: Source, fmt: str) -> None:
    """Adapter kinds a format cannot carry, said before anything else is looked at."""
    if src.is_loha and fmt == "acestep-cpp":
        raise ExportError(f"{src.file}: acestep.cpp does not load LoHA adapters (it merges "
                          "LoRA and LoKR only); export this one with --format comfyui, or "
                          "train a LoRA or LoKR (--adapter-type lora|lokr) for acestep.cpp")
    if src.is_loha and fmt == "peft":
        raise ExportError(f"{src.file}: Side-Step writes no PEFT form of a LoHA adapter (and "
                          "ACE-Step's own loader does not load LoHA); export it with --format "
                          "comfyui, which reads LyCORIS LoHA keys")
    if src.is_lokr and fmt == "peft":
        raise ExportError(f"{src.file}: a LoKR adapter has no PEFT LoRA form; export it "
                          "with --format comfyui or acestep-cpp (ACE-Step loads the LoKR "
                          "folder itself)")


def _lora_keys(p: LoraPair, normalize_alpha: bool) -> dict[str, torch.Tensor]:
    """down, up and a 0-dim float32 alpha (acestep.cpp reads no other alpha shape or dtype)
    whose alpha / rank is the trained scale."""
    rank = p.down.shape[0]
    key = PEFT_PREFIX + p.name
    up = p.up.double() * p.scale if normalize_alpha else p.up
    alpha = float(rank) if normalize_alpha else p.scale * rank
    return {f"{key}.lora_down.weight": p.down.float().contiguous(),
            f"{key}.lora_up.weight": up.float().contiguous(),
            f"{key}.alpha": torch.tensor(alpha, dtype=torch.float32)}


def _base(src: Source, decoder: Decoder, names: list[str], what: str,
          bases: list[Path]) -> dict[str, torch.Tensor]:
    """The base decoder weights ``names`` (the run's model, or --checkpoint-dir's)."""
    model_dir = decoder.model_dir or src.model_dir
    if model_dir is None:
        raise ExportError(f"{src.file}: {what} is relative to the base model's weights, which "
                          "this export needs and cannot find (no run.json naming an existing "
                          "model beside the adapter): pass --checkpoint-dir (and "
                          "--model-variant) for the model it was trained on")
    bases.append(Path(model_dir))
    return base_weights(model_dir, names)


def _base_note(fmt: str, model_dir: Path) -> str:
    runtime = "ComfyUI" if fmt == "comfyui" else "acestep.cpp"
    return (f"dora_scale is computed for {runtime}'s DoRA arithmetic from the base weights in "
            f"{model_dir}: exact on those weights; a different or quantised base (fp8, GGUF "
            "Q8/Q4) shifts the row norms slightly")


def _dora_factor(magnitude: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """What training multiplies each row (or column) of W + dW by: magnitude / norm."""
    return magnitude.double().reshape(norm.shape) / norm


def _runtime_dora_scale(fmt: str, factor: torch.Tensor, w: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
    """The (out, 1) ``dora_scale`` that makes a runtime's per-row rescale of V = W + dW equal
    ``factor``: ComfyUI divides by the norm of the base W plus float32's eps (its output-axis
    branch, comfy/weight_adapter/base.py ``weight_decompose``); acestep.cpp by the norm of V
    plus bfloat16's eps (src/adapter-merge.h)."""
    if fmt == "comfyui":
        return factor * (row_norm(w) + EPS_F32)
    return factor * (row_norm(v) + EPS_BF16)


def _dora_tensors(pairs: list[LoraPair], fmt: str, normalize_alpha: bool,
                  base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT DoRA (W' = m * V / ||V|| per output row, V = W + s*B*A, no eps) for ComfyUI: LoRA
    keys plus dora_scale; for acestep.cpp, which rescales only LoKR modules: each module as a
    LoKR with lokr_w1 = [[1]] (or [[scale]]), lokr_w2_a = B, lokr_w2_b = A."""
    out: dict[str, torch.Tensor] = {}
    for p in pairs:
        w = base[p.name]
        if tuple(w.shape) != (p.up.shape[0], p.down.shape[1]):
            raise ExportError(f"{p.name}: the base weight is {tuple(w.shape)} but the adapter "
                              f"makes {(p.up.shape[0], p.down.shape[1])}: not the model it "
                              "was trained on (--checkpoint-dir)")
        ds = None
        if p.magnitude is not None:
            v = w + p.delta()
            ds = _runtime_dora_scale(fmt, _dora_factor(p.magnitude, row_norm(v)), w, v)
        if fmt == "comfyui":
            out.update(_lora_keys(p, normalize_alpha))
            if ds is not None:
                out[f"{PEFT_PREFIX}{p.name}.dora_scale"] = ds.float().contiguous()
            continue
        rank = p.down.shape[0]
        flat = LYCORIS_PREFIX + p.name.replace(".", "_")
        w1 = p.scale if normalize_alpha else 1.0
        out[f"{flat}.lokr_w1"] = torch.tensor([[w1]], dtype=torch.float32)
        out[f"{flat}.lokr_w2_a"] = p.up.float().contiguous()
        out[f"{flat}.lokr_w2_b"] = p.down.float().contiguous()
        out[f"{flat}.alpha"] = torch.tensor(float(rank) if normalize_alpha else p.scale * rank,
                                            dtype=torch.float32)
        if ds is not None:
            out[f"{flat}.dora_scale"] = ds.float().contiguous()
    return out


def _stamp(src: Source, fmt: str, normalize_alpha: bool, bases: list[Path]) -> str:
    """Read back by check-adapter: a dora_scale was computed for this format's arithmetic."""
    stamp = {"source": os.path.abspath(src.file), "format": fmt,
             "normalize_alpha": normalize_alpha}
    if bases:
        stamp["dora_base"] = os.path.abspath(bases[0])
    return json.dumps(stamp)


def _check_output(output: Path, fmt: str, force: bool, src: Source, make_folder: bool) -> None:
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
    if make_folder:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():  # a typo in the path must not make folders anywhere
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ExportError(f"{output}: the folder {parent} {what}; create it first, or fix the "
                          "path")


def _write_file(output: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    with _writable(output):
        write_bytes(output, save(tensors, metadata=meta))


@contextlib.contextmanager
def _writable(output: Path):
    """A folder that cannot be written (read-only, full) is a refusal, not a traceback; the
    temporary file is gone by then (the writers clean up after themselves)."""
    try:
        yield
    except OSError as exc:
        raise ExportError(f"{output}: cannot write there ({exc.strerror or exc}); choose "
                          "another --output") from None


def _write_peft(output: Path, src: Source, pairs, normalize_alpha: bool, force: bool) -> None:
    with _writable(output):
        _write_peft_folder(output, src, pairs, normalize_alpha, force)


def _write_peft_folder(output: Path, src: Source, pairs, normalize_alpha: bool,
                       force: bool) -> None:
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
    weights = save(tensors, metadata=src.metadata or None)
    config_text = json.dumps(config, indent=2) + "\n"
    if output.is_dir():
        # The user's folder (or a link to one) stays as it is, its mode and owner too: each
        # file is replaced whole, the weights first (a crash between leaves an earlier
        # export's config beside them, which _check_output allows to be replaced again).
        write_bytes(output / LORA_WEIGHTS, weights)
        write_bytes(output / LORA_CONFIG, config_text.encode("utf-8"))
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    # a new folder appears whole or not at all
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        (tmp / LORA_WEIGHTS).write_bytes(weights)
        (tmp / LORA_CONFIG).write_text(config_text, encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, output)
        fsync_dir(output.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lycoris_tensors(src: Source, decoder: Decoder, modules, fmt: str, normalize_alpha: bool,
                     bases: list[Path]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LyCORIS keys (LoKR or LoHA) whose weight, read with the target runtime's rules, is the
    trained one; a ``dora_scale`` is recomputed for that runtime (``_lycoris_dora``)."""
    need = [m.name for m in modules if m.dora_scale is not None and
            (fmt == "acestep-cpp" or dora_axis(m.dora_scale, m.delta().shape) != "in")]
    base = _base(src, decoder, need, "a dora_scale (weight decomposition)", bases) \
        if need else {}
    if isinstance(modules[0], LohaModule):
        tensors = _loha_tensors(modules, normalize_alpha)
    else:
        tensors = _lokr_tensors(modules, fmt, normalize_alpha, lokr_config(src.metadata))
    for m in modules:
        if m.dora_scale is not None:
            flat = LYCORIS_PREFIX + m.name.replace(".", "_")
            tensors[f"{flat}.dora_scale"] = _lycoris_dora(src, m, fmt, base).float().contiguous()
    notes = [_base_note(fmt, bases[0])] if bases else []
    return tensors, notes


def _lycoris_dora(src: Source, m, fmt: str, base: dict[str, torch.Tensor]) -> torch.Tensor:
    """LyCORIS' weight decomposition: W' = m * V / (||V|| + float32 eps), V = W + dW, the norm
    per output row for a (out, 1) dora_scale (wd_on_out, LyCORIS' default) or per input column
    for (1, in). ComfyUI's input-axis branch is that arithmetic (copied as is); for the output
    axis, and for acestep.cpp, the scale is recomputed from the base weight."""
    delta = m.delta()
    axis = dora_axis(m.dora_scale, delta.shape)
    if axis is None:
        raise ExportError(f"{src.file}: {m.name}: a dora_scale of shape "
                          f"{tuple(m.dora_scale.shape)} is neither (out, 1) nor (1, in); no "
                          "runtime applies it")
    if axis == "in":
        if fmt == "acestep-cpp":
            raise ExportError(f"{src.file}: {m.name}: its dora_scale normalises per input "
                              "column (LyCORIS wd_on_out=False); acestep.cpp rescales only per "
                              "output row and would skip the module: export with --format "
                              "comfyui")
        return m.dora_scale
    w = base[m.name]
    if tuple(w.shape) != tuple(delta.shape):
        raise ExportError(f"{m.name}: the base weight is {tuple(w.shape)} but the adapter "
                          f"makes {tuple(delta.shape)}: not the model it was trained on "
                          "(--checkpoint-dir)")
    v = w + delta
    factor = _dora_factor(m.dora_scale, row_norm(v) + EPS_F32)
    return _runtime_dora_scale(fmt, factor, w, v)


def _loha_tensors(modules: list[LohaModule], normalize_alpha: bool) -> dict[str, torch.Tensor]:
    """ComfyUI's LoHA rule is LyCORIS': (w1_a w1_b) * (w2_a w2_b) * alpha / rank, rank =
    hada_w1_b's rows, 1.0 without alpha; alpha becomes a 0-dim float32 scale x rank."""
    out: dict[str, torch.Tensor] = {}
    for m in modules:
        parts = {k: v.double() for k, v in m.parts.items()}
        if normalize_alpha:
            parts["hada_w1_a"] = parts["hada_w1_a"] * m.scale()
            alpha = float(m.rank)
        else:
            alpha = m.scale() * m.rank
        flat = LYCORIS_PREFIX + m.name.replace(".", "_")
        for k, v in parts.items():
            out[f"{flat}.{k}"] = v.float().contiguous()
        out[f"{flat}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return out


def _lokr_tensors(modules: list[LokrModule], fmt: str, normalize_alpha: bool,
                  config: dict | None) -> dict[str, torch.Tensor]:
    """LyCORIS keys whose delta, read with ComfyUI's and acestep.cpp's LoKR rules, is the
    trained one: alpha / rank on the product when a half is factorised, 1 when both are full
    (ComfyUI) or alpha / lokr_config.linear_dim (acestep.cpp), so full pairs get
    alpha = linear_dim with the scale folded into w1."""
    linear_dim = float((config or {}).get("linear_dim") or 0)
    out: dict[str, torch.Tensor] = {}
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
    return out
