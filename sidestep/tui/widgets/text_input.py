"""The app's text box: an Input whose own keys act on it in the order they were typed."""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class TextInput(Input):
    """Textual runs a non-printable key's binding (backspace, delete, arrows, home, end, ...)
    when the key has bubbled back up to the App, against whatever has focus *then*, while a
    printable key is inserted here at once. Typed faster than the app handles keys (a slow SSH
    link, a busy redraw), a backspace before a Tab deleted in the next field, and letters and
    deletions went to different boxes. Here both kinds act on this box, in order."""

    async def _on_key(self, event: events.Key) -> None:
        await super()._on_key(event)
        if event.is_printable:
            return
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return


# Keys a text box acts on itself: what may be typed into a field straight after the key that
# opened its screen.
EDITING_KEYS = frozenset({"backspace", "delete", "left", "right", "home", "end"})


class KeysBeforeFocus:
    """For a screen that puts the cursor in a text box when it mounts: keys typed straight
    after the key that opened it (F, then a path) arrive before it has focused the box, go to
    whatever had focus first and come back up to the screen unused. They go on to the box, in
    order (the App runs F on arrival, so they do reach this screen: see App.on_event)."""

    def on_key(self, event: events.Key) -> None:
        box = self.focused  # type: ignore[attr-defined]
        if isinstance(box, TextInput) and (event.is_printable or event.key in EDITING_KEYS):
            # the box consumes these keys itself: one here came before it had focus
            event.stop()
            event.prevent_default()
            box.post_message(events.Key(event.key, event.character))
