"""Preprocessing progress: the two passes, per-file progress and ETA, cancel, and, when it
ends, "Train on these" (the spec's flow chaining). The work runs in the App's ``preprocess``
worker and reaches this screen as typed messages carrying the engine's own events."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, ProgressBar, RichLog, Static

from sidestep.engine.describe import fmt_duration
from sidestep.tui.messages import PreprocessFinished, PreprocessNote, PreprocessProgress
from sidestep.tui.widgets.wrapped_log import WrappedLog

PASSES = {"encode": "Pass 1 of 2: VAE and text encoder",
          "condition": "Pass 2 of 2: condition encoder"}


class PreprocessScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c,C", "cancel", "Cancel", key_display="C"),
        Binding("t,T", "train", "Train on these", key_display="T"),
    ]

    def __init__(self, config, *, start: bool = True):
        super().__init__()
        self.config = config
        self.start = start          # False: a snapshot feeds it events by hand
        self.result = None
        self.last_event = None      # the engine's latest PreprocessEvent
        self.finished = False
        self.cancelling = False

    def compose(self) -> ComposeResult:
        c = self.config
        source = c.dataset_json or c.audio_dir
        yield Header()
        with Vertical(id="pp-body"):
            yield Label(f"Preprocessing {source}", id="pp-title", markup=False)
            yield Static(f"into {c.tensor_output}  ·  model {c.model_variant}  ·  normalize "
                         f"{c.normalize}", id="pp-settings", markup=False)
            yield Static("starting ...", id="pp-pass", markup=False)
            yield ProgressBar(id="pp-bar", show_eta=False)
            yield Static("", id="pp-file", markup=False)
            yield WrappedLog(id="pp-log", max_lines=500)
        with Horizontal(id="pp-actions"):
            yield Button("Cancel (C)", id="pp-cancel", variant="error", compact=True,
                         action="screen.cancel")
            yield Button("Train on these (T)", id="pp-train", variant="success", compact=True,
                         action="screen.train", disabled=True)
            yield Button("Back", id="pp-back", compact=True, action="screen.back")
        yield Footer()

    def on_mount(self) -> None:
        if self.start and not self.app.start_preprocess(self.config, self):
            self.finished = True  # nothing of ours runs: cancel and train do nothing here
            self._ended()
            self.query_one("#pp-pass", Static).update(
                "Not started: the previous preprocessing is still finishing its current song. "
                "Go back (Esc) and start again in a moment.")
            self.query_one("#pp-bar", ProgressBar).update(total=1, progress=0)

    def on_preprocess_progress(self, message: PreprocessProgress) -> None:
        e = self.last_event = message.event
        bar = self.query_one("#pp-bar", ProgressBar)
        log = self.query_one("#pp-log", RichLog)
        if e.phase == "plan":
            log.write(e.message)
        elif e.phase == "load":
            self.query_one("#pp-pass", Static).update(e.message)
        elif e.phase in PASSES:
            self.query_one("#pp-pass", Static).update(PASSES[e.phase])
            bar.update(total=e.total, progress=e.done)
            left = f"  ·  {fmt_duration(e.eta_s)} left in this pass" if e.eta_s is not None \
                else ""
            self.query_one("#pp-file", Static).update(f"{e.done + 1}/{e.total}  {e.file}{left}")
        elif e.phase in ("done", "cancelled"):
            # done is every song dealt with: a failed one is listed, not left as a gap
            bar.update(total=max(e.total, 1), progress=e.total if e.phase == "done" else e.done)
            log.write(f"{e.phase}: {e.message}")

    def on_preprocess_note(self, message: PreprocessNote) -> None:
        self.query_one("#pp-log", RichLog).write(f"note: {message.text}")

    def on_preprocess_finished(self, message: PreprocessFinished) -> None:
        self.finished = True
        self.result = message.result
        log = self.query_one("#pp-log", RichLog)
        self._ended()
        if message.error:
            self.query_one("#pp-pass", Static).update("Preprocessing could not start")
            log.write(f"error: {message.error}")
            return
        r = message.result
        for path, reason in r.failed:
            log.write(f"failed: {path}: {reason}")
        done = len(r.written) + len(r.reused)
        if r.cancelled:
            half = f", {r.half_done} half-done (kept)" if r.half_done else ""
            earlier = (f"; {len(r.earlier)} earlier files it was to replace are kept"
                       if r.earlier else "")
            headline = (f"Cancelled: {done} of {r.total} songs done{half}, no partial "
                        f"files{earlier}; preprocess again to finish")
        else:
            headline = f"Done: {done} of {r.total} songs ready in {self.config.tensor_output}"
        self.query_one("#pp-pass", Static).update(headline)
        self.query_one("#pp-file", Static).update("")
        # the folder's manifest lists them all: trainable after a cancel too
        self.query_one("#pp-train", Button).disabled = not self._has_tensors()
        self.refresh_bindings()  # T shows in the footer only now that there are tensors
        if self._has_tensors():
            self.query_one("#pp-train", Button).focus()

    def _ended(self) -> None:
        """Nothing runs any more: Cancel goes (button and key), not just greyed out."""
        cancel = self.query_one("#pp-cancel", Button)
        cancel.disabled, cancel.display = True, False
        self.refresh_bindings()

    def _has_tensors(self) -> bool:
        return bool(self.result and (self.result.written or self.result.reused
                                     or self.result.earlier))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The footer offers C only while it runs, and T only once there is something to
        train on (it offered both after a run that ended with nothing)."""
        if action == "cancel":
            return not self.finished
        if action == "train":
            return self._has_tensors()
        return True

    def action_cancel(self) -> None:
        if self.finished or self.cancelling:
            return
        self.cancelling = True
        self.app.cancel_preprocess()
        self.query_one("#pp-pass", Static).update("Cancelling after this song ...")

    def action_train(self) -> None:
        if not self._has_tensors():
            return
        c = self.config
        self.app.action_new_training("fixed", {"dataset_dir": str(c.tensor_output),
                                               "checkpoint_dir": str(c.checkpoint_dir),
                                               "model_variant": c.model_variant})

    def action_back(self) -> None:
        if not self.finished:
            self.action_cancel()
            self.notify("preprocessing stops after this song; finished files are kept")
        self.app.pop_screen()
