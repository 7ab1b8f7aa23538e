"""Commands into a running engine: stop-and-save, pause, resume, save-now.

Thread-safe; the trainer checks it every micro-batch. Signal handlers and the TUI call it.
"""

from __future__ import annotations

import threading
from typing import Callable


class Control:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._save_now = threading.Event()
        self._running = threading.Event()
        self._running.set()  # not paused
        # Set by every command, so a paused engine wakes at once (to save, resume or stop).
        self._wake = threading.Event()
        self.stop_reason = ""

    # -- commands ------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop at the next micro-batch and save a checkpoint first."""
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self._running.set()  # a paused run must wake up to stop
        self._wake.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        self._wake.set()

    def save_now(self) -> None:
        self._save_now.set()
        self._wake.set()

    # -- queries -------------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def take_save_request(self) -> bool:
        if self._save_now.is_set():
            self._save_now.clear()
            return True
        return False

    def wait_for_command(self, timeout: float) -> None:
        """Sleep until the next command or ``timeout`` (a paused rank 0 keeps its peers
        posted in between)."""
        self._wake.wait(timeout)
        self._wake.clear()

    def wait_while_paused(self, poll: float = 0.2,
                          on_save: Callable[[], object] | None = None) -> bool:
        """Block while paused; returns True if the run was paused at all. With ``on_save``, a
        save request made during the pause runs it at once (on this thread) instead of waiting
        for the resume."""
        was = self.paused
        while True:
            # clear before checking: a command arriving after the checks sets it again
            self._wake.clear()
            if on_save is not None and self.take_save_request():
                on_save()
            if not self.paused:
                return was
            self._wake.wait(poll)
