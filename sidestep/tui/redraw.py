"""Drawing only what changed, only where it is seen.

During a run the engine shares the GIL with the UI thread, so a redraw that changes nothing on
screen is time taken from training. Screens use these two pieces instead of each keeping its
own "last text" bookkeeping.
"""

from __future__ import annotations

from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def shown(screen: Screen) -> bool:
    """Is ``screen`` on the terminal: on top, or right under a see-through dialog?

    Textual's ``Screen.is_current`` also counts the screen under an opaque top screen (it
    composites it in case it shows through), so a screen that redraws on that test repaints the
    screen above it for nothing.
    """
    stack = screen.app.screen_stack
    if stack[-1] is screen:
        return True
    top = stack[-1]
    return (len(stack) >= 2 and stack[-2] is screen and isinstance(top, ModalScreen)
            and top.styles.background.a < 1)


class TextLine(Static):
    """Text in a box of fixed size (set in CSS): ``set_text`` redraws only on a change, and
    never asks for a layout pass (which repaints the whole screen)."""

    def __init__(self, text: str = "", **kwargs) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(text, **kwargs)
        self._text = text

    def set_text(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.update(text, layout=False)
