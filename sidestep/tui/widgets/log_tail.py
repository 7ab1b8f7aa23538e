"""The monitor's log: the newest lines in a fixed box, redrawn without a layout pass.

A scrolling RichLog changes its virtual size on every write, and Textual answers that with a
full-screen layout and repaint; on a CPU-bound run that time comes out of training. The whole
log, scrollable, is one key away (``LogScreen``).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "debug": "dim"}


def styled_line(level: str, text: str) -> Text:
    return Text(text, style=LEVEL_STYLE.get(level, ""))


class LogTail(Static):
    def __init__(self, lines: int = 5, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.lines = lines
        self._seen = -1

    def show(self, log, total: int) -> None:
        """``log``: (level, text) pairs, oldest first; ``total``: lines ever appended."""
        if total == self._seen:
            return
        self._seen = total
        tail = list(log)[-self.lines:]
        text = Text("\n").join(styled_line(level, line) for level, line in tail)
        text.no_wrap = True
        text.overflow = "ellipsis"
        self.update(text, layout=False)
