"""Where events go. The ``EventBus`` hands events to sinks on its own thread, so a slow sink
(a busy terminal, a network filesystem) never stalls training, and a sink that raises is switched
off with a note instead of killing the run."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Protocol

from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, StepMetrics, to_json)
from sidestep.engine.run_dir import resume_command

log = logging.getLogger("sidestep.engine")


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


class QueueSink:
    """For the TUI: events land in a queue the app drains on a timer."""

    def __init__(self, q: "queue.SimpleQueue | None" = None):
        self.queue = q if q is not None else queue.SimpleQueue()

    def handle(self, event: Event) -> None:
        self.queue.put(event)

    def close(self) -> None:
        pass


class CallbackSink:
    def __init__(self, fn):
        self.fn = fn

    def handle(self, event: Event) -> None:
        self.fn(event)

    def close(self) -> None:
        pass


class JsonlSink:
    """``events.jsonl``: one JSON object per line, flushed per line, fsynced on close."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")

    def handle(self, event: Event) -> None:
        self.fh.write(to_json(event) + "\n")
        self.fh.flush()
        if isinstance(event, RunFinished):
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
        finally:
            self.fh.close()


class TensorBoardSink:
    """Scalars ``loss/train`` and ``lr`` every ``log_every`` steps, ``grad_norm/...`` when the
    engine computed them (every ``log_heavy_every`` steps); ``loss/epoch`` and ``loss/val`` (with
    a validation split) at each epoch's end."""

    def __init__(self, log_dir: Path, log_every: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.log_every = max(1, int(log_every))

    def handle(self, event: Event) -> None:
        if isinstance(event, EpochEnded):
            if event.val_loss is not None:
                self.writer.add_scalar("loss/val", event.val_loss, event.step)
            self.writer.add_scalar("loss/epoch", event.mean_loss, event.step)
            return
        if not isinstance(event, StepMetrics):
            if isinstance(event, RunFinished):
                self.writer.flush()
            return
        if event.layer_grad_norms:
            for name, value in event.layer_grad_norms.items():
                self.writer.add_scalar(f"grad_norm/{name}", value, event.step)
        if event.step % self.log_every == 0 or event.step == 1:
            self.writer.add_scalar("loss/train", event.loss, event.step)
            self.writer.add_scalar("lr", event.lr, event.step)
            if event.weighted_loss is not None:
                self.writer.add_scalar("loss/weighted", event.weighted_loss, event.step)
            if event.grad_norm is not None:
                self.writer.add_scalar("grad_norm/total", event.grad_norm, event.step)

    def close(self) -> None:
        self.writer.close()


class RecordSink:
    """The run's milestones as lines of its ``sidestep.log`` (the file only: the console and
    the app show them as events), so the log alone tells how a run went and where it can
    resume, also when the terminal that showed it is gone."""

    FILE_ONLY = {"file_only": True}  # LogToEvents passes these by

    def __init__(self, log_every: int, mode: str | None = None):
        self.log_every = max(1, int(log_every))
        self.mode = mode  # for the resume command it writes
        self.record = logging.getLogger("sidestep.run")

    def handle(self, event: Event) -> None:
        line = None
        if isinstance(event, StepMetrics) and (event.step % self.log_every == 0
                                               or event.step == 1):
            line = f"step {event.step} (epoch {event.epoch}): loss {event.loss:.4f}, " \
                   f"lr {event.lr:.3g}"
        elif isinstance(event, EpochEnded):
            line = f"epoch {event.epoch} ended at step {event.step}: mean loss " \
                   f"{event.mean_loss:.4f}" + (f", validation {event.val_loss:.4f}"
                                               if event.val_loss is not None else "") + \
                   event.best_note()
        elif isinstance(event, CheckpointSaved):
            line = event.line()
        elif isinstance(event, RunFinished):
            # epochs done, not the one in progress ("step 2 (epoch 1)" above ended "epoch 0")
            done = f"{event.epoch} epoch{'' if event.epoch == 1 else 's'} done"
            line = f"run {event.status} at step {event.step} ({done})" + \
                (f": {event.error}" if event.error else "")
            if event.status != "completed" and event.checkpoint_path:
                line += f"; resume with: {resume_command(event.checkpoint_path, self.mode)}"
        if line:
            self.record.info(line, extra=self.FILE_ONLY)

    def close(self) -> None:
        pass


_STOP = object()


class EventBus:
    """Fans events out to sinks from a background thread."""

    def __init__(self, sinks: list[Sink] | None = None):
        self.sinks: list[Sink] = list(sinks or [])
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._pump, name="sidestep-events", daemon=True)
        self._thread.start()
        self._closed = False

    def add(self, sink: Sink) -> None:
        self._queue.put(("add", sink))

    def emit(self, event: Event) -> None:
        if not self._closed:
            self._queue.put(event)

    def _pump(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, tuple) and item and item[0] == "add":
                self.sinks.append(item[1])
                continue
            for sink in list(self.sinks):
                try:
                    sink.handle(item)
                except Exception as exc:  # a broken sink is dropped, the run goes on
                    self.sinks.remove(sink)
                    log.warning("event sink %s failed and was switched off: %s",
                                type(sink).__name__, exc)
                    note = Problem(kind="sink", message=f"{type(sink).__name__} stopped: {exc}")
                    for other in self.sinks:
                        try:
                            other.handle(note)
                        except Exception:
                            pass

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, then close every sink."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.warning("closing %s failed: %s", type(sink).__name__, exc)


# Library notices that say nothing a user can act on: kept in the log file, not shown as
# warnings. (logger name prefix, words in the message)
QUIET = (("bitsandbytes", "No module named 'kernels'"),)


# Library notices in the library's terms, said in ours: (logger name prefix, pattern, words).
REWORDED = (
    ("LyCORIS", re.compile(r"lora_dim (\d+) is too large for dim=(\d+) and factor=(-?\d+), "
                           r"using full matrix mode\.?"),
     r"--lokr-linear-dim \1 is large for a \2-wide layer (--lokr-factor \3): LyCORIS trains "
     r"that Kronecker factor as a full matrix instead of a low-rank pair (more parameters)"),
)


def in_our_words(logger: str, message: str) -> str:
    for name, pattern, words in REWORDED:
        if logger.startswith(name) and pattern.search(message):
            return pattern.sub(words, message)
    return message


def _level(record: logging.LogRecord, message: str) -> str:
    if any(record.name.startswith(name) and words in message for name, words in QUIET):
        return "debug"
    return record.levelname.lower()


class LogToEvents(logging.Handler):
    """Routes Python logging (ours, libraries', captured warnings) to ``LogLine`` events."""

    def __init__(self, bus: EventBus, level: int = logging.INFO):
        super().__init__(level)
        self.bus = bus
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False) or getattr(record, "file_only", False):
            return  # never recurse through our own logging; RecordSink's lines are the file's
        self._local.busy = True
        try:
            msg = in_our_words(record.name, record.getMessage())
            if record.name == "py.warnings":
                msg = msg.strip().splitlines()[0] if msg.strip() else msg
            self.bus.emit(LogLine(message=msg, level=_level(record, msg), source=record.name))
        except Exception:
            pass
        finally:
            self._local.busy = False


def jsonable(obj) -> object:
    return json.loads(json.dumps(obj, default=str))
