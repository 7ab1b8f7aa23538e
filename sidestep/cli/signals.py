"""Ctrl+C, SIGTERM and a hung-up terminal, for commands that stop cleanly (training,
preprocessing): the first asks the work to stop at a safe point, another exits at once."""

from __future__ import annotations

import os
import signal
import threading
import time

from sidestep.cli import EXIT_STOPPED


class SignalStop:
    """First signal: stop and save. Another, later: leave at once.

    The handler does no I/O: the terminal may be gone (SIGHUP), and a failed write raised
    inside the handler would end the training loop it interrupted. It sets the stop request
    and queues a notice for the event thread (``SimpleQueue.put`` is reentrant).

    One event can arrive as two signals: a hung-up terminal sends SIGHUP to the process group
    and ``uv run`` forwards its own copy, so a repeat of the same signal within
    ``DUPLICATE_SECONDS`` is the same request, and SIGHUP never means "exit at once" (no one
    is there to mean it)."""

    DUPLICATE_SECONDS = 1.0

    NOTICE = "{name}: stopping at the next micro-batch and saving a checkpoint{again}"
    # What "{again}" says: a repeat within DUPLICATE_SECONDS is the same request, and a hung-up
    # terminal has no one to send another.
    AGAIN = "; send it again, a second or more later, to exit at once"

    def __init__(self, control, announce=None, notice: str | None = None):
        self.control = control
        self.notice = notice or self.NOTICE
        self.announce = announce or (lambda message: None)
        self.count = 0
        self.previous = {}
        self._last: tuple[int, float] | None = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        now = time.monotonic()
        last, self._last = self._last, (signum, now)
        if self.count and (signum == getattr(signal, "SIGHUP", None) or (
                last is not None and last[0] == signum
                and now - last[1] < self.DUPLICATE_SECONDS)):
            return  # the same request again, not a second one
        self.count += 1
        if self.count >= 2:
            os._exit(EXIT_STOPPED)  # what was saved is complete: writes are atomic
        name = signal.Signals(signum).name
        self.control.request_stop(f"{name} received")
        again = "" if signum == getattr(signal, "SIGHUP", None) else self.AGAIN
        self.announce(self.notice.format(name=name, again=again))

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class CancelBetweenUnits:
    """For commands that stop cleanly between units of work (songs, batches): a signal, or
    stdout/stderr going away (a closed pipe, a hung-up terminal), sets ``cancel``; the signal
    handler's notices wait in ``notices`` for the next progress line (``show_notices``)."""

    def __init__(self, notice: str):
        self.cancel = threading.Event()
        self.notices: list[str] = []
        self.output_lost = False
        self._signals = SignalStop(self, self.notices.append, notice=notice)

    def request_stop(self, reason: str) -> None:  # SignalStop's control interface
        self.cancel.set()

    def _lost(self, reason: str) -> None:
        self.output_lost = True
        self.cancel.set()

    def show_notices(self, out) -> None:
        while self.notices:
            out.warn(self.notices.pop(0))

    def __enter__(self) -> "CancelBetweenUnits":
        from sidestep.cli.streams import GUARD

        GUARD.listen(self._lost)
        self._signals.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        from sidestep.cli.streams import GUARD

        self._signals.__exit__(*exc)
        GUARD.forget(self._lost)
        return False
