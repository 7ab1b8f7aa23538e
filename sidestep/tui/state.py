"""What the monitor shows about a run, folded from engine events on the UI thread.

Plain Python (no Textual), so it can be built from a live queue or from an old run's
``events.jsonl`` alike. ``version`` increases on every change: widgets redraw at a fixed rate
and only when it moved.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, RunPaused, RunResumed, RunStarted, StepMetrics,
                                    read_events)

LOG_LIMIT = 5000


@dataclass
class RunState:
    run_dir: str = ""
    title: str = ""
    status: str = "starting"       # starting | running | paused | stopping | completed | ...
    read_only: bool = False
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    epoch_progress: float = 0.0
    samples_per_sec: float | None = None
    eta_seconds: float | None = None
    grad_norm: float | None = None
    best_step: int | None = None
    best_loss: float | None = None
    device: str = ""
    precision: str = ""
    model: str = ""
    adapter_type: str = ""
    trainable_params: int = 0
    dataset_size: int = 0
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    log_total: int = 0             # lines ever appended (the log view tails by this counter)
    problems: list[Problem] = field(default_factory=list)
    checkpoints: list[CheckpointSaved] = field(default_factory=list)
    finished: RunFinished | None = None
    version: int = 0

    @property
    def active(self) -> bool:
        return self.finished is None and not self.read_only

    def log_since(self, seen_total: int) -> list[tuple[str, str]]:
        """(level, text) lines appended after ``seen_total`` lines (as many as are kept)."""
        new = self.log_total - seen_total
        return list(self.log)[-min(new, len(self.log)):] if new > 0 else []

    def add_log(self, text: str, level: str = "info") -> None:
        self.log.append((level, text))
        self.log_total += 1
        self.version += 1

    def apply(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, RunStarted):
            self.status = "running"
            self.run_dir = event.run_dir
            self.total_steps, self.total_epochs = event.total_steps, event.total_epochs
            self.step, self.epoch = event.start_step, event.start_epoch
            self.device, self.precision = event.device, event.precision
            self.model, self.adapter_type = event.model, event.adapter_type
            self.trainable_params, self.dataset_size = event.trainable_params, event.dataset_size
            note = f" (resumed from {event.resumed_from})" if event.resumed_from else ""
            self.add_log(f"training {event.adapter_type} on {event.model}: {event.dataset_size} "
                         f"songs, {event.total_steps} steps, {event.device} {event.precision}"
                         + note)
        elif isinstance(event, StepMetrics):
            self.steps.append(event.step)
            self.losses.append(event.loss)
            self.lrs.append(event.lr)
            self.step, self.epoch = event.step, event.epoch
            self.epoch_progress = event.epoch_progress
            self.samples_per_sec, self.eta_seconds = event.samples_per_sec, event.eta_seconds
            self.grad_norm = event.grad_norm
            if math.isfinite(event.loss) and (self.best_loss is None
                                              or event.loss < self.best_loss):
                self.best_loss, self.best_step = event.loss, event.step
        elif isinstance(event, EpochEnded):
            self.epoch = event.epoch
            self.epoch_progress = 1.0
            self.add_log(f"epoch {event.epoch} done: mean loss {event.mean_loss:.4f} "
                         f"({event.seconds:.1f} s)")
        elif isinstance(event, CheckpointSaved):
            self.checkpoints.append(event)
            self.add_log(f"saved {event.kind} checkpoint: {event.path}")
        elif isinstance(event, RunPaused):
            self.status = "paused"  # the engine's own "paused" log line follows
        elif isinstance(event, RunResumed):
            self.status = "running"
        elif isinstance(event, LogLine):
            self.add_log(event.message, event.level)
        elif isinstance(event, Problem):
            self.problems.append(event)
            text = event.message + (f" — try: {event.remedy}" if event.remedy else "")
            self.add_log(text, "error" if event.fatal else "warning")
        elif isinstance(event, RunFinished):
            self.finished = event
            self.status = event.status
            self.add_log(f"run {event.status}" + (f": {event.error}" if event.error else ""),
                         "error" if event.status == "failed" else "info")

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> "RunState":
        """A read-only state rebuilt from a finished (or interrupted) run's events."""
        state = cls(run_dir=str(run_dir), title=Path(run_dir).name, read_only=True)
        for event in read_events(Path(run_dir) / "events.jsonl"):
            state.apply(event)
        if state.finished is None:
            state.status = "interrupted" if state.steps else "unknown"
        return state


def smooth(values: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average, debiased at the start (like TensorBoard's smoothing)."""
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(out[-1] if out else v)
            continue
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out
