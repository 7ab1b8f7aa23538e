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

