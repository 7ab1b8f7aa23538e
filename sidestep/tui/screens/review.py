"""The review step: the resolved configuration, warnings and the memory estimate."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from sidestep.engine.describe import summary_rows


class ReviewScreen(ModalScreen[str]):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+s", "start", "Start")]

    def __init__(self, resolved, estimate_line: str | None = None, notes: list[str] = ()):
        super().__init__(classes="dialog-screen")
        self.resolved = resolved
        self.estimate_line = estimate_line
        self.notes = list(notes)  # a resumed run's changed settings

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog review-dialog"):
            yield Label("Review and start", classes="dialog-title")
            with VerticalScroll(id="review-body"):
                # values wrap: a DataTable cut the output folder and the checkpoint resumed
                yield Static(self._table(), id="review-table")
                for w in [*self.notes, *self.resolved.warnings]:
                    yield Static(f"⚠ {w}", classes="review-warning", markup=False)
                if self.estimate_line:
                    yield Static(self.estimate_line, id="review-estimate", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", id="start", variant="success",
                             action="screen.start")
                yield Button("Back", id="back", action="screen.back")
        # the dialog's own keys: the footer underneath showed the screen's, which do nothing here
        yield Footer()

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, expand=True, padding=(0, 1))
        table.add_column("setting", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold", ratio=1)
        for key, value in summary_rows(self.resolved.config):
            table.add_row(key, Text(value))
        return table

    def on_mount(self) -> None:
        self.query_one("#start", Button).focus()

    def action_start(self) -> None:
        self.dismiss("start")

    def action_back(self) -> None:
        self.dismiss("back")
