"""Optimizers and learning-rate schedules.

Every schedule ramps linearly from 10% to 100% of the learning rate over ``warmup_steps``
optimizer steps, then: ``cosine`` decays to 1% (as upstream's trainer), ``cosine_restarts`` does
the same in three cycles, ``linear`` decays to 0, ``constant`` and ``constant_with_warmup`` hold.
"""

from __future__ import annotations

import math

import torch

WARMUP_START = 0.1
COSINE_FLOOR = 0.01
RESTART_CYCLES = 3


def lr_factor(kind: str, step: int, warmup: int, total: int) -> float:
    """Multiplier on the base LR before optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warmup
    if kind in ("constant", "constant_with_warmup"):
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if kind == "cosine":
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "cosine_restarts":
        cycle = progress * RESTART_CYCLES
        within = cycle - math.floor(cycle) if progress < 1.0 else 1.0
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * within))
    if kind == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown scheduler {kind!r}")


def build_optimizer(kind: str, params, lr: float, weight_decay: float, device_type: str):
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters")
    if kind == "adamw":
        if device_type == "cuda":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        # CPU: one multi-tensor update (torch's CPU default is a loop of per-tensor ops, each a
        # parallel region of its own: ~64 small LoRA tensors made its step 487 ms beside a busy
        # core, against 17 ms grouped; the arithmetic is the same).
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if kind == "adamw8bit":  # the only run that loads bitsandbytes (see adapters.py)
        from sidestep.engine.adapters import load_bitsandbytes

        bnb = load_bitsandbytes()
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    if kind == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=lr, weight_decay=weight_decay, decouple=True,
                       use_bias_correction=True, safeguard_warmup=True)
    raise ValueError(f"unknown optimizer {kind!r}")


def build_scheduler(optimizer, kind: str, warmup: int, total: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(kind, step, warmup, total))


def continue_schedule(scheduler, optimizer, lr: float) -> None:
    """After a checkpoint's scheduler state is loaded: its step count stays, but the rates are
    this run's (the state brings back the first run's base rate, and the rate it had set for
    the next step from the first run's length: a resume with another --learning-rate or
    --epochs went on at the old rate). Unchanged settings give the very values saved."""
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    rates = [base * factor(scheduler.last_epoch)
             for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(optimizer.param_groups, rates):
        group["initial_lr"], group["lr"] = lr, rate
    scheduler._last_lr = rates
