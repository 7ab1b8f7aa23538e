"""Gradient sensitivity: which decoder attention projections your data pulls on hardest.

For each sampled batch the estimate runs the training objective (``objective.batch_loss``: the
same timesteps, noise and CFG dropout as ``fixed``) forward and backward through the frozen
model, with gradients enabled only on the weights of every attention projection
(``layers.N.self_attn|cross_attn.q|k|v|o_proj``). A projection's score is the mean squared
gradient of its weight, ``||dL/dW||^2 / numel(W)``, averaged over the batches: how strongly
the loss on these songs wants that weight to change, per weight, so wide and narrow projections
compare. Scores are divided by the largest, so the top module scores 1. Layer granularity scores
a layer by the mean of its eight projections.

Nothing is trained and no optimizer state exists. Each weight's gradient is read and freed the
moment backward produces it (a post-accumulate hook), so memory stays near a LoRA training
step's, not a full fine-tune's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sidestep.config.plural import counted
from sidestep.config.schema import PROJECTIONS

log = logging.getLogger("sidestep.engine")

SIDES = ("self_attn", "cross_attn")
VERSION = 1


@dataclass(frozen=True)
class EstimateEvent:
    """``load`` (model and data), ``batch`` (``done`` of ``total`` finished), ``done``,
    ``cancelled``. ``eta_s``: time left at the pace so far."""
    phase: str
    done: int
    total: int
    message: str = ""
    eta_s: float | None = None


@dataclass
class EstimateResult:
    granularity: str
    top_k: int
    model: str
    dataset: str
    batches: int
    seed: int
    ranking: list[tuple[str, float]] = field(default_factory=list)  # every module, best first
    seconds: float = 0.0
    cancelled: bool = False

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        return self.ranking[: k or self.top_k]

    def to_json(self, top_k: int | None = None) -> dict[str, Any]:
        k = top_k or self.top_k

        def rows(items):
            return [{"name": n, "score": round(s, 6)} for n, s in items]

        return {"version": VERSION, "granularity": self.granularity, "top_k": k,
                "model": self.model, "dataset": self.dataset, "batches": self.batches,
                "seed": self.seed, "modules": rows(self.ranking[:k]),
                "all": rows(self.ranking)}


class EstimateError(ValueError):
    """Bad input for the estimate (the message names the setting or file)."""


def projection_names(num_layers: int) -> list[str]:
    return [f"layers.{i}.{side}.{proj}" for i in range(num_layers) for side in SIDES
            for proj in PROJECTIONS]


def auto_batches(device: str, batches_per_epoch: int) -> int:
    """How many batches when ``--estimate-batches`` is empty: more where memory says the GPU
    is a big one (and so fast), a few on a CPU; at least one pass over small datasets."""
    if device.startswith("cuda"):
        from sidestep.config.profiles import detect_gpus

        free = next((g.get("free_mib") for g in detect_gpus()), None) or 0
        want = 32 if free >= 40_000 else 16 if free >= 16_000 else 8
    else:
        want = 8
    return max(1, min(want, max(batches_per_epoch, 1) * 4))


def rank(scores: dict[str, float], granularity: str) -> list[tuple[str, float]]:
    """Normalised scores, best first (ties by name, so equal runs give equal files)."""
    if granularity == "layer":
        by_layer: dict[str, list[float]] = {}
        for name, value in scores.items():
            by_layer.setdefault(".".join(name.split(".")[:2]), []).append(value)
        scores = {k: sum(v) / len(v) for k, v in by_layer.items()}
    top = max(scores.values(), default=0.0)
    norm = {k: (v / top if top > 0 else 0.0) for k, v in scores.items()}
    return sorted(norm.items(), key=lambda kv: (-kv[1], kv[0]))


def estimate(config, *, progress: Callable[[EstimateEvent], None] | None = None,
             cancel: Callable[[], bool] | None = None, with_app: bool = False) -> EstimateResult:
    """Run the estimate for a resolved ``estimate`` (or ``selective``) config; ``with_app``: the
    app's UI shares the process (``cpu_threads.training_threads``)."""
    import torch

    from sidestep import cpu_threads
    from sidestep.config.device import probe, resolve_device, resolve_precision
    from sidestep.data.tensors import (EpochBatches, TensorDataset, collate,
                                       list_files, random_window, validate)
    from sidestep.engine import objective
    from sidestep.model import load_acestep
    from sidestep.model.checkpoints import resolve_model
    from sidestep.model.loading import read_model_config

    say = progress or (lambda event: None)
    stopped = cancel or (lambda: False)
    t_start = time.monotonic()
    info = probe()
    device = resolve_device(config.device, info)
    precision, note = resolve_precision(config.precision, device, info)
    if note:
        log.warning(note)
    ref = resolve_model(config.checkpoint_dir, config.model_variant,
                        getattr(config, "base_model", None))
    model_config = read_model_config(ref.path)
    files = list_files(config.dataset_dir)
    validate(files, model_config.audio_acoustic_hidden_dim, model_config.enc_hidden)
    batches = EpochBatches(len(files), config.batch_size, config.seed)
    total = config.estimate_batches or auto_batches(device, batches.batches_per_epoch)

    threads_before = cpu_threads.use_training_threads(with_app) if device == "cpu" else None
    try:
        say(EstimateEvent("load", 0, total, f"loading {ref.entry.name} on {device} "
                                            f"({precision})"))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        model = load_acestep(ref.path, device=device, dtype=dtype,
                             parts=("decoder", "null_condition_emb"))
        decoder = model.decoder
        decoder.train()
        for p in model.parameters():
            p.requires_grad_(False)
        sums: dict[str, Any] = {}
        hooks = []
        for name in projection_names(model_config.num_hidden_layers):
            weight = decoder.get_submodule(name).weight
            weight.requires_grad_(True)
            sums[name] = torch.zeros((), device=weight.device, dtype=torch.float64)
            hooks.append(weight.register_post_accumulate_grad_hook(
                _reader(name, weight.numel(), sums)))

        family = ref.family
        cfg_ratio = getattr(config, "cfg_ratio", 0.15 if family in ("base", "sft") else 0.0)
        chunk = getattr(config, "chunk_duration", None)
        chunk_frames = int(chunk * 25) if chunk else 0
        schedule = objective.shifted_schedule(getattr(config, "num_inference_steps", 8),
                                              getattr(config, "shift", 3.0))
        dataset = TensorDataset(files)
        torch.manual_seed(config.seed)  # timesteps, noise and CFG dropout: one seed, one result
        autocast = (torch.autocast(device.split(":")[0], dtype=dtype)
                    if dtype != torch.float32 else contextlib.nullcontext())
        done, epoch, t0 = 0, 0, time.monotonic()
        while done < total and not stopped():
            for idx in batches.batches(epoch):
                if done >= total or stopped():
                    break
                batch = collate([dataset[i] for i in idx])
                if chunk_frames:
                    batch = random_window(batch, chunk_frames)
                with autocast:
                    _mse, loss = objective.batch_loss(
                        decoder, model.null_condition_emb, batch, mode="fixed",
                        cfg_ratio=cfg_ratio, loss_weighting=getattr(config, "loss_weighting",
                                                                    "none"),
                        snr_gamma=getattr(config, "snr_gamma", 5.0), schedule=schedule,
                        mu=model_config.timestep_mu, sigma=model_config.timestep_sigma,
                        device=device)
                if not math.isfinite(float(loss.detach())):
                    raise EstimateError(f"the loss is not finite on {batch['files']}; check "
                                        "those files with `sidestep check-dataset`")
                loss.backward()
                done += 1
                pace = (time.monotonic() - t0) / done
                say(EstimateEvent("batch", done, total, eta_s=pace * (total - done)))
            epoch += 1
        for h in hooks:
            h.remove()
    finally:
        cpu_threads.restore(threads_before)
    ranking = rank({k: float(v) / max(done, 1) for k, v in sums.items()}, config.granularity)
    top_k = min(config.top_k, len(ranking)) if ranking else config.top_k
    if top_k < config.top_k:
        log.warning("--top-k %d is more than the %d %ss ranked: all %d are selected",
                    config.top_k, len(ranking), config.granularity, top_k)
    result = EstimateResult(granularity=config.granularity, top_k=top_k,
                            model=ref.entry.name, dataset=os.path.abspath(config.dataset_dir),
                            batches=done, seed=config.seed, ranking=ranking,
                            seconds=time.monotonic() - t_start, cancelled=stopped())
    say(EstimateEvent("cancelled" if result.cancelled else "done", done, total,
                      f"{counted(done, 'batch', 'batches')} in {result.seconds:.1f} s"))
    return result


def _reader(name: str, numel: int, sums: dict[str, Any]):
    """Adds the weight's mean squared gradient to its sum (on the device: no sync per
    weight), then frees the gradient."""
    def hook(param) -> None:
        sums[name] += param.grad.detach().double().pow(2).sum() / numel
        param.grad = None
    return hook


def default_output(model_variant: str, granularity: str, folder: Path | str = ".") -> Path:
    """``estimate-<variant>-<granularity>.json`` in ``folder``, never an existing file (the
    CLI's and the app's default)."""
    stem = f"estimate-{Path(str(model_variant)).name}-{granularity}"
    path = Path(folder) / f"{stem}.json"
    n = 2
    while path.exists():
        path = Path(folder) / f"{stem}-{n}.json"
        n += 1
    return path


def write_result(result: EstimateResult, path: Path | str, top_k: int | None = None) -> Path:
    from sidestep.config import atomic

    path = Path(path)
    atomic.write_json(path, result.to_json(top_k))
    return path
