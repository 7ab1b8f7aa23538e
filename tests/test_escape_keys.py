"""Esc typed just before another key stays its own key (tui/escape_keys.py): over SSH the two
often arrive in one read, and Textual took them for Alt+key ("Esc Q" typed a Q into the form's
field, "G Esc Space" left the log open)."""

from __future__ import annotations

import time

import pytest
from textual._xterm_parser import XTermParser

from sidestep.tui.escape_keys import SplitEscapeParser
from test_tui_hangup import pty_app  # noqa: F401  (the app under a pseudo-terminal)


def keys(parser_type, *reads: str) -> list[str]:
    parser = parser_type(debug=False)
    found = []
    for data in reads:
        found += parser.feed(data)
    time.sleep(0.15)  # past ESCDELAY: a lone trailing ESC is reported
    found += parser.tick()
    return [e.key if hasattr(e, "key") else type(e).__name__ for e in found]


@pytest.mark.parametrize("reads, expected", [
    (["\x1bQ"], ["escape", "Q"]),
    (["\x1bq"], ["escape", "q"]),
    (["G\x1b "], ["G", "escape", "space"]),
    (["\x1b\r"], ["escape", "enter"]),
    (["\x1b\t"], ["escape", "tab"]),
    (["\x1b1"], ["escape", "1"]),
    (["\x1b", "Q"], ["escape", "Q"]),  # split between two reads
    (["\x1b\x1bx"], ["escape", "escape", "x"]),
    (["ab\x1b"], ["a", "b", "escape"]),
])
def test_an_escape_that_arrives_with_the_next_key_is_two_keys(reads, expected):
    assert keys(SplitEscapeParser, *reads) == expected
    if len(expected) == 2 and expected[0] == "escape":
        assert keys(XTermParser, *reads) != expected  # what Textual alone makes of them


@pytest.mark.parametrize("reads", [["\x1b[A"], ["\x1bOP"], ["\x1b[<0;10;5M"], ["\x1b[1;5C"],
                                   ["\x1b[", "A"], ["\x1bb"], ["\x1bf"], ["\x1b\x7f"]])
def test_sequences_a_terminal_sends_for_keys_and_the_mouse_are_unchanged(reads):
    """Arrows, F1, a mouse click, ctrl+right, and the word-editing keys terminals send as ESC
    and a byte (Option+Left/Right on macOS: ESC b / ESC f; Alt+Backspace: ESC DEL)."""
    assert keys(SplitEscapeParser, *reads) == keys(XTermParser, *reads)
    assert "escape" not in keys(SplitEscapeParser, *reads)


def test_pasted_text_is_left_to_textual():
    pasted = "\x1b[200~a\x1bb\x1b[201~x"
    assert keys(SplitEscapeParser, pasted) == keys(XTermParser, pasted)
    assert keys(SplitEscapeParser, "\x1b[200~a", "\x1bb", "\x1b[201~x") == \
        keys(XTermParser, "\x1b[200~a", "\x1bb", "\x1b[201~x")


@pytest.mark.slow
def test_esc_and_a_letter_in_one_read_of_a_real_terminal(pty_app):  # noqa: F811
    """The app under a pty, its training form open: ESC and Q written together ask to leave
    the form (Esc), where the Q went into the focused folder field."""
    app, _ = pty_app
    deadline = time.monotonic() + 240
    while b"ready" not in app.output and time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output[-3000:]
        time.sleep(0.3)
    time.sleep(1.0)
    seen = len(app.output)
    app.send(b"\x1bQ")
    deadline = time.monotonic() + 30
    while b"Leave the form?" not in app.output[seen:] and time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output[-3000:]
        time.sleep(0.2)
    assert b"Leave the form?" in app.output[seen:], app.output[-3000:]
