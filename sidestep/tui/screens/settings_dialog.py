"""A dialog of one command's schema settings (build-dataset, preprocess), checked by the same
``resolve`` the CLI uses; it dismisses with the resolved config, or None when cancelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Label, Select, Static

from sidestep.config.schema import BY_NAME
from sidestep.tui.messages import DialogPathsChecked, PathChecked
from sidestep.tui.widgets.fields import SettingField
from sidestep.tui.wording import in_app_words


class SettingsDialog(ModalScreen[Any]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "ok", "OK")]

    def __init__(self, command: str, title: str, names: tuple[str, ...], *,
                 values: dict[str, Any] | None = None, fixed: dict[str, Any] | None = None,
                 note: str = "", ok_label: str = "OK"):
        super().__init__(classes="dialog-screen")
        self.command = command
        self.title_text = title
        self.names = names
        self.values = values or {}
        self.fixed = fixed or {}   # settings the caller decides (not shown)
        self.note = note
        self.ok_label = ok_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog settings-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.note:
                yield Static(self.note, classes="dialog-body", markup=False)
            with VerticalScroll(classes="settings-dialog-fields"):
                for name in self.names:
                    s = BY_NAME[name]
                    yield SettingField(s, self.values.get(name, s.default))
            yield Static("", id="settings-dialog-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok_label, id="ok", variant="primary", action="screen.ok")
                yield Button("Cancel", id="cancel", action="screen.cancel")
        # the dialog's own keys: the footer underneath showed the screen's, which do nothing here
        yield Footer()

    def on_mount(self) -> None:
        self.query(SettingField).first().control.focus()

    def explicit(self) -> dict[str, Any] | None:
        """The typed values of the fields; None (with the field's error shown) when one does
        not parse."""
        from sidestep.config.values import parse_text

        out: dict[str, Any] = dict(self.fixed)
        ok = True
        for field in self.query(SettingField):
            raw = field.raw_value()
            field.set_error(None)
            if isinstance(field.control, (Checkbox, Select)):
                value = raw
            else:
                try:
                    value = parse_text(field.setting, raw)
                except ValueError as exc:
                    field.set_error(str(exc))
                    ok = False
                    continue
            if value is not None:
                out[field.setting.name] = value
        return out if ok else None

    def action_ok(self) -> None:
        from sidestep.config.resolve import ConfigError, resolve

        explicit = self.explicit()
        if explicit is None:
            return
        try:
            resolved = resolve(self.command, explicit)
        except ConfigError as exc:
            fields = {f.setting.name: f for f in self.query(SettingField)}
            general = []
            for problem in exc.problems:
                if problem.field in fields:
                    fields[problem.field].set_error(in_app_words(problem.message))
                else:
                    general.append(in_app_words(str(problem)))
            self.query_one("#settings-dialog-error", Static).update("\n".join(general))
            return
        self._check_paths(resolved.config)

    # Folders and files the command reads: checked before it closes, so a mistyped one is an
    # error on its field, not a second dialog after this one has closed.
    READ_PATHS = ("checkpoint_dir", "dataset_dir", "module_config", "dataset_json")
    # checked as typed too (a quick read of one file), as the form checks its path fields
    TYPED_CHECKS = ("dataset_json",)

    @work(thread=True, exclusive=True, group="dialog-paths")
    def _check_paths(self, config) -> None:
        """Off the UI thread: the checks list folders (a slow or network disk)."""
        from sidestep.tui.form_model import check_path

        errors = {}
        for name in self.READ_PATHS:
            if name in self.names and getattr(config, name, None):
                error, _, _ = check_path(name, getattr(config, name), None)
                if error:
                    errors[name] = error
        if "tensor_output" in self.names and config.tensor_output:
            # the folder preprocessing writes: a read-only one, or the songs folder itself,
            # failed on the next screen (its progress bar pulsing on, its keys doing nothing)
            from sidestep.data.preprocess import PreprocessError, check_output_dir

            try:
                check_output_dir(config.tensor_output, (config.audio_dir,))
            except PreprocessError as exc:
                errors["tensor_output"] = str(exc)
        if self.command == "build-dataset":
            # the file it writes (replacing one is asked about after): a read-only songs
            # folder is answered here, where Output file can send it elsewhere
            from sidestep.data.paths import output_file_problem

            target = config.output or Path(config.input) / "dataset.json"
            problem = output_file_problem(target, "--output", "dataset.json")
            if problem:
                errors["output"] = problem
        self.post_message(DialogPathsChecked(config, errors))

    def on_dialog_paths_checked(self, message: DialogPathsChecked) -> None:
        if not self.is_current:  # (a second OK's answer, after the first closed it)
            return
        if not message.errors:
            self.dismiss(message.config)
            return
        for field in self.query(SettingField):
            if field.setting.name in message.errors:
                field.set_error(in_app_words(message.errors[field.setting.name]))

    @on(SettingField.Edited)
    def field_edited(self, event: SettingField.Edited) -> None:
        """Each field is checked as it is typed in, as on the form: an error shown at OK
        stayed under a value that had since been fixed ("150" over "got 'xyz'")."""
        from sidestep.config.values import parse_text

        field = event.field
        try:
            if not isinstance(field.control, (Checkbox, Select)):
                parse_text(field.setting, field.raw_value())
        except ValueError as exc:
            field.set_error(in_app_words(str(exc)))
        else:
            field.set_error(None)
            if field.setting.name in self.TYPED_CHECKS:
                self._check_typed(field.setting.name, field.raw_value())

    @work(thread=True, exclusive=True, group="dialog-typed")
    def _check_typed(self, name: str, value: Any) -> None:
        from sidestep.tui.form_model import check_path

        text = str(value or "").strip()
        self.post_message(PathChecked((value,), name, *check_path(name, text, None)))

    def on_path_checked(self, message: PathChecked) -> None:
        for field in self.query(SettingField):
            # a result for text since changed is dropped (a slow read of an older value)
            if field.setting.name == message.name and (field.raw_value(),) == message.checked:
                if message.error:
                    field.set_error(in_app_words(message.error))
                else:
                    field.set_error(None)
                    field.set_note(message.note, "info")

    def action_cancel(self) -> None:
        self.dismiss(None)
