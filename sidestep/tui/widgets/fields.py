"""One form row per schema setting: label, control, help, inline error.

The control is picked from the setting's kind: a Switch for booleans, a Select for a fixed set of
choices, an Input for everything else (numbers, text, paths, lists). Programmatic updates never
post ``Edited``; only the user's edits do.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from sidestep.config.schema import Setting
from sidestep.config.values import to_text
from sidestep.tui.widgets.text_input import TextInput
from sidestep.tui.wording import in_app_words


def empty_means(s: Setting) -> str:
    """What leaving a nullable field empty does, as its help says ("(empty: ...)" or
    "Empty: ..."), so the placeholder never contradicts it."""
    import re

    m = re.search(r"\((?:empty|default): ([^)]*)\)|Empty: ([^.]*)", s.help)
    return f"empty: {(m.group(1) or m.group(2)).strip()}" if m else "optional"


def control_id(name: str) -> str:
    return f"input-{name}"


class SettingField(Vertical):
    """A schema-driven field. ``touched`` marks a value the user set (it then wins over
    defaults that follow the model or the preset)."""

    class Edited(Message):
        def __init__(self, field: "SettingField", raw: Any) -> None:
            super().__init__()
            self.field = field
            self.raw = raw

    def __init__(self, setting: Setting, value: Any, *, mode_label: str = "") -> None:
        super().__init__(id=f"field-{setting.name}", classes="field")
        self.setting = setting
        self.initial = value
        self.touched = False
        self.mode_label = mode_label
        # What the control shows because we put it there: a Changed message carrying this
        # value is an echo (Textual also posts one when a control mounts), not a user edit.
        self._shown: Any = self._as_control_value(value)
        # kept, not queried: the form redraws every row on each keystroke
        self._control = None
        self._message: Static | None = None

    def _as_control_value(self, value: Any) -> Any:
        s = self.setting
        if s.kind == "bool":
            return bool(value)
        if s.choices is not None and not s.is_list:
            return value if value in s.choices else None
        return to_text(s, value)

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        s = self.setting
        label = s.label + (" *" if s.required else "")
        with Horizontal(classes="field-row"):
            yield Label(label, classes="field-label")
            self._control = self._make_control()
            yield self._control
        self._message = Static("", classes="field-error")
        yield self._message

    def _make_control(self):
        s = self.setting
        cid = control_id(s.name)
        if s.kind == "bool":
            box = Checkbox("", value=bool(self.initial), id=cid, compact=True)
            box.tooltip = in_app_words(s.help)
            return box
        if s.choices is not None and not s.is_list:
            options = [(str(c), c) for c in s.choices]
            value = self.initial if self.initial in s.choices else Select.NULL
            select = Select(options, value=value, allow_blank=s.nullable, id=cid,
                            prompt="(none)" if s.nullable else "Select", compact=True)
            select.tooltip = in_app_words(s.help)
            return select
        placeholder = "required" if s.required else (empty_means(s) if s.nullable else "")
        return TextInput(value=to_text(s, self.initial), placeholder=placeholder, id=cid,
                         classes="field-input", compact=True, tooltip=in_app_words(s.help),
                         select_on_focus=False)

    @property
    def ready(self) -> bool:
        """Whether the control exists: not yet while a row mounted late composes, nor once
        its screen starts taking it down."""
        return self._control is not None and self._control.is_attached

    @property
    def control(self):
        return self._control

    # -- values --------------------------------------------------------------------------------
    def raw_value(self) -> Any:
        """What the control holds: text for inputs, a typed value for switches and selects."""
        ctl = self.control
        if isinstance(ctl, Checkbox):
            return ctl.value
        if isinstance(ctl, Select):
            return None if ctl.value is Select.NULL else ctl.value
        return ctl.value

    def show_value(self, value: Any, replace_typed: bool = False) -> None:
        """Display ``value`` without marking the field as edited. A control whose value is not
        the one last shown holds a keystroke whose Changed message is still queued (typing
        faster than the form redraws): it is kept, and that message marks the field edited,
        unless ``replace_typed`` (a pick from a list replaces the text typed to find it)."""
        if self.raw_value() != self._shown and not replace_typed:
            return
        self._shown = self._as_control_value(value)
        ctl = self.control
        if isinstance(ctl, Checkbox):
            with ctl.prevent(Checkbox.Changed):
                ctl.value = bool(value)
        elif isinstance(ctl, Select):
            with ctl.prevent(Select.Changed):
                ctl.value = value if value in (self.setting.choices or ()) else Select.NULL
        else:
            text = to_text(self.setting, value)
            if ctl.value != text:
                with ctl.prevent(Input.Changed):
                    ctl.value = text

    def _show_message(self, text: str) -> None:
        if self._message.content != text:  # an update lays the form out again
            self._message.update(text)

    def set_error(self, message: str | None) -> None:
        self._show_message(message or "")
        self.set_class(bool(message), "has-error")

    def set_note(self, message: str | None, kind: str = "warning") -> None:
        """A non-blocking remark under the field: ``warning`` (yellow) or ``info`` (dim)."""
        if self.has_class("has-error"):
            self.set_class(False, "has-note", "has-info")
            return
        self._show_message(message or "")
        self.set_class(bool(message) and kind == "warning", "has-note")
        self.set_class(bool(message) and kind == "info", "has-info")

    # -- events --------------------------------------------------------------------------------
    def _edited(self, raw: Any, force: bool = False) -> None:
        if raw == self._shown and not force:
            return
        self._shown = raw
        self.touched = True
        self.post_message(self.Edited(self, raw))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == control_id(self.setting.name):
            event.stop()
            self._edited(event.value)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._edited(event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._edited(None if event.value is Select.NULL else event.value)


class ModelField(SettingField):
    """The model picker: type to fuzzy-search the checkpoint root's models."""

    class Picked(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, setting: Setting, value: Any) -> None:
        super().__init__(setting, value)
        self.entries: list = []

    def compose(self) -> ComposeResult:
        yield from super().compose()
        options = OptionList(id="model-options", classes="model-options")
        options.can_focus = False  # Up/Down from the box move through it (on_key)
        options.display = False
        yield options

    def set_entries(self, entries: list) -> None:
        self.entries = list(entries)
        self._refresh_options(str(self.raw_value() or ""))

    def _refresh_options(self, query: str) -> None:
        """Offer the checkpoint root's models, best fuzzy matches first, while editing."""
        from sidestep.model.checkpoints import fuzzy_rank

        options = self.query_one("#model-options", OptionList)
        ranked = fuzzy_rank(self.entries, query if self.touched else "")
        options.clear_options()
        options.add_options([Option(e.label, id=e.name) for e in ranked[:6]])
        options.display = bool(ranked) and self._editing

    _editing = False

    def on_descendant_focus(self, event) -> None:
        self._editing = True
        self._refresh_options(str(self.raw_value() or ""))

    def on_descendant_blur(self, event) -> None:
        if not self.has_focus_within:
            self._editing = False
            self.query_one("#model-options", OptionList).display = False

    def on_input_changed(self, event: Input.Changed) -> None:
        super().on_input_changed(event)
        if self.entries:
            self._refresh_options(event.value)

    def on_key(self, event) -> None:
        """Up and Down move through the offered models while the box has focus, as in a combo
        box; Enter picks the highlighted one. The list itself never takes focus: shown only
        while the box has it, as a Tab stop it came and went, and quick Tabs skipped it or
        not depending on timing."""
        options = self.query_one("#model-options", OptionList)
        if not options.display or event.key not in ("down", "up"):
            return
        event.stop()
        event.prevent_default()
        if event.key == "down":
            options.action_cursor_down()
        else:
            options.action_cursor_up()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one("#model-options", OptionList)
        if options.display and options.highlighted is not None:
            event.stop()
            options.action_select()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        name = event.option.id or ""
        self.show_value(name, replace_typed=True)
        self._edited(name, force=True)
        self.post_message(self.Picked(name))


def is_field_widget(widget) -> bool:
    """A widget that takes typed keys as input or selection: letters typed there are data."""
    from textual.screen import Screen
    from textual.widgets import (Checkbox, Input, ListView, OptionList, RadioButton, RadioSet,
                                 Select, SelectionList, Switch, TextArea)

    kinds = (Input, TextArea, OptionList, ListView, SelectionList, Select, Checkbox,
             RadioButton, RadioSet, Switch)
    node = widget
    while node is not None and not isinstance(node, Screen):  # a Select's parts: the Select
        if isinstance(node, kinds):
            return True
        node = node.parent
    return False
