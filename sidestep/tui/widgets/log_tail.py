"""The monitor's log: the newest lines in a fixed box, redrawn without a layout pass.

A scrolling RichLog changes its virtual size on every write, and Textual answers that with a
full-screen layout and repaint; on a CPU-bound run that time comes out of training. Lines are
cut to the box's width (never wrapped, so the newest line is always in view); the whole log,
scrollable and wrapped, is one key away (``LogScreen``).
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.widget import Widget

LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "debug": "dim"}


def styled_line(level: str, text: str) -> Text:
    return Text(text, style=LEVEL_STYLE.get(level, ""))


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, ending in "…" when it was longer."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1) + "…"


class LogTail(Widget):
    def __init__(self, lines: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines = lines
        self._seen = -1
        self._tail: list[tuple[str, str]] = []

    def show(self, log, total: int) -> None:
        """``log``: (level, text) pairs, oldest first; ``total``: lines ever appended."""
        if total == self._seen:
            return
        self._seen = total
        self._tail = list(log)[-self.lines:]
        self.refresh(layout=False)

    def render(self) -> Text:
        width = self.content_size.width
        text = Text("\n").join(styled_line(level, fit(line.replace("\n", " "), width))
                               for level, line in self._tail)
        text.no_wrap = True
        return text
