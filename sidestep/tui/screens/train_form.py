"""The training form, generated from the settings schema: widgets and their wiring over a
``FormModel`` (``sidestep/tui/form_model.py``), which holds the values, the precedence, the
validation and the resolve call. Errors appear under their fields; Start is refused while any
problem blocks.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Label, Select, Static

from sidestep.config.presets import PresetError, PresetStore
from sidestep.config.profiles import PROFILE_CHOICES
from sidestep.tui.form_model import PATH_CHECKS, TITLES, FormModel, check_path
from sidestep.tui.messages import (ModelConfigLoaded, PathChecked, PresetsListed,
                                   ProfileApplied)
from sidestep.tui.widgets.fields import ModelField, SettingField
from sidestep.tui.wording import in_app_words


def group_id(group: str) -> str:
    """The id of a settings group's heading."""
    return "group-" + group.replace(" ", "-").replace("/", "")


class TrainingFormScreen(Screen):
    PLACES_FOCUS = True  # keys typed straight after F wait for its first field (App)
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", id="form_start"),
        Binding("f2", "toggle_advanced", "Basic/Advanced", id="form_mode"),
        Binding("f3", "review", "Review", id="form_review"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, mode: str = "fixed", explicit: dict[str, Any] | None = None,
                 preset: str | None = None, advanced: bool | None = None,
                 vram_profile: str | None = None, focus: str | None = None,
                 resumed: tuple[str, dict] | None = None):
        """``focus``: the field the cursor starts in (the first one otherwise);
        ``resumed``: the checkpoint it resumes and the run's recorded settings."""
        super().__init__(classes=f"form-{mode}")
        self.initial_focus = focus
        self.model = FormModel(mode, explicit, preset, advanced)
        self.model.resumed = resumed
        self.mode = mode
        self.settings = self.model.settings
        self.initial_profile = vram_profile
        self._pending_fields: set[str] = set()  # rows mounted, not composed yet
        # every row and group heading made, kept: querying the form's ~1000 widgets took
        # 10 ms a time, on each keystroke
        self._rows: dict[str, SettingField] = {}
        self._headings: list[Static] = []
        self._opened_with = (dict(self.model.explicit), preset)  # Esc asks once they change

    # The model's state, read where the screen was read before it had a model.
    explicit = property(lambda self: self.model.explicit)
    resolved = property(lambda self: self.model.resolved)
    preset_name = property(lambda self: self.model.preset_name)
    profile_values = property(lambda self: self.model.profile_values)
    model_cfg = property(lambda self: self.model.model_cfg)
    advanced = property(lambda self: self.model.advanced)

    def current_values(self) -> dict[str, Any]:
        return self.model.current_values()

    def blocking_problems(self) -> list[str]:
        return self.model.blocking_problems()

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        title = TITLES.get(self.mode, self.mode)
        with Horizontal(id="form-top"):
            yield Label(title, id="form-title")
            yield Checkbox("Advanced", value=False, id="advanced-switch", compact=True,
                           tooltip="Basic or Advanced settings (F2)")
            yield Label("VRAM", classes="top-label")
            yield Select([(p, p) for p in PROFILE_CHOICES], value=self.initial_profile or "auto",
                         id="profile-select", allow_blank=False, compact=True,
                         tooltip="VRAM profile: fills the fields with a vram_* preset")
            yield Select([], prompt="Preset", id="preset-select", allow_blank=True,
                         compact=True)
            yield Button("Load", id="preset-load", compact=True, action="screen.load_preset")
            yield Button("Save…", id="preset-save", compact=True, action="screen.save_preset",
                         tooltip="Save the form's settings as a local preset")
        # Only the fields shown now are built here (Basic shows a quarter of them); the rest
        # follow in batches once the form is on screen, or at once when one is to be shown:
        # styling all 74 rows up front kept a new form off the screen for 1.5 s.
        if self.model.advanced is None:
            settings = getattr(self.app, "settings", None)
            self.model.advanced = bool(settings and settings.form_mode == "advanced")
        if self.model.preset_name:
            self._read_preset(self.model.preset_name)
        self.model.resolve()
        views = self.model.field_views(lambda name: name in self.model.explicit)
        with VerticalScroll(id="form-body"):
            group = None
            for s in self.settings:
                if s.group != group:
                    group = s.group
                    heading = Static(group, classes="group-title", id=group_id(group))
                    self._headings.append(heading)
                    yield heading
                if views[s.name].visible:
                    yield self._new_field(s.name)
        yield Static("", id="field-help-bar", markup=False)
        yield Static("", id="vram-estimate", markup=False)
        yield Static("", id="form-status")
        with Horizontal(id="form-actions"):
            yield Button("Start (ctrl+s)", id="start", variant="success", compact=True,
                         action="screen.start")
            yield Button("Review (F3)", id="review", variant="primary", compact=True,
                         action="screen.review")
            yield Button("Back", id="back", compact=True, action="screen.back")
        yield Footer()

    def _new_field(self, name: str, value: Any = None) -> SettingField:
        """The row for setting ``name``, showing ``value`` (its explicit or default value when
        None); marked as the user's when they gave it."""
        s = self.model.by_name[name]
        if value is None:
            value = self.model.explicit.get(name, s.default)
        field = ModelField(s, value) if name == "model_variant" else SettingField(s, value)
        field.touched = name in self.model.explicit
        self._rows[name] = field
        return field

    def _add_fields(self, names: list[str], views: dict) -> None:
        """Mount the rows of ``names`` (not built yet) in schema order, each after the row or
        group heading before it, then redraw once they are composed."""
        bodies = self.query("#form-body")
        if not bodies:  # the screen is being taken down
            return
        body, waits = bodies.first(), []
        built: dict[str, SettingField] = {f.setting.name: f for f in body.query(SettingField)}
        wanted = set(names)
        anchor, group = None, None
        for s in self.settings:
            if s.group != group:  # a row goes after its heading or the last row built
                heading = body.query(f"#{group_id(s.group)}")
                if not heading:  # being taken down
                    return
                anchor, group = heading.first(), s.group
            if s.name in wanted:
                field = self._new_field(s.name, views[s.name].value)
                field.display = views[s.name].visible
                waits.append(body.mount(field, after=anchor))
                built[s.name] = field
            anchor = built.get(s.name, anchor)
        self._pending_fields.update(names)

        async def composed() -> None:
            for wait in waits:
                await wait
            self._pending_fields.difference_update(names)
            self.refresh_form()

        self.call_later(composed)

    @property
    def built(self) -> bool:
        """Every row exists and is composed (a second or so after the form shows)."""
        return not self._pending_fields and len(self.query(SettingField)) == len(self.settings)

    def _build_hidden_fields(self) -> None:
        """Build the rows not shown yet, a few at a time, so Advanced opens at once later and
        keys typed meanwhile are not held up for long."""
        if not self._alive():
            return
        built = {f.setting.name for f in self.query(SettingField)} | self._pending_fields
        rest = [s.name for s in self.settings if s.name not in built][:8]
        if rest:
            views = self.model.field_views(lambda name: False)
            self._add_fields(rest, views)
            self.set_timer(0.05, self._build_hidden_fields)

    def on_mount(self) -> None:
        box = self.query_one("#advanced-switch", Checkbox)
        with box.prevent(Checkbox.Changed):
            box.value = self.model.advanced
        self.load_preset_list()
        self.apply_profile(self.initial_profile or "auto")
        self.refresh_form()
        for name in PATH_CHECKS:
            self.check_path(name)
        start = self.query(f"#field-{self.initial_focus} Input") if self.initial_focus else None
        first = (start or self.query(".field Input")).first()
        if first is not None:
            first.focus()
            if start:  # the field to change (a finished run's epochs): typing replaces it
                first.select_all()
        # after the focus above (the App runs its callbacks in order): keys typed after F
        release = getattr(self.app, "release_keys", None)
        if release is not None:
            self.app.call_later(release)
        self.set_timer(0.3, self._build_hidden_fields)

    # -- presets -------------------------------------------------------------------------------
    @work(thread=True, group="presets", exclusive=True)
    def load_preset_list(self) -> None:
        store = PresetStore()
        self.post_message(PresetsListed(store, store.list()))

    def on_presets_listed(self, message: PresetsListed) -> None:
        if not self._alive():
            return
        infos, name = message.infos, self.model.preset_name
        select = self.query_one("#preset-select", Select)
        options = [(f"{i.name} ({i.source})", i.name) for i in infos]
        with select.prevent(Select.Changed):
            select.set_options(options)
            if name and any(i.name == name for i in infos):
                select.value = name

    def load_preset(self, name: str) -> None:
        if self._read_preset(name):
            self.refresh_form()

    def _read_preset(self, name: str) -> bool:
        """Put preset ``name``'s values in the model (False, and an error shown, if it
        cannot be read)."""
        try:
            preset = PresetStore().load(name)
        except PresetError as exc:
            self.app.show_error("Preset not loaded", str(exc))
            return False
        for key in self.model.set_preset(name, preset.values):  # the preset decides these
            field = self._field(key)
            if field:
                field.touched = False
        if preset.ignored:
            self.notify(f"preset {name}: ignored unknown fields {', '.join(preset.ignored)}",
                        severity="warning")
        return True

    def action_load_preset(self) -> None:
        value = self.query_one("#preset-select", Select).value
        if value is Select.NULL:
            self.notify("pick a preset first", severity="warning")
            return
        self.load_preset(str(value))
        self.notify(f"loaded preset {value}")

    def action_save_preset(self) -> None:
        from sidestep.tui.preset_writes import save_preset
        from sidestep.tui.screens.dialogs import PromptScreen

        def save(name: str | None) -> None:
            if name:
                save_preset(self.app, name, self.model.values_for_preset(),
                            "saved from the training form", self.load_preset_list)

        self.app.push_screen(PromptScreen("Save preset", "Preset name (saved in ./presets):",
                                          self.model.preset_name or ""), save)

    # -- VRAM profile and estimate -------------------------------------------------------------
    @work(thread=True, exclusive=True, group="vram-profile")
    def apply_profile(self, name: str, chosen: bool = False) -> None:
        """Fill the fields from a VRAM profile (auto: from the detected GPU), off the UI
        thread because detection talks to NVML."""
        from sidestep.config.profiles import profile_values

        gpus = self.app.detect_gpus() if hasattr(self.app, "detect_gpus") else []
        try:
            values, note = profile_values(name, detect=lambda: gpus)
        except (ValueError, PresetError) as exc:
            values, note = {}, str(exc)
        self.post_message(ProfileApplied(name, values, note, gpus, chosen))

    def on_profile_applied(self, message: ProfileApplied) -> None:
        if not self._alive():
            return
        taken = self.model.set_profile(message.values, message.note, message.gpus,
                                       message.chosen)
        self.refresh_form()
        if taken:
            labels = ", ".join(self.model.by_name[k].label for k in taken)
            self.notify(f"VRAM profile {message.name} sets {labels} (over the preset "
                        f"{self.model.preset_name})", timeout=8)

    @on(Select.Changed, "#profile-select")
    def profile_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.apply_profile(event.value, chosen=True)

    def _update_estimate(self) -> None:
        line = self.query_one("#vram-estimate", Static)
        text, verdict = self.model.estimate_line()
        if line.content != text:
            line.update(text)
        if verdict is not None:
            line.set_class(verdict == "will not fit", "estimate-bad")
            line.set_class(verdict == "tight", "estimate-tight")

    # -- resolution ----------------------------------------------------------------------------
    def _field(self, name: str) -> SettingField | None:
        field = self._rows.get(name)
        return field if field is not None and field.is_attached else None

    def _mounted_rows(self) -> dict[str, SettingField]:
        return {name: f for name, f in self._rows.items() if f.is_attached}

    def _alive(self) -> bool:
        """False once the screen is being removed (worker results may still arrive)."""
        return self.is_attached and not self._closing and not self._closed

    def refresh_form(self, keep_focused: bool = True) -> None:
        """Resolve and redraw every field. The field holding focus stays shown even when the
        edit makes it hidden (its error fixed, or a condition changed): hiding it would move
        focus, and the next keystroke would land in another field."""
        if not self._alive():
            return
        self.model.resolve()
        fields = self._mounted_rows()
        views = self.model.field_views(lambda name: name in fields and fields[name].touched)
        missing = [name for name, view in views.items() if view.visible and name not in fields]
        if missing:
            self._add_fields(missing, views)
        for name, view in views.items():
            field = fields.get(name)
            if field is None or name in self._pending_fields or not field.ready:
                continue
            visible = view.visible
            if keep_focused and not visible and field.display and field.has_focus_within:
                visible = True
            field.display = visible
            if not field.touched:
                field.show_value(view.value)
            field.set_error(view.error)
            if not view.error:
                field.set_note(view.note, view.note_kind)
        for heading in self._headings:
            group = str(heading.render())
            heading.display = any(f.display for f in fields.values() if f.setting.group == group)
        status = self.query_one("#form-status", Static)
        line, bad = self.model.status_line()
        if status.content != line:
            status.update(line)
        status.set_class(bad, "status-error")
        self._update_estimate()

    def on_descendant_focus(self, event) -> None:
        node = event.widget
        while node is not None and not isinstance(node, SettingField):
            node = node.parent
        bar = self.query_one("#field-help-bar", Static)
        if isinstance(node, SettingField):
            s = node.setting
            extra = f"  [{s.flags[-1]}]"
            bar.update(f"{s.label}: {in_app_words(s.help)}{extra}")

    # -- editing -------------------------------------------------------------------------------
    @on(SettingField.Edited)
    def field_edited(self, event: SettingField.Edited) -> None:
        name = event.field.setting.name
        self.model.edit(name, event.raw)
        self.refresh_form()
        if name in PATH_CHECKS:
            self.check_path(name)
        if name == "resume_from":
            self.check_path("output_dir")
        if name == "model_variant":
            self.load_model_config()

    @on(Checkbox.Changed, "#advanced-switch")
    def advanced_changed(self, event: Checkbox.Changed) -> None:
        self.model.advanced = event.value
        self.refresh_form(keep_focused=False)  # the user asked for fewer fields

    def action_toggle_advanced(self) -> None:
        box = self.query_one("#advanced-switch", Checkbox)
        box.value = not box.value

    # -- path checks (off the UI thread) -------------------------------------------------------
    def check_path(self, name: str) -> None:
        if name not in self.model.by_name:
            return
        work = partial(self._check_path, name, self.model.value(name),
                       self.model.value("resume_from"))
        # one exclusive group per field: a newer check of the same field replaces an older one
        self.run_worker(work, thread=True, exclusive=True, group=f"path-{name}")

    def _check_path(self, name: str, value: Any, resume: Any) -> None:
        self.post_message(PathChecked((value, resume), name, *check_path(name, value, resume)))

    def on_path_checked(self, message: PathChecked) -> None:
        if not self._alive():
            return
        # a thread worker runs on when a newer check replaces it: a slow check of "/etc/"
        # arrived after the one of "/etc/passwd" and its "not empty" stood for the file
        if message.checked != (self.model.value(message.name), self.model.value("resume_from")):
            return
        self.model.set_path_check(message.name, message.error, message.note)
        if message.name == "checkpoint_dir" and message.found is not None:
            model = self._field("model_variant")
            if isinstance(model, ModelField):
                model.set_entries(message.found)
        if message.name == "resume_from":
            self.model.epochs_done = message.found
        if message.name in ("checkpoint_dir", "model_variant"):
            self.load_model_config()
        self.refresh_form()

    def load_model_config(self) -> None:
        self.model.model_cfg_pending = True
        self._load_model_config(self.model.value("checkpoint_dir"),
                                self.model.value("model_variant"))

    @work(thread=True, exclusive=True, group="model-config")
    def _load_model_config(self, root: Any, variant: Any) -> None:
        from sidestep.config.profiles import model_config_dict

        self.post_message(ModelConfigLoaded(model_config_dict(root, variant)))

    def on_model_config_loaded(self, message: ModelConfigLoaded) -> None:
        if self._alive():
            self.model.model_cfg = message.config
            self.model.model_cfg_pending = False
            self.refresh_form()

    # -- actions -------------------------------------------------------------------------------
    def config_or_none(self):
        self.model.tried_start = True
        self.refresh_form()
        problems = self.model.blocking_problems()
        if problems or self.model.resolved is None:
            self.notify("Start refused: fix the fields marked in red — " + problems[0]
                        if problems else "Start refused", severity="error", timeout=6)
            return None
        return self.model.resolved

    def action_start(self) -> None:
        resolved = self.config_or_none()
        if resolved is not None:
            self.app.start_run(resolved.config)

    def action_review(self) -> None:
        from sidestep.tui.screens.review import ReviewScreen

        resolved = self.config_or_none()
        if resolved is None:
            return

        def done(choice: str | None) -> None:
            if choice == "start":
                self.app.start_run(resolved.config)

        # the memory estimate the form shows, as the review promises
        self.app.push_screen(ReviewScreen(resolved, self.model.estimate_line()[0],
                                          notes=self.model.resume_notes()), done)

    def edited(self) -> bool:
        """Typed values, a typo or a preset since the form opened."""
        return (self.model.explicit, self.model.preset_name) != self._opened_with or \
            bool(self.model.parse_errors)

    def action_back(self) -> None:
        """Esc or Back: edits would be lost without a word (a stray Esc, even the one that
        closes the palette's Keys panel, threw away a whole form), so they are asked about."""
        if not self.edited():
            self.app.action_dashboard()
            return
        from sidestep.tui.screens.dialogs import leave_or_stay

        leave_or_stay(self.app, "Leave the form?", "What you typed in this form is not kept.",
                      self.app.action_dashboard)
