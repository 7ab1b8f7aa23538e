"""The App's preprocessing job: one at a time, in a thread worker named ``preprocess``, calling
the same ``preprocess_config`` as ``sidestep preprocess`` and forwarding its events to the
screen that shows them. Cancel, quit and a hung-up terminal all end it between songs; every
file it writes is whole, so nothing needs cleaning up."""

from __future__ import annotations

import logging
import threading

from sidestep.tui.messages import PreprocessFinished, PreprocessNote, PreprocessProgress

WORKER = "preprocess"
log = logging.getLogger("sidestep.tui")


class PreprocessJob:
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
        """Start preprocessing ``config`` for ``screen``; False while another job still runs
        (it may be finishing its current song after a cancel)."""
        if self.active:
            return False
        self.cancel = threading.Event()
        self.ended = threading.Event()
        self.screen = screen
        cancel, ended, post = self.cancel, self.ended, screen.post_message

        def work():
            from sidestep.data.preprocess import preprocess_config

            try:
                return preprocess_config(config, progress=lambda e: post(PreprocessProgress(e)),
                                         cancel=cancel.is_set,
                                         warn=lambda text: post(PreprocessNote(text)))
            finally:
                ended.set()

        self.worker = self.app.run_worker(work, thread=True, name=WORKER, group=WORKER,
                                          exit_on_error=False)
        return True

    def stop(self) -> None:
        self.cancel.set()

    def wait(self, timeout: float) -> bool:
        """Wait for the song under way to be written (the process is about to exit)."""
        return self.ended.wait(timeout)

    def finished(self, worker, failed: bool) -> None:
        """The App's worker handler calls this when the ``preprocess`` worker ends."""
        from sidestep.data.preprocess import input_errors

        if worker is not self.worker or self.screen is None:
            return
        if not failed:
            self.screen.post_message(PreprocessFinished(worker.result, None))
            return
        error = worker.error
        if isinstance(error, input_errors()):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
            log.error("preprocessing failed", exc_info=error)
        self.screen.post_message(PreprocessFinished(None, message))
