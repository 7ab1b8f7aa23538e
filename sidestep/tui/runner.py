"""The App's one training engine: a thread worker attached to the App (never to a Screen, whose
workers die when it is popped), events through a queue the App drains on a timer."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from sidestep.engine.control import Control
from sidestep.engine.sinks import QueueSink
from sidestep.tui.state import RunState

MAX_EVENTS_PER_TICK = 2000


def default_engine(config, sinks, control):
    from sidestep.engine.trainer import Trainer

    return Trainer(config, sinks, control)


class EngineRunner:
    def __init__(self, app, factory: Callable[..., Any] | None = None):
        self.app = app
        self.factory = factory or default_engine
        self.state: RunState | None = None
        self.control: Control | None = None
        self.config = None
        self.worker = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.done = threading.Event()
        self.done.set()

    @property
    def active(self) -> bool:
        return not self.done.is_set()

    def start(self, config) -> RunState:
        if self.active:
            raise RuntimeError("a training run is already active")
        self.config = config
        self.control = Control()
        self._queue = queue.SimpleQueue()
        self.state = RunState(run_dir=str(config.output_dir), title=str(config.output_dir))
        self.state.add_log(f"starting {config.mode} training: loading libraries and the model")
        self.done.clear()
        sink = QueueSink(self._queue)
        control = self.control

        def work():
            try:
                engine = self.factory(config, [sink], control)
                return engine.run()
            finally:
                self.done.set()

        self.worker = self.app.run_worker(work, thread=True, group="engine", name="training",
                                          exit_on_error=False, exclusive=False)
        return self.state

    def drain(self) -> int:
        """Fold queued events into the state (UI thread). Returns how many were applied."""
        if self.state is None:
            return 0
        n = 0
        while n < MAX_EVENTS_PER_TICK:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self.state.apply(event)
            n += 1
        return n

    # -- commands ------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped from the app") -> None:
        if self.control and self.active:
            self.control.request_stop(reason)
            if self.state:
                self.state.status = "stopping"
                self.state.add_log("stopping: saving a checkpoint at the next micro-batch")

    def pause(self) -> None:
        if self.control and self.active:
            self.control.pause()
            if self.state:
                self.state.add_log("pausing at the next micro-batch")

    def resume(self) -> None:
        if self.control and self.active:
            self.control.resume()

    def save_now(self) -> None:
        if self.control and self.active:
            self.control.save_now()
            if self.state:
                # a paused engine wakes to save at once (Control.wait_while_paused)
                self.state.add_log("saving a checkpoint now" if self.state.status == "paused"
                                   else "saving a checkpoint at the next micro-batch")

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)
