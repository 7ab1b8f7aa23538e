"""What History, the dashboard and ``sidestep runs`` need from an ``events.jsonl``, read
incrementally: a 10-hour run's file holds ~100,000 step lines, and the dashboard looks at live
runs every few seconds; each look reads only the bytes appended since the last one.

Step lines are recognised by their prefix and parsed for their loss only when it can lower
the best, so a new file costs one pass of text and a few json.loads per kept line.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from sidestep.engine.events import RunFinished, parse_line

_STEP = '{"type": "step"'
_PAUSE = ('{"type": "paused"', '{"type": "resumed"')
_STARTED = '{"type": "run_started"'
_EPOCH = '{"type": "epoch_end"'
_FINISHED = '{"type": "run_finished"'
_KEPT = 256  # digests cached (History lists at most a few hundred runs)
_HEAD = 256  # bytes compared to tell an appended file from a rewritten one


@dataclass
class Digest:
    best_loss: float | None = None
    epochs_done: int = 0           # the highest epoch_end seen
    last_step: int = 0             # the highest step seen
    finished: list[RunFinished] = field(default_factory=list)
    started_line: str = ""         # the newest run_started, as written
    step_line: str = ""            # the newest step
    pause_line: str = ""           # the newest paused/resumed after the newest run_started
    # where reading stopped: file identity, its first bytes (a file rewritten in place is
    # read again), offset, and an unfinished last line
    _ident: tuple = ()
    _head: bytes = b""
    _offset: int = 0
    _tail: bytes = b""

    def _take(self, line: str) -> None:
        if line.startswith(_STEP):
            data = json_object(line)
            step, loss = data.get("step"), data.get("loss")
            if isinstance(step, int):
                self.last_step = max(self.last_step, step)
                self.step_line = line
            if isinstance(loss, (int, float)) and not math.isnan(loss) and \
                    (self.best_loss is None or loss < self.best_loss):
                self.best_loss = float(loss)
        elif line.startswith(_PAUSE):
            self.pause_line = line
        elif line.startswith(_STARTED):
            self.started_line, self.pause_line = line, ""
        elif line.startswith(_EPOCH):
            epoch = json_object(line).get("epoch")
            if isinstance(epoch, int):
                self.epochs_done = max(self.epochs_done, epoch)
        elif line.startswith(_FINISHED):
            event = parse_line(line)
            if isinstance(event, RunFinished):
                self.finished.append(event)


def json_object(line: str) -> dict:
    """A line's JSON object ({} for a blank, torn or non-object line)."""
    if not line:
        return {}
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


_cache: OrderedDict[str, Digest] = OrderedDict()
_lock = threading.Lock()


def digest(path: Path) -> Digest:
    """The digest of ``path`` as it is now (empty if it cannot be read). Safe from threads."""
    key = str(Path(path).absolute())
    try:
        st = os.stat(key)
    except OSError:
        with _lock:
            _cache.pop(key, None)
        return Digest()
    ident = (st.st_dev, st.st_ino)
    with _lock:
        d = _cache.pop(key, None) or Digest()
        try:
            with open(key, "rb") as fh:
                head = fh.read(_HEAD)
                if d._ident != ident or st.st_size < d._offset or not (
                        head.startswith(d._head) or d._head.startswith(head)):
                    d = Digest(_ident=ident)  # new, replaced or rewritten: from the start
                d._head = head
                fh.seek(d._offset)
                chunk = fh.read()
        except OSError:
            return Digest()
        _cache[key] = d
        while len(_cache) > _KEPT:
            _cache.popitem(last=False)
        if chunk:
            d._offset += len(chunk)
            lines = (d._tail + chunk).split(b"\n")
            d._tail = lines.pop()  # a line still being written waits for its newline
            for raw in lines:
                d._take(raw.decode("utf-8", errors="replace"))
        return d
