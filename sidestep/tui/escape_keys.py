"""Esc stays Esc when the next key arrives with it.

A terminal sends Esc as the single byte ESC, and Alt+key as ESC and the key. Textual reads an
ESC followed within ``ESCDELAY`` by another byte as one key: ESC Q became alt+shift+q (typed
into a field as "Q"), ESC space and ESC Enter became space and Enter, ESC Tab shift+tab, ESC 1
"¡". Over SSH, keys typed a moment apart often arrive in one packet, so "Esc Q" on the form
and "G Esc Space" on the Monitor lost their Esc and the next key acted on the wrong screen.

The app binds no Alt keys, so here an ESC is its own key unless the next byte starts an escape
sequence a terminal sends for a key, a mouse event or a report (``[`` or ``O``), is another
ESC, or makes a word-editing key: macOS terminals send ESC b / ESC f for Option+Left/Right and
Linux ones ESC DEL for Alt+Backspace, which Textual reads as word left/right and delete word
(so "Esc b" typed in one burst stays a word move). Text pasted between bracketed-paste markers is
left to Textual untouched.
"""

from __future__ import annotations

from typing import Iterable

from textual._xterm_parser import XTermParser

ESC = "\x1b"
KEEP_AFTER_ESC = frozenset("[O" + ESC + "bf\x7f")
PASTE_START, PASTE_END = ESC + "[200~", ESC + "[201~"


class SplitEscapeParser(XTermParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._after_esc = False  # the last byte fed was an ESC
        self._pasting = False
        self._tail = ""  # the last bytes fed, to see a paste marker split between reads

    def feed(self, data: str) -> Iterable:
        if not data:  # end of input
            yield from super().feed(data)
            return
        start = 0
        for i, char in enumerate(data):
            after_esc = data[i - 1] == ESC if i else self._after_esc
            if after_esc and not self._pasting and char not in KEEP_AFTER_ESC:
                if i > start:
                    yield from super().feed(data[start:i])
                yield from self._escape_alone()
                start = i
            self._see_paste_marker(char)
        yield from super().feed(data[start:])
        self._after_esc = data[-1] == ESC

    def _escape_alone(self) -> Iterable:
        """The parser holds an ESC, waiting ``ESCDELAY`` for what follows: end the wait now,
        so that it reports the Esc key by itself."""
        if self._timeout_time is not None:
            self._timeout_time = 0.0
            yield from self.tick()

    def _see_paste_marker(self, char: str) -> None:
        self._tail = (self._tail + char)[-len(PASTE_START):]
        if self._tail == PASTE_START:
            self._pasting = True
        elif self._tail == PASTE_END:
            self._pasting = False
