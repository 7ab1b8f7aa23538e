"""stdout and stderr that survive the terminal or pipe going away.

Over SSH the terminal can vanish mid-run (writes then fail with EIO), and ``| head`` or ``| tee``
can close the pipe (EPIPE). Either must not kill a training loop or end a command in a
traceback: the first failed write points the file descriptor at /dev/null (so later writes, and
the interpreter's final flush, succeed quietly), and the listeners are told once, so a run can
stop and save. The log file in the run folder keeps everything.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, TextIO

from sidestep.devnull import send_to_devnull


class GuardedStream:
    """Wraps a text stream; every other attribute (isatty, fileno, encoding, ...) passes
    through, so Rich and print treat it as the real thing."""

    def __init__(self, stream: TextIO, on_lost: Callable[[str], None]):
        self._stream = stream
        self._on_lost = on_lost
        self.lost = False

    def write(self, text: str) -> int:
        if self.lost:
            return len(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self._lose(exc)
            return len(text)

    def flush(self) -> None:
        if self.lost:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._lose(exc)

    def isatty(self) -> bool:
        if self.lost:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def _lose(self, exc: BaseException) -> None:
        self.lost = True
        try:  # later writes to the descriptor (C code, the final flush) go nowhere, quietly
            send_to_devnull(self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        try:  # drop what is buffered for the dead descriptor
            self._stream.flush()
        except (OSError, ValueError):
            pass
        name = str(getattr(self._stream, "name", "output")).strip("<>")
        self._on_lost(f"{name} went away: {getattr(exc, 'strerror', None) or exc}")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class OutputGuard:
    """Installs guarded ``sys.stdout``/``sys.stderr`` and tells listeners when output is lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self.lost_reason: str | None = None

    def install(self) -> "OutputGuard":
        for name in ("stdout", "stderr"):
            if getattr(sys, name) is None:  # started with it closed (`>&-`): Python gives None
                setattr(sys, name, open(os.devnull, "w"))  # and writes go nowhere, quietly
        if not isinstance(sys.stdout, GuardedStream) and sys.stdout is not None:
            sys.stdout = GuardedStream(sys.stdout, self._lost)
        if not isinstance(sys.stderr, GuardedStream) and sys.stderr is not None:
            sys.stderr = GuardedStream(sys.stderr, self._lost)
        return self

    def uninstall(self) -> None:
        if isinstance(sys.stdout, GuardedStream):
            sys.stdout = sys.stdout._stream
        if isinstance(sys.stderr, GuardedStream):
            sys.stderr = sys.stderr._stream
        with self._lock:
            self.lost_reason = None

    def listen(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(fn)
            reason = self.lost_reason
        if reason is not None:
            fn(reason)

    def forget(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _lost(self, reason: str) -> None:
        with self._lock:
            first = self.lost_reason is None
            if first:
                self.lost_reason = reason
            listeners = list(self._listeners)
        if first:
            for fn in listeners:
                try:
                    fn(reason)
                except Exception:
                    pass


GUARD = OutputGuard()
