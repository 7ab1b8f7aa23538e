"""Held-out validation (``--val-split``) and the best-adapter / early-stop bookkeeping.

The split is a seeded choice of tensor files that never trains. Its loss is measured after each
epoch with the adapter in eval mode, at timesteps and noise fixed for the whole run (drawn from
their own generators, never from the global RNG that checkpoints restore), so epochs compare
and a resumed run reports the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sidestep.engine import objective

TIMESTEPS_PER_FILE = 4
MOVING_WINDOW = 5  # epochs of training loss averaged when there is no validation split
_SALT = 7_919


class SplitError(ValueError):
    pass


def split_files(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(training files, validation files): ``fraction`` of them (at least one) held out."""
    if fraction <= 0:
        return list(files), []
    n = len(files)
    held = max(1, round(n * fraction))
    if n - held < 1:
        raise SplitError(f"--val-split {fraction} leaves no training files out of {n}; add "
                         "songs or set --val-split 0")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * _SALT + 1)).tolist()
    chosen = set(order[:held])
    return ([f for i, f in enumerate(files) if i not in chosen],
            [f for i, f in enumerate(files) if i in chosen])


class Validator:
    """Mean velocity MSE of the validation files at fixed timesteps, noise and windows."""

    def __init__(self, files: list[Path], *, seed: int, mode: str, schedule: torch.Tensor,
                 mu: float, sigma: float, chunk_frames: int | None):
        from sidestep.data.tensors import TensorDataset

        self.dataset = TensorDataset(files)
        self.files = files
        self.seed = seed
        self.chunk_frames = chunk_frames
        g = torch.Generator().manual_seed(seed * _SALT + 2)
        k = TIMESTEPS_PER_FILE
        if mode == "vanilla":  # the discrete schedule it trains on
            idx = torch.randint(0, schedule.shape[0], (len(files), k), generator=g)
            self.t = schedule[idx].float()
        else:  # the training distribution: max of two logit-normal draws
            a = torch.sigmoid(torch.randn(len(files), k, generator=g) * sigma + mu)
            b = torch.sigmoid(torch.randn(len(files), k, generator=g) * sigma + mu)
            self.t = torch.maximum(a, b)

    @torch.no_grad()
    def loss(self, model, device) -> float:
        from sidestep.data.tensors import collate, random_window

        total, count = 0.0, 0
        for i in range(len(self.files)):
            batch = collate([self.dataset[i]])
            g = torch.Generator().manual_seed(self.seed * _SALT + 1000 + i)
            if self.chunk_frames:
                batch = random_window(batch, self.chunk_frames, generator=g)
            x0 = batch["target_latents"].to(device)
            ehs = batch["encoder_hidden_states"].to(device)
            for j in range(self.t.shape[1]):
                noise = torch.randn(x0.shape, generator=g).to(device=device, dtype=x0.dtype)
                t = self.t[i, j:j + 1].to(device)
                tt = t.to(x0.dtype)[:, None, None]
                xt, target = tt * noise + (1 - tt) * x0, noise - x0
                pred = objective.predict(model, batch, xt, t, ehs, device)
                total += float(objective.per_sample_mse(pred, target).sum())
                count += 1
        return total / count


@dataclass
class BestTracker:
    """Which epoch's adapter is best, and whether to stop early.

    The measure is the validation loss, or without a split the mean of the last
    ``MOVING_WINDOW`` epochs' training loss. Epochs before ``start`` never count as best;
    ``patience`` epochs (from ``start`` on) without a better measure end the run."""

    start: int = 1
    patience: int = 0
    best: float = math.inf
    best_epoch: int = 0
    since: int = 0
    train_means: list[float] = field(default_factory=list)

    def observe(self, epoch: int, train_mean: float, val_loss: float | None) -> tuple[float, bool]:
        """(measure, improved) for the epoch just ended."""
        if math.isfinite(train_mean):
            self.train_means = (self.train_means + [train_mean])[-MOVING_WINDOW:]
        if val_loss is not None:
            measure = val_loss
        elif self.train_means:
            measure = sum(self.train_means) / len(self.train_means)
        else:
            measure = math.nan
        if epoch < self.start:
            return measure, False
        if math.isfinite(measure) and measure < self.best:
            self.best, self.best_epoch, self.since = measure, epoch, 0
            return measure, True
        self.since += 1
        return measure, False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "since": self.since,
                "train_means": list(self.train_means)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", math.inf))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.since = int(state.get("since", 0))
        self.train_means = [float(v) for v in state.get("train_means", [])]
