"""The training form, generated from the settings schema.

The form is a view over ``resolve(mode, explicit, preset)``, the same function the CLI uses:
fields the user edited are explicit values, a loaded preset fills the rest, and untouched fields
show what resolution gives (so shift and CFG follow the model variant). Start is refused while
any field is invalid; errors appear under their fields.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Label, Select, Static

from sidestep.config import schema
from sidestep.config.presets import PresetError, PresetStore
from sidestep.config.profiles import PROFILE_CHOICES
from sidestep.config.resolve import ConfigError, Resolved, layered_values, resolve
from sidestep.config.values import parse_text
from sidestep.tui.widgets.fields import ModelField, SettingField

# The modes the form offers; selective arrives with the estimate screen.
FORM_MODES = tuple(m for m in schema.TRAIN_MODES if m != "selective")
# Settings only selective training takes (its module config and estimate settings).
SELECTIVE_ONLY = {s.name for s in schema.SETTINGS
                  if "selective" in s.commands and not set(s.commands) & set(FORM_MODES)}
PATH_CHECKS = ("checkpoint_dir", "dataset_dir", "output_dir", "resume_from")


def form_settings(mode: str) -> list[schema.Setting]:
    return [s for s in schema.settings_for(mode) if s.name not in SELECTIVE_ONLY]


class TrainingFormScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", id="form_start"),
        Binding("f2", "toggle_advanced", "Basic/Advanced", id="form_mode"),
        Binding("f3", "review", "Review", id="form_review"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, mode: str = "fixed", explicit: dict[str, Any] | None = None,
                 preset: str | None = None, advanced: bool | None = None,
                 vram_profile: str | None = None):
        super().__init__()
        self.mode = mode
        self.settings = form_settings(mode)
        self.by_name = {s.name: s for s in self.settings}
        self.explicit: dict[str, Any] = {k: v for k, v in (explicit or {}).items()
                                         if k in self.by_name}
        self.preset_name = preset
        self.preset_values: dict[str, Any] = {}
        self.parse_errors: dict[str, str] = {}
        self.path_errors: dict[str, str] = {}
        self.path_notes: dict[str, str] = {}
        self.resolved: Resolved | None = None
        self.config_errors: list = []
        self.tried_start = False
        self.advanced = advanced
        self.initial_profile = vram_profile
        self.profile_values: dict[str, Any] = {}
        self.profile_note: str | None = None
        self.gpus: list[dict] = []
        self.model_cfg: dict | None = None

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        title = "Fixed training" if self.mode == "fixed" else "Vanilla training"
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
            yield Button("Load", id="preset-load", compact=True)
            yield Button("Save…", id="preset-save", compact=True,
                         tooltip="Save the form's settings as a local preset")
        with VerticalScroll(id="form-body"):
            group = None
            for s in self.settings:
                if s.group != group:
                    group = s.group
                    yield Static(group, classes="group-title",
                                 id=f"group-{group.replace(' ', '-').replace('/', '')}")
                value = self.explicit.get(s.name, s.default)
                field = ModelField(s, value) if s.name == "model_variant" else \
                    SettingField(s, value)
                if s.name in self.explicit:
                    field.touched = True
                yield field
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

    def on_mount(self) -> None:
        settings = getattr(self.app, "settings", None)
        if self.advanced is None:
            self.advanced = bool(settings and settings.form_mode == "advanced")
        box = self.query_one("#advanced-switch", Checkbox)
        with box.prevent(Checkbox.Changed):
            box.value = self.advanced
        self.load_preset_list()
        if self.preset_name:
            self.load_preset(self.preset_name)
        self.apply_profile(self.initial_profile or "auto")
        self.refresh_form()
        for name in PATH_CHECKS:
            self.check_path(name)
        first = self.query(".field Input").first()
        if first is not None:
            first.focus()

    # -- presets -------------------------------------------------------------------------------
    @work(thread=True, group="presets", exclusive=True)
    def load_preset_list(self) -> None:
        infos = PresetStore().list()
        self.app.call_from_thread(self._set_preset_options, infos)

    def _set_preset_options(self, infos) -> None:
        if not self._alive():
            return
        select = self.query_one("#preset-select", Select)
        options = [(f"{i.name} ({i.source})", i.name) for i in infos]
        with select.prevent(Select.Changed):
            select.set_options(options)
            if self.preset_name and any(i.name == self.preset_name for i in infos):
                select.value = self.preset_name

    def load_preset(self, name: str) -> None:
        try:
            preset = PresetStore().load(name)
        except PresetError as exc:
            self.app.show_error("Preset not loaded", str(exc))
            return
        self.preset_name = name
        self.preset_values = {k: v for k, v in preset.values.items() if k in self.by_name}
        for key in self.preset_values:  # the preset now decides these fields
            self.explicit.pop(key, None)
            self.parse_errors.pop(key, None)
            field = self._field(key)
            if field:
                field.touched = False
        self.refresh_form()
        if preset.ignored:
            self.notify(f"preset {name}: ignored unknown fields {', '.join(preset.ignored)}",
                        severity="warning")

    # -- VRAM profile and estimate -------------------------------------------------------------
    def apply_profile(self, name: str) -> None:
        """Fill the fields from a VRAM profile (auto: from the detected GPU), off the UI
        thread because detection talks to NVML."""
        def run() -> None:
            from sidestep.config.profiles import profile_values

            gpus = self.app.detect_gpus() if hasattr(self.app, "detect_gpus") else []
            try:
                values, note = profile_values(name, detect=lambda: gpus)
            except (ValueError, PresetError) as exc:
                values, note = {}, str(exc)
            self.app.call_from_thread(self._set_profile, name, values, note, gpus)

        self.run_worker(run, thread=True, exclusive=True, group="vram-profile")

    def _set_profile(self, name: str, values: dict, note: str | None, gpus: list) -> None:
        if not self._alive():
            return
        self.gpus = gpus
        self.profile_values = {k: v for k, v in values.items() if k in self.by_name}
        self.profile_note = note
        self.refresh_form()

    @on(Select.Changed, "#profile-select")
    def profile_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.apply_profile(event.value)

    def _update_estimate(self) -> None:
        line = self.query_one("#vram-estimate", Static)
        if self.resolved is None:
            line.update("VRAM estimate: — (fix the fields first)")
            return
        from sidestep.config.vram import GIB_MIB, estimate

        cfg = self.resolved.config
        try:
            est = estimate(cfg, self.model_cfg)
        except ValueError as exc:
            line.update(f"VRAM estimate: {exc}")
            return
        text = f"VRAM estimate: {est.total_gib:.1f} GiB peak"
        free = self.gpus[0].get("free_mib") if self.gpus else None
        verdict = est.verdict(free) if free else None
        if verdict:
            text += f" — {verdict} ({free / GIB_MIB:.1f} GiB free on " \
                    f"{self.gpus[0].get('name') or 'GPU 0'})"
            if self.profile_note:
                text += f" · {self.profile_note}"
        else:
            text += " — no GPU detected" + (" (auto profile not applied)"
                                            if self.profile_note else "")
        line.update(text)
        line.set_class(verdict == "will not fit", "estimate-bad")
        line.set_class(verdict == "tight", "estimate-tight")

    def current_values(self) -> dict[str, Any]:
        """Every field's current value (resolved where the form is valid)."""
        if self.resolved is not None:
            return self.resolved.config.to_dict()
        return {s.name: self._display_value(s) for s in self.settings}

    # -- resolution ----------------------------------------------------------------------------
    def _field(self, name: str) -> SettingField | None:
        found = self.query(f"#field-{name}")
        return found.first() if found else None

    def layered(self) -> dict[str, Any]:
        """Every field's value by the one precedence ``resolve`` uses (also while the form is
        invalid): defaults < platform < model family < profile < preset < typed values."""
        return layered_values(self.mode, self.explicit, self.preset_values,
                              self.profile_values)[0]

    def _value(self, name: str) -> Any:
        return self.layered().get(name)

    def _visible_by_condition(self, s: schema.Setting) -> bool:
        if not s.shown_when:
            return True
        other, allowed = s.shown_when
        return self._value(other) in allowed

    def _display_value(self, s: schema.Setting) -> Any:
        return self._value(s.name)

    def explicit_for_resolve(self) -> dict[str, Any]:
        return {k: v for k, v in self.explicit.items()
                if self._visible_by_condition(self.by_name[k])}

    def _alive(self) -> bool:
        """False once the screen is being removed (worker results may still arrive)."""
        return self.is_attached and not self._closing and not self._closed

    def refresh_form(self, keep_focused: bool = True) -> None:
        """Resolve and redraw every field. The field holding focus stays shown even when the
        edit makes it hidden (its error fixed, or a condition changed): hiding it would move
        focus, and the next keystroke would land in another field."""
        if not self._alive():
            return
        explicit = self.explicit_for_resolve()
        try:
            self.resolved = resolve(self.mode, explicit, self.preset_values,
                                    profile=self.profile_values)
            self.config_errors = []
        except ConfigError as exc:
            self.resolved = None
            self.config_errors = exc.problems
        resolved = self.resolved.config.to_dict() if self.resolved else None
        warnings = {w.field: w.message for w in (self.resolved.warnings if self.resolved
                                                  else ())}
        errors = {}
        for problem in self.config_errors:
            errors.setdefault(problem.field, problem.message)
        for s in self.settings:
            field = self._field(s.name)
            if field is None:
                continue
            visible = self._visible_by_condition(s) and (self.advanced or s.level == "basic"
                                                         or s.name in errors)
            if keep_focused and not visible and field.display and field.has_focus_within:
                visible = True
            field.display = visible
            if not field.touched:
                field.show_value(resolved[s.name] if resolved else self._display_value(s))
            message = self.parse_errors.get(s.name) or self.path_errors.get(s.name)
            if message is None and s.name in errors and (field.touched or self.tried_start
                                                         or errors[s.name] != "is required"):
                message = errors[s.name]
            field.set_error(message)
            if not message:
                if s.name in warnings:
                    field.set_note(warnings[s.name], "warning")
                else:
                    field.set_note(self.path_notes.get(s.name), "info")
        for heading in self.query(".group-title"):
            group = str(heading.render())
            heading.display = any(
                f.display for f in self.query(SettingField) if f.setting.group == group)
        self._update_status()
        self._update_estimate()

    def _update_status(self) -> None:
        problems = self.blocking_problems()
        status = self.query_one("#form-status", Static)
        if problems:
            shown = problems[0] if len(problems) == 1 else \
                f"{len(problems)} fields need attention; first: {problems[0]}"
            status.update(f"✗ {shown}")
            status.set_class(True, "status-error")
        else:
            cfg = self.resolved.config if self.resolved else None
            line = "✓ ready"
            if cfg is not None:
                line += f": {cfg.mode} {cfg.adapter_type}, {cfg.epochs} epochs, " \
                        f"lr {cfg.learning_rate:g}, model {cfg.model_variant}"
            status.update(line)
            status.set_class(False, "status-error")

    def blocking_problems(self) -> list[str]:
        out = []
        for name, msg in list(self.parse_errors.items()) + list(self.path_errors.items()):
            s = self.by_name.get(name)
            out.append(f"{s.label if s else name}: {msg}")
        for problem in self.config_errors:
            if problem.field in self.parse_errors or problem.field in self.path_errors:
                continue
            s = self.by_name.get(problem.field)
            out.append(f"{s.label if s else problem.field}: {problem.message}")
        return out

    def on_descendant_focus(self, event) -> None:
        node = event.widget
        while node is not None and not isinstance(node, SettingField):
            node = node.parent
        bar = self.query_one("#field-help-bar", Static)
        if isinstance(node, SettingField):
            s = node.setting
            extra = f"  [{s.flags[-1]}]"
            bar.update(f"{s.label}: {s.help}{extra}")

    # -- editing -------------------------------------------------------------------------------
    @on(SettingField.Edited)
    def field_edited(self, event: SettingField.Edited) -> None:
        s = event.field.setting
        raw = event.raw
        try:
            value = parse_text(s, raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            self.parse_errors[s.name] = str(exc)
            self.explicit.pop(s.name, None)
        else:
            self.parse_errors.pop(s.name, None)
            self.explicit[s.name] = value
        self.refresh_form()
        if s.name in PATH_CHECKS:
            self.check_path(s.name)
        if s.name == "resume_from":
            self.check_path("output_dir")
        if s.name == "model_variant":
            self.load_model_config()

    @on(Checkbox.Changed, "#advanced-switch")
    def advanced_changed(self, event: Checkbox.Changed) -> None:
        self.advanced = event.value
        self.refresh_form(keep_focused=False)  # the user asked for fewer fields

    def action_toggle_advanced(self) -> None:
        box = self.query_one("#advanced-switch", Checkbox)
        box.value = not box.value

    @on(Button.Pressed, "#preset-load")
    def preset_load_pressed(self) -> None:
        value = self.query_one("#preset-select", Select).value
        if value is Select.NULL:
            self.notify("pick a preset first", severity="warning")
            return
        self.load_preset(str(value))
        self.notify(f"loaded preset {value}")

    @on(Button.Pressed, "#preset-save")
    def preset_save_pressed(self) -> None:
        from sidestep.tui.screens.dialogs import PromptScreen

        def save(name: str | None) -> None:
            if not name:
                return
            values = self.current_values()
            try:
                path = PresetStore().save(name, values, "saved from the training form")
            except PresetError as exc:
                self.app.show_error("Preset not saved", str(exc))
                return
            self.notify(f"saved preset to {path}")
            self.load_preset_list()

        self.app.push_screen(PromptScreen("Save preset", "Preset name (saved in ./presets):",
                                          self.preset_name or ""), save)

    # -- path checks (off the UI thread) -------------------------------------------------------
    def check_path(self, name: str) -> None:
        if name not in self.by_name:
            return
        value = self._value(name)
        resume = self._value("resume_from")

        def run() -> None:
            error, note, entries = _check(name, value, resume)
            self.app.call_from_thread(self._apply_check, name, error, note, entries)

        # one exclusive group per field: a newer check of the same field replaces an older one
        self.run_worker(run, thread=True, exclusive=True, group=f"path-{name}")

    def _apply_check(self, name: str, error: str | None, note: str | None, entries) -> None:
        if not self._alive():
            return
        if error:
            self.path_errors[name] = error
        else:
            self.path_errors.pop(name, None)
        if note:
            self.path_notes[name] = note
        else:
            self.path_notes.pop(name, None)
        if entries is not None:
            model = self._field("model_variant")
            if isinstance(model, ModelField):
                model.set_entries(entries)
        if name in ("checkpoint_dir", "model_variant"):
            self.load_model_config()
        self.refresh_form()

    def load_model_config(self) -> None:
        from sidestep.config.profiles import model_config_dict

        root, variant = self._value("checkpoint_dir"), self._value("model_variant")

        def run() -> None:
            cfg = model_config_dict(root, variant)
            self.app.call_from_thread(self._set_model_config, cfg)

        self.run_worker(run, thread=True, exclusive=True, group="model-config")

    def _set_model_config(self, cfg: dict | None) -> None:
        if self._alive():
            self.model_cfg = cfg
            self.refresh_form()

    # -- actions -------------------------------------------------------------------------------
    def config_or_none(self):
        self.tried_start = True
        self.refresh_form()
        problems = self.blocking_problems()
        if problems or self.resolved is None:
            self.notify("Start refused: fix the fields marked in red — " + problems[0]
                        if problems else "Start refused", severity="error", timeout=6)
            return None
        return self.resolved

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

        self.app.push_screen(ReviewScreen(resolved), done)

    def action_back(self) -> None:
        self.app.action_dashboard()


def _check(name: str, value: Any, resume: Any) -> tuple[str | None, str | None, list | None]:
    """(error, note, model entries) for a path field; runs in a worker thread."""
    if not value:
        return None, None, ([] if name == "checkpoint_dir" else None)
    path = Path(str(value)).expanduser()
    if name == "checkpoint_dir":
        from sidestep.model.checkpoints import DiscoveryError, list_models

        try:
            entries = list_models(path)
        except DiscoveryError as exc:
            return str(exc), None, []
        if not entries:
            return (f"{path}: no ACE-Step model folders here (acestep-v15-turbo/, ...)", None,
                    [])
        return None, f"{len(entries)} model(s): " + ", ".join(e.name for e in entries[:4]), \
            entries
    if name == "dataset_dir":
        from sidestep.data.tensors import DataError, list_files

        try:
            files = list_files(path)
        except DataError as exc:
            return str(exc), None, None
        return None, f"{len(files)} preprocessed songs", None
    if name == "output_dir":
        from sidestep.engine.run_dir import RunDirError, check_output_dir

        try:
            check_output_dir(path, resume)
        except RunDirError as exc:
            return str(exc), None, None
        return None, ("new folder" if not path.exists() else None), None
    if name == "resume_from":
        from sidestep.engine.checkpointing import quick_problem

        return quick_problem(path), None, None
    return None, None, None


def fresh_run_dir(root: Path | str, prefix: str = "run") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / f"{prefix}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = Path(root) / f"{prefix}-{stamp}-{n}"
    return str(candidate)
