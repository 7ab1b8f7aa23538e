"""The App's long jobs besides training: preprocessing and the gradient estimate.

Each runs one at a time in a thread worker named after it, calls the same engine function as
its CLI command, and forwards the engine's events to the screen that shows them as typed
messages. Cancel, quit and a hung-up terminal end a job at its next safe point (between songs,
between batches); what a job writes is whole or absent, so nothing needs cleaning up. The App's
one worker handler calls ``finished`` by the worker's name.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from sidestep.tui.messages import (EstimateFinished, EstimateProgress, PreprocessFinished,
                                   PreprocessNote, PreprocessProgress)

log = logging.getLogger("sidestep.tui")


class ScreenJob:
    WORKER = ""                     # the worker's name, which the App dispatches on
    Finished: Any = None            # message class: (result, error text)

    def __init__(self, app):
        self.app = app
        self.cancel = threading.Event()
        self.ended = threading.Event()
        self.ended.set()
        self.worker = None
        self.screen = None

    @property
    def active(self) -> bool:
        return self.worker is not None and not self.worker.is_finished

    def start(self, config, screen) -> bool:
        """Start the job for ``screen``; False while the previous one still runs (it may be
        finishing its song or batch after a cancel): two never share a folder or a GPU."""
        if self.active:
            return False
        self.cancel, self.ended, self.screen = threading.Event(), threading.Event(), screen
        cancel, ended, post = self.cancel, self.ended, screen.post_message

        def work():
            try:
                return self.run(config, post, cancel.is_set)
            finally:
                ended.set()

        self.worker = self.app.run_worker(work, thread=True, name=self.WORKER,
                                          group=self.WORKER, exit_on_error=False)
        return True

    def run(self, config, post: Callable, cancelled: Callable[[], bool]):
        raise NotImplementedError

    def input_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def stop(self) -> None:
        self.cancel.set()

    def wait(self, timeout: float) -> bool:
        """Wait for the job to reach its safe point (the process is about to exit)."""
        return self.ended.wait(timeout)

    def finished(self, worker, failed: bool) -> None:
        if worker is not self.worker or self.screen is None:
            return
        if not failed:
            self.screen.post_message(self.Finished(worker.result, None))
            return
        error = worker.error
        if isinstance(error, self.input_errors()):
            message = str(error)
        else:  # a bug or the environment: the log keeps the traceback
            message = f"{type(error).__name__}: {error}"
            log.error("%s failed", self.WORKER, exc_info=error)
        self.screen.post_message(self.Finished(None, message))


class PreprocessJob(ScreenJob):
    WORKER = "preprocess"
    Finished = PreprocessFinished

    def run(self, config, post, cancelled):
        from sidestep.data.preprocess import preprocess_config

        return preprocess_config(config, progress=lambda e: post(PreprocessProgress(e)),
                                 cancel=cancelled, warn=lambda text: post(PreprocessNote(text)))

    def input_errors(self):
        from sidestep.data.preprocess import input_errors

        return input_errors()


class EstimateJob(ScreenJob):
    WORKER = "estimate"
    Finished = EstimateFinished

    def run(self, config, post, cancelled):
        from sidestep.engine.estimate import estimate

        return estimate(config, progress=lambda e: post(EstimateProgress(e)), cancel=cancelled,
                        with_app=True)

    def input_errors(self):
        from sidestep.engine.trainer import input_error_types

        return input_error_types()
