"""Commands into a running engine: stop-and-save, pause, resume, save-now.

Thread-safe; the trainer checks it every micro-batch. Signal handlers and the TUI call it.
"""

from __future__ import annotations

import threading


class Control:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._save_now = threading.Event()
        self._running = threading.Event()
        self._running.set()  # not paused
        self.stop_reason = ""

    # -- commands ------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop at the next micro-batch and save a checkpoint first."""
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self._running.set()  # a paused run must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def save_now(self) -> None:
        self._save_now.set()

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

    def wait_while_paused(self, poll: float = 0.2) -> bool:
        """Block while paused; returns True if the run was paused at all."""
        was = self.paused
        while not self._running.wait(poll):
            pass
        return was
