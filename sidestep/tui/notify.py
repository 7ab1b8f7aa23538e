"""Telling you a run needs you while you look elsewhere: the terminal bell and a desktop
notification, both as escapes on the app's own output (so they travel over SSH to the terminal
you sit at).

Desktop notifications are two OSC escapes, as terminals differ in which they read: OSC 9
(iTerm2, WezTerm, Ghostty, kitty, Windows Terminal) and OSC 777 ``notify`` (rxvt-unicode, foot,
Ghostty, VTE-based terminals). A terminal that knows neither ignores both. Inside tmux each is
wrapped in tmux's passthrough (shown only with ``set -g allow-passthrough on``); the bell is
never wrapped, so tmux applies its own bell-action to it.
"""

from __future__ import annotations

import re

BEL = "\a"
ESC = "\x1b"
MAX_TEXT = 200
# C0 and C1 controls and DEL: a run folder's name or an error message must not end the
# escape early or start another one.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean(text: str, limit: int = MAX_TEXT) -> str:
    text = _CONTROLS.sub(" ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def tmux_wrap(sequence: str) -> str:
    """tmux's passthrough: ``ESC P tmux; <the sequence, every ESC doubled> ESC \\``."""
    return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ESC}\\"


def desktop_escapes(title: str, body: str, tmux: bool = False) -> str:
    """OSC 9 then OSC 777 for one notification."""
    title, body = clean(title, 60), clean(body)
    osc9 = f"{ESC}]9;{title}: {body}{BEL}"
    # 777's fields are split at ';': a title with one would push text into the body.
    osc777 = f"{ESC}]777;notify;{title.replace(';', ',')};{body}{BEL}"
    if tmux:
        return tmux_wrap(osc9) + tmux_wrap(osc777)
    return osc9 + osc777


def notice_escapes(choice: str, title: str, body: str, tmux: bool = False) -> str:
    """What to write for the user's setting (off | bell | desktop | both); "" for off."""
    out = ""
    if choice in ("desktop", "both"):
        out += desktop_escapes(title, body, tmux)
    if choice in ("bell", "both"):
        out += BEL
    return out
