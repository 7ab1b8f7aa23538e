"""First run of ``--demo``: builds the tiny model and dataset, showing progress."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, RichLog

from sidestep.tui.widgets.wrapped_log import WrappedLog


class DemoSetupScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="demo-setup"):
            yield Label("Preparing the demo: a tiny ACE-Step model, 12 synthetic songs and their "
                        "preprocessed tensors (first run only)…", id="demo-title")
            yield WrappedLog(id="demo-log")
        yield Footer()

    def add_line(self, text: str) -> None:
        try:
            self.query_one("#demo-log", RichLog).write(text)
        except NoMatches:  # the user left this screen (F, H, ...): the build goes on
            pass
