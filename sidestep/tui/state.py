"""What the monitor shows about a run, folded from engine events on the UI thread.

Plain Python (no Textual), so it can be built from a live queue or from an old run's
``events.jsonl`` alike. ``version`` increases on every change: widgets redraw at a fixed rate
and only when it moved.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, RunPaused, RunResumed, RunStarted,
                                    SampleWritten, StepMetrics, read_events)

LOG_LIMIT = 5000


@dataclass(frozen=True)
class EarlierSteps:
    """What the attempts before a resume trained, up to the checkpoint it resumes from: the
    charts show the whole run, not only what this attempt adds."""

    steps: list[int]
    losses: list[float]
    lrs: list[float]
    val_losses: dict[int, tuple[int, float]]

    @classmethod
    def of(cls, run_dir: Path | str, checkpoint: Path | str) -> "EarlierSteps | None":
        """From the run's ``events.jsonl`` (None when it has none). Reads files: call it off
        the UI thread."""
        from sidestep.engine.checkpointing import MARKER

        try:
            upto = int((Path(checkpoint) / MARKER).read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        by_step: dict[int, StepMetrics] = {}  # a step trained twice (kill -9): the last one
        vals: dict[int, tuple[int, float]] = {}
        for event in read_events(Path(run_dir) / "events.jsonl"):
            if isinstance(event, StepMetrics) and event.step <= upto:
                by_step[event.step] = event
            elif isinstance(event, EpochEnded) and event.val_loss is not None \
                    and event.step <= upto:
                vals[event.epoch] = (event.step, float(event.val_loss))
        if not by_step:
            return None
        order = sorted(by_step)
        return cls(order, [by_step[k].loss for k in order], [by_step[k].lr for k in order],
                   vals)


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
    epoch: int = 0                      # the epoch in progress (1-based) while training
    epochs_done: int = 0                # completed epochs, what History and `runs` count
    total_epochs: int = 0
    epoch_progress: float = 0.0
    samples_per_sec: float | None = None
    eta_seconds: float | None = None
    grad_norm: float | None = None
    best_step: int | None = None
    best_loss: float | None = None
    device: str = ""
    precision: str = ""
    world_size: int = 1       # data-parallel processes
    model: str = ""
    adapter_type: str = ""
    mode: str | None = None   # fixed, vanilla, selective (for the resume command)
    trainable_params: int = 0
    dataset_size: int = 0
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    log_total: int = 0             # lines ever appended (the log view tails by this counter)
    problems: list[Problem] = field(default_factory=list)
    checkpoints: list[CheckpointSaved] = field(default_factory=list)
    # Validation (--val-split): epoch -> (step it ended at, val loss); a resumed run that
    # repeats an epoch replaces its point.
    val_losses: dict[int, tuple[int, float]] = field(default_factory=dict)
    best_val_epoch: int | None = None   # the epoch that last wrote best/adapter on val loss
    samples: list[SampleWritten] = field(default_factory=list)  # oldest first, one per path
    sample_every: int = 0               # sample_every_n_epochs of the run's config
    finished: RunFinished | None = None
    version: int = 0
    # The text of a line made from an event that the engine also logs right after it (the
    # sample line): that LogLine is not shown twice.
    _echo: str | None = field(default=None, repr=False, compare=False)

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

    @property
    def val_series(self) -> tuple[list[int], list[float]]:
        """(steps, val losses) in step order, for the loss chart."""
        points = sorted(self.val_losses.values())
        return [p[0] for p in points], [p[1] for p in points]

    def apply(self, event: Event | EarlierSteps) -> None:
        self.version += 1
        if isinstance(event, EarlierSteps):
            self.steps[:0], self.losses[:0], self.lrs[:0] = event.steps, event.losses, \
                event.lrs
            self.val_losses = {**event.val_losses, **self.val_losses}
            finite = [(loss, step) for step, loss in zip(event.steps, event.losses)
                      if math.isfinite(loss)]
            if finite:
                loss, step = min(finite)
                if self.best_loss is None or loss < self.best_loss:
                    self.best_loss, self.best_step = loss, step
            return
        if not isinstance(event, (LogLine, SampleWritten)):
            self._echo = None
        if isinstance(event, RunStarted):
            self.status = "running"
            self.run_dir = event.run_dir
            self.total_steps, self.total_epochs = event.total_steps, event.total_epochs
            self.step, self.epoch = event.start_step, event.start_epoch
            self.epochs_done = event.start_epoch
            self.device, self.precision = event.device, event.precision
            self.mode = event.config.get("mode")
            self.world_size = event.world_size
            self.model, self.adapter_type = event.model, event.adapter_type
            self.trainable_params, self.dataset_size = event.trainable_params, event.dataset_size
            try:
                self.sample_every = int((event.config or {}).get("sample_every_n_epochs") or 0)
            except (TypeError, ValueError, AttributeError):
                self.sample_every = 0
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
            self.epoch = self.epochs_done = event.epoch
            self.epoch_progress = 1.0
            val = ""
            if event.val_loss is not None:
                self.val_losses[event.epoch] = (event.step, float(event.val_loss))
                val = f", val loss {event.val_loss:.4f}"
                if event.best:
                    self.best_val_epoch = event.epoch
            val += event.best_note("; saved best/adapter")
            self.add_log(f"epoch {event.epoch} done: mean loss {event.mean_loss:.4f}{val} "
                         f"({event.seconds:.1f} s)")
        elif isinstance(event, SampleWritten):
            # A resumed run that renders an epoch again replaces the older entry.
            self.samples = [s for s in self.samples if s.path != event.path] + [event]
            line = _sample_line(event)
            self.add_log(line)
            self._echo = line
        elif isinstance(event, CheckpointSaved):
            self.checkpoints.append(event)
            self.add_log(event.line())
        elif isinstance(event, RunPaused):
            self.status = "paused"  # the engine's own "paused" log line follows
        elif isinstance(event, RunResumed):
            self.status = "running"
        elif isinstance(event, LogLine):
            if self._echo is not None and event.message == self._echo:
                self._echo = None  # the engine's log line for the event just shown
                return
            self.add_log(event.message, event.level)
        elif isinstance(event, Problem):
            self.problems.append(event)
            text = event.message + (f" — try: {event.remedy}" if event.remedy else "")
            self.add_log(text, "error" if event.fatal else "warning")
        elif isinstance(event, RunFinished):
            self.finished = event
            self.status = event.status
            self.add_log(f"run {event.status}" + (f": {event.error}" if event.error else "")
                         + (f" ({event.reason})" if event.reason else ""),
                         "error" if event.status == "failed" else "info")
            if event.status != "completed" and event.checkpoint_path:
                from sidestep.engine.run_dir import resume_command

                self.add_log(f"it resumes from {Path(event.checkpoint_path).name}: History, "
                             f"then R; or {resume_command(event.checkpoint_path, self.mode)}")

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> "RunState":
        """A read-only state rebuilt from a finished (or interrupted) run's events."""
        state = cls(run_dir=str(run_dir), title=Path(run_dir).name, read_only=True)
        for event in read_events(Path(run_dir) / "events.jsonl"):
            state.apply(event)
        if state.finished is None:
            state.status = "interrupted" if state.steps else "unknown"
        return state


