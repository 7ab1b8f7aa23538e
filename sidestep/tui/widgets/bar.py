"""A one-line progress bar that redraws only when a visible cell changes.

Textual's ProgressBar keeps a one-second timer per bar and re-renders on every update; on a
CPU-bound run every UI-thread millisecond is taken from training (they share the GIL), so the
monitor uses this instead.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class CellBar(Widget):
    DEFAULT_CSS = """
    CellBar {
        height: 1;
        width: 1fr;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._total = 0
        self._done = 0
        self._key: tuple | None = None

    @property
    def fraction(self) -> float:
        return min(max(self._done / self._total, 0.0), 1.0) if self._total > 0 else 0.0

    def set_progress(self, done: float, total: int) -> None:
        self._done, self._total = done, total
        key = self._visible_key(self.size.width)
        if key != self._key:
            self.refresh(layout=False)

    def _visible_key(self, width: int) -> tuple:
        cells = max(width - 5, 1)  # room for " 100%"
        return (int(self.fraction * cells * 2), int(self.fraction * 100), width)

    def render(self) -> Text:
        width = self.size.width
        self._key = self._visible_key(width)
        cells = max(width - 5, 1)
        half_cells = int(self.fraction * cells * 2)
        full, half = divmod(half_cells, 2)
        accent = self.app.current_theme.primary if self.is_attached else "cyan"
        text = Text()
        text.append("━" * full, style=accent)
        if half:
            text.append("╸", style=accent)
        rest = cells - full - half
        text.append("━" * rest, style="grey30")
        text.append(f"{int(self.fraction * 100):4d}%")
        return text
