"""The app's scrolling logs."""

from __future__ import annotations

from textual.widgets import RichLog


class WrappedLog(RichLog):
    """A RichLog whose lines wrap to its width. RichLog renders each line at least 78 columns
    wide (its ``min_width``), so in an 80-column terminal, less borders and padding, the end
    of a long line was cut off, wrap or not."""

    def __init__(self, **kw) -> None:
        kw.setdefault("markup", False)
        super().__init__(wrap=True, min_width=20, **kw)