def samples_of_run(run_dir: Path | str) -> list[SampleWritten]:
    """An old run's audio samples, oldest first: its ``events.jsonl`` sample events, then any
    ``samples/*.wav`` none of them names (bare paths, as events with what a file tells).
    Reads files: call it from a worker."""
    run_dir = Path(run_dir)
    found: dict[str, SampleWritten] = {}
    for event in read_events(run_dir / "events.jsonl"):
        if isinstance(event, SampleWritten):
            found[event.path] = event
    named = {Path(p).name for p in found}
    try:
        files = sorted((run_dir / "samples").glob("*.wav"),
                       key=lambda f: (len(f.stem), f.stem))  # epoch-9 before epoch-10
    except OSError:
        files = []
    out = sorted(found.values(), key=lambda e: (e.epoch, e.time))
    for f in files:
        if f.name not in named:
            out.append(sample_from_path(f))
    return out


def sample_from_path(path: Path | str) -> SampleWritten:
    """A ``SampleWritten`` for a bare file: its epoch from an ``epoch-N`` name, the rest
    unknown (seed -1, duration 0, time 0)."""
    match = re.search(r"epoch[-_]?(\d+)", Path(path).stem) or re.search(r"(\d+)",
                                                                       Path(path).stem)
    return SampleWritten(path=str(path), epoch=int(match.group(1)) if match else 0, step=0,
                         prompt="", lyrics="", seed=-1, duration=0.0, time=0.0)


def _sample_line(event: SampleWritten) -> str:
    # The engine's own wording (trainer._sample logs it after the event), so the echo matches.
    return f"sample for epoch {event.epoch}: {event.path} ({event.seconds:.1f} s to render)"


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
