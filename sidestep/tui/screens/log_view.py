"""The whole run log, scrollable, following new lines while it is open."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, RichLog

from sidestep.tui.state import RunState
from sidestep.tui.widgets.log_tail import styled_line
from sidestep.tui.widgets.wrapped_log import WrappedLog


class LogScreen(ModalScreen):
    BINDINGS = [Binding("escape", "dismiss", "Close"),
                Binding("g,G", "dismiss", "Close", key_display="G", show=False)]

    def __init__(self, state: RunState):
        super().__init__(id="log-screen")
        self.state = state
        self._seen = 0

    def compose(self) -> ComposeResult:
        yield Label(f"Log — {self.state.title or self.state.run_dir}", id="log-title")
        yield WrappedLog(id="full-log", max_lines=None)
        yield Footer()

    def on_mount(self) -> None:
        self.follow()
        self.set_interval(1.0, self.follow)

    def follow(self) -> None:
        lines = self.state.log_since(self._seen)
        self._seen = self.state.log_total
        log = self.query_one("#full-log", RichLog)
        for level, text in lines:
            log.write(styled_line(level, text))

    def action_dismiss(self) -> None:
        self.dismiss(None)
