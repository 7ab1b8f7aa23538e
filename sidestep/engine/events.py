"""What the training engine reports, as small frozen records.

Every event has a ``type`` (the name written to ``events.jsonl``) and a wall-clock ``time``.
The same records feed the TUI (through a queue), ``events.jsonl``, TensorBoard and the headless
console, so all of them see one truth.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    type = "event"

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type}
        out.update(dataclasses.asdict(self))
        return out


@dataclass(frozen=True)
class RunStarted(Event):
    type = "run_started"
    run_dir: str
    config: Mapping[str, Any]
    device: str
    precision: str
    model: str
    adapter_type: str
    trainable_params: int
    dataset_size: int
    steps_per_epoch: int
    total_steps: int
    total_epochs: int
    start_step: int = 0
    start_epoch: int = 0
    resumed_from: str | None = None
    world_size: int = 1        # data-parallel processes (devices x nodes)
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class StepMetrics(Event):
    type = "step"
    step: int
    epoch: int                 # 1-based epoch the step belongs to
    loss: float                # true mean flow-matching MSE over the step's micro-batches
    lr: float
    grad_norm: float | None = None
    samples_per_sec: float | None = None
    eta_seconds: float | None = None
    epoch_progress: float = 0.0  # 0..1 within the epoch
    weighted_loss: float | None = None  # the optimised objective when min-SNR weighting is on
    layer_grad_norms: Mapping[str, float] | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class EpochEnded(Event):
    type = "epoch_end"
    epoch: int
    step: int
    mean_loss: float
    seconds: float
    val_loss: float | None = None      # with --val-split: fixed timesteps and noise per epoch
    best: bool = False                 # this epoch wrote best/adapter
    # what best/ is chosen by: the validation loss, or without a split the mean training loss
    # of the last epochs (engine.validation.BestTracker), so an epoch whose own mean is worse
    # than an earlier one's can still be the best
    measure: float | None = None
    time: float = field(default_factory=_now)

    def best_note(self, also: str = "") -> str:
        """" (new best ...)" when this epoch wrote best/adapter, in the words of its measure
        (``also`` goes inside the brackets)."""
        if not self.best:
            return ""
        if self.val_loss is not None:
            words = "new best validation loss"
        elif self.measure is None:  # (an events file from before the measure was recorded)
            words = "new best"
        else:
            words = f"new best: recent-epoch mean {self.measure:.4f}"
        return f" ({words}{also})"


@dataclass(frozen=True)
class CheckpointSaved(Event):
    type = "checkpoint"
    path: str
    step: int
    epoch: int
    kind: str = "epoch"        # epoch | step | final
    time: float = field(default_factory=_now)
    # a stop or "save now" at the very place this checkpoint was saved: it stands for the save
    again: bool = False

    def line(self) -> str:
        if self.again:
            return f"{self.path} already holds step {self.step}: nothing new to save"
        if self.kind in ("final", "best"):  # an adapter to use, not a state to resume from
            return f"saved {self.kind} adapter: {self.path}"
        return f"saved {self.kind} checkpoint: {self.path}"


@dataclass(frozen=True)
class SampleWritten(Event):
    """An audio sample rendered with the adapter as it is after ``epoch``."""
    type = "sample"
    path: str                  # samples/epoch-N.wav in the run folder
    epoch: int
    step: int
    prompt: str                # "" when the first training song's condition was used
    lyrics: str
    seed: int
    duration: float            # seconds
    sample_rate: int = 48000
    steps: int = 8
    cfg: float = 1.0
    seconds: float = 0.0       # wall time the render took
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class LogLine(Event):
    type = "log"
    message: str
    level: str = "info"        # debug | info | warning | error
    source: str = "sidestep"
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunPaused(Event):
    """The engine is waiting at a micro-batch boundary for resume, save-now or stop."""
    type = "paused"
    step: int = 0
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunResumed(Event):
    type = "resumed"
    step: int = 0
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Problem(Event):
    type = "problem"
    kind: str                  # nan | oom | data | input | checkpoint | sink | sample | error
    message: str
    remedy: str = ""
    fatal: bool = False
    files: tuple[str, ...] = ()
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunFinished(Event):
    type = "run_finished"
    status: str                # completed | stopped | failed
    step: int = 0
    epoch: int = 0
    adapter_path: str | None = None
    checkpoint_path: str | None = None
    error: str | None = None
    error_kind: str | None = None   # input (bad input, exit 2) | runtime (exit 1)
    best_loss: float | None = None
    seconds: float = 0.0
    reason: str | None = None  # why a run ended early, e.g. early stop
    time: float = field(default_factory=_now)


EVENT_TYPES = {cls.type: cls for cls in (RunStarted, StepMetrics, EpochEnded, CheckpointSaved,
                                          SampleWritten, LogLine, RunPaused, RunResumed, Problem,
                                          RunFinished)}


def to_json(event: Event) -> str:
    return json.dumps(event.to_dict(), default=str, allow_nan=True)


def from_dict(data: Mapping[str, Any]) -> Event | None:
    """Rebuild an event from an ``events.jsonl`` line (None for unknown types)."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if "files" in kwargs and isinstance(kwargs["files"], list):
        kwargs["files"] = tuple(kwargs["files"])
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def read_events(path) -> list[Event]:
    """All parseable events of an ``events.jsonl`` (a torn last line is skipped)."""
    out: list[Event] = []
    try:
        with open(path, encoding="utf-8") as fh:
            out = [e for e in map(parse_line, fh) if e is not None]
    except OSError:
        pass
    return out


def parse_line(line: str | bytes) -> Event | None:
    """One ``events.jsonl`` line as an event (None for a blank, torn or unknown line)."""
    try:
        return from_dict(json.loads(line)) if line.strip() else None
    except (ValueError, AttributeError):
        return None
