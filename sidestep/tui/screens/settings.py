"""Settings: default checkpoint folder, output root, theme, refresh rate, whether new runs keep
running after the app quits, how a run's end is told (settings.json)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Label, Select, Static

from sidestep.config.settings import (LABELS, NOTIFY_CHOICES, THEMES, Settings, SettingsError,
                                      label_of)
from sidestep.tui.widgets.text_input import TextInput

KINDS = {"theme": "theme", "refresh_hz": "float", "gpu_poll_seconds": "float",
         "form_mode": "mode", "confirm_quit": "bool", "keep_running": "bool",
         "notify": "notify"}  # any other setting is a text box
FIELDS = [(key, label, KINDS.get(key, "text")) for key, label in LABELS.items()]
CHOICES = {"theme": THEMES, "mode": ("basic", "advanced"), "notify": NOTIFY_CHOICES}


class SettingsScreen(Screen):
    # the first text box, not "*": that took the scroll box, and a path typed there went to
    # the app's letters (the p of /tmp opened the dataset browser)
    AUTO_FOCUS = "#settings-body TextInput"
    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "dashboard", "Dashboard")]

    def __init__(self):
        super().__init__()

    def compose(self) -> ComposeResult:
        s: Settings = self.app.settings
        yield Header()
        from sidestep.config.paths import short

        yield Static(f"Stored in {short(self.app.settings_store.path)}", id="settings-path",
                     markup=False)
        with VerticalScroll(id="settings-body"):
            for key, label, kind in FIELDS:
                value = getattr(s, key)
                with Horizontal(classes="field-row settings-row"):
                    yield Label(label, classes="field-label")
                    if kind in CHOICES:
                        yield Select([(c, c) for c in CHOICES[kind]], value=value,
                                     allow_blank=False, id=f"set-{key}", compact=True)
                    elif kind == "bool":
                        yield Checkbox("", value=value, id=f"set-{key}", compact=True)
                    else:
                        yield TextInput(str(value), id=f"set-{key}", compact=True)
        yield Static("", id="settings-error")
        with Horizontal(id="settings-actions"):
            yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True,
                         action="screen.save")
            yield Button("Dashboard", id="dash", compact=True, action="screen.dashboard")
        yield Footer()

    def collect(self) -> dict:
        out = {}
        for key, _label, kind in FIELDS:
            widget = self.query_one(f"#set-{key}")
            if kind in CHOICES:
                out[key] = widget.value
            elif kind == "bool":
                out[key] = widget.value
            elif kind == "float":
                try:
                    out[key] = float(widget.value)
                except ValueError:
                    raise SettingsError(f"{label_of(key)} must be a number") from None
            else:
                out[key] = widget.value.strip()
        return out

    def _shown(self) -> dict:
        """What each field shows now, as typed (a half-typed number too)."""
        return {key: self.query_one(f"#set-{key}").value for key, _label, _kind in FIELDS}

    def on_mount(self) -> None:
        self._as_saved = self._shown()

    def action_save(self) -> None:
        err = self.query_one("#settings-error", Static)
        from sidestep.data.paths import output_dir_problem

        try:
            values = self.collect()
            # every run would be refused at its start: refuse it here, nothing saved
            problem = values.get("output_root") and output_dir_problem(
                Path(values["output_root"]).expanduser(), "Output root:")
            if problem:
                field = self.query_one("#set-output_root")
                field.add_class("-invalid")
                field.focus()
                raise SettingsError(problem)
            self.query_one("#set-output_root").remove_class("-invalid")
            new = self.app.settings_store.update(**values)
        except SettingsError as exc:
            err.update(f"✗ {exc}")
            return
        except OSError as exc:
            err.update(f"✗ cannot write settings: {exc}")
            return
        err.update("")
        self.app.apply_settings(new)
        self._as_saved = self._shown()
        # saved all the same (a drive may be mounted later), but a typo shows now
        missing = [f"{label_of(k)}: {values[k]} does not exist" for k in ("checkpoint_dir",
                                                                           "dataset_root")
                   if values.get(k) and not Path(values[k]).expanduser().exists()]
        if missing:
            self.notify("settings saved; " + "; ".join(missing), severity="warning", timeout=8)
        else:
            self.notify("settings saved")

    @on(Select.Changed, "#set-theme")
    def _theme_preview(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.app.theme = event.value

    def action_dashboard(self) -> None:
        """Esc or Dashboard: unsaved changes are asked about, as on the training form (they
        were dropped without a word, and a previewed theme stayed)."""
        if self._shown() == self._as_saved:
            self.app.action_dashboard()
            return
        from sidestep.tui.screens.dialogs import leave_or_stay

        def leave() -> None:
            self.app.theme = self.app.settings.theme  # the preview goes with the rest
            self.app.action_dashboard()

        leave_or_stay(self.app, "Leave Settings?",
                      "Your changes here are not saved (ctrl+s saves).", leave)


def settings_dict(settings: Settings) -> dict:
    return dataclasses.asdict(settings)
