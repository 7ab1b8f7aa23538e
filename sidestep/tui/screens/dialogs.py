"""Small modal dialogs: confirm, error, text prompt."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from sidestep.tui.widgets.text_input import TextInput


class ConfirmScreen(ModalScreen[str]):
    """Asks a question; dismisses with the id of the button pressed (``cancel`` on escape)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, message: str, choices: list[tuple[str, str, str]],
                 default: str | None = None):
        """``default``: the button focused at first (Enter presses it); without it, the first
        that is not destructive (variant "error"), so that a reflexive Enter keeps things."""
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.message = message
        self.choices = choices  # (id, label, variant)
        safe = [cid for cid, _label, variant in choices if variant != "error"]
        self.default = default or (safe[0] if safe else choices[0][0])

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                for cid, label, variant in self.choices:
                    yield Button(label, id=cid, variant=variant)
        # the dialog's own keys: the footer underneath showed the screen's, which do nothing here
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(f"#{self.default}", Button).focus()

    # One handler, not one action per button: the choices are the caller's, and the answer is
    # the chosen button's id.
    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_cancel(self) -> None:
        self.dismiss("cancel")


def leave_or_stay(app, title: str, message: str, leave) -> None:
    """Asks before a screen's unsaved edits are dropped; ``leave`` runs on "Discard and
    leave". Keep editing has focus, so a reflexive Enter keeps them (the form and Settings)."""
    app.push_screen(ConfirmScreen(title, message, [("leave", "Discard and leave", "error"),
                                                   ("stay", "Keep editing", "primary")]),
                    lambda choice: leave() if choice == "leave" else None)


class ErrorScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", "Close")]

    def __init__(self, title: str, message: str, hint: str = ""):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.message = message
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-body", markup=False)
            if self.hint:
                yield Static(self.hint, classes="dialog-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary", action="screen.close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """Asks for one line of text; dismisses with it, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, label: str, value: str = "", placeholder: str = ""):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.label = label
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.label, markup=False)  # paths and messages, not markup
            yield TextInput(self.value, placeholder=self.placeholder, id="prompt-input")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary", action="screen.submit")
                yield Button("Cancel", id="cancel", action="screen.cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_submit(self) -> None:
        self.dismiss(self.query_one("#prompt-input", Input).value)

    def action_cancel(self) -> None:
        self.dismiss(None)
