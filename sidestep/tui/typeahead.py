"""Keys handled one at a time, in the order they were typed.

Textual hands a key to the focused widget's message queue and goes on to the next key at once.
A key's effect (a screen opened, focus moved, a value changed) lands later, so keys typed ahead
of a slow link or a busy redraw went to the screen or field that had focus when they *arrived*:
"- W" on the estimate saved the old Top K, "G Esc Space" left the log open and the run
unpaused, a key that did nothing on the dashboard turned up in the next screen's text box.

Here the App hands out the next key only when the previous one has settled: it has travelled up
from the widget it went to and every handler on its way has run (a ``KeySettled`` sent behind
it comes back up to the App), a screen it opened has composed and placed its focus (one more
``KeySettled``, through that screen, and a refresh), and a dropdown or dialog opened by Enter or
space has drawn. A screen that places its cursor itself once its fields are built
(``PLACES_FOCUS``, the training form) says so by calling ``App.release_keys``. Nothing waits
longer than ``WAIT_SECONDS`` (``SCREEN_WAIT_SECONDS`` for a key that opened a screen): a key
whose widget went away (Esc closed its dialog) is settled when that is seen.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from textual import events
from textual.message import Message

WAIT_SECONDS = 2.0
# a key that opened a screen waits for it to compose and focus: on a loaded machine that took
# over a second, and a Tab let go early moved from no focus, then the form put its cursor back
SCREEN_WAIT_SECONDS = 6.0
LOOK_SECONDS = 0.05
# keys that open something drawn a moment later (a Select's list, a dialog, a checkbox toggle)
OPENING_KEYS = frozenset({"enter", "space"})


class KeySettled(Message):
    """Sent behind a key to the widget that took it; back at the App, the key is done."""

    def __init__(self, serial: int) -> None:
        super().__init__()
        self.serial = serial


@dataclass
class _Key:
    serial: int
    key: str
    screen: Any
    focused: Any
    started: float = field(default_factory=time.monotonic)
    target: Any = None
    stage: str = "handling"  # then "screen" (a new screen composes), "placing", "refresh"
    timer: Any = None


class TypedKeys:
    """The App's key queue. ``handle(event)`` runs one key (the App's own handling) and returns
    the widget the key was given to, or None when it was handled at once."""

    def __init__(self, app, handle: Callable[[events.Key], Awaitable[Any]]):
        self.app = app
        self.handle = handle
        self.waiting: deque[events.Key] = deque()
        self.current: _Key | None = None
        self.serial = 0

    @property
    def idle(self) -> bool:
        """No key out and none waiting (what a test waits for after a burst)."""
        return self.current is None and not self.waiting

    async def arrived(self, event: events.Key) -> None:
        self.waiting.append(event)
        await self._next()

    async def _next(self) -> None:
        while self.waiting and self.current is None:
            event = self.waiting.popleft()
            self.serial += 1
            key = self.current = _Key(self.serial, event.key, self.app.screen, self.app.focused)
            key.timer = self.app.set_interval(LOOK_SECONDS, lambda k=key: self._look(k))
            target = await self.handle(event)
            if self.current is not key:
                continue
            if target is None:
                self._handled(key)
            else:
                key.target = target
                target.post_message(KeySettled(key.serial))

    def settled(self, serial: int) -> None:
        """A ``KeySettled`` came back up to the App."""
        key = self.current
        if key is None or key.serial != serial:
            return
        if key.stage == "handling":
            self._handled(key)
        elif key.stage == "screen":
            self._after_refresh(key)

    def release(self) -> None:
        """A ``PLACES_FOCUS`` screen has put the cursor in its first field."""
        if self.current is not None and self.current.stage == "placing":
            self._done(self.current)

    def _handled(self, key: _Key) -> None:
        app = self.app
        if app.screen is not key.screen:
            if getattr(app.screen, "PLACES_FOCUS", False):
                key.stage = "placing"
                return
            key.stage = "screen"  # its queue holds its compose and focus: this comes after
            app.screen.post_message(KeySettled(key.serial))
        elif app.focused is not key.focused or key.key in OPENING_KEYS:
            self._after_refresh(key)
        else:
            self._done(key)

    def _after_refresh(self, key: _Key) -> None:
        key.stage = "refresh"
        self.app.call_after_refresh(self._done, key)

    def _look(self, key: _Key) -> None:
        """Every LOOK_SECONDS while a key is out: its widget is gone (its dialog closed, so
        its ``KeySettled`` never comes back), or it has waited long enough."""
        if self.current is not key:
            key.timer.stop()
            return
        limit = SCREEN_WAIT_SECONDS if key.stage in ("screen", "placing") else WAIT_SECONDS
        if time.monotonic() - key.started > limit:
            self._done(key)
        elif key.stage == "handling" and key.target is not None \
                and not key.target.is_attached:
            self._handled(key)

    def _done(self, key: _Key) -> None:
        if self.current is not key:
            return
        key.timer.stop()
        self.current = None
        if self.waiting:
            self.app.call_later(self._next)
