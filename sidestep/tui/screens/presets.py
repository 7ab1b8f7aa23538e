"""The presets screen: list (local, global, built-in), view, load, save, delete, import,
export — the same store as ``sidestep presets``."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from sidestep.config import schema
from sidestep.config.presets import PresetError, PresetStore
from sidestep.config.values import to_text
from sidestep.tui.messages import PresetsListed
from sidestep.tui.widgets.tables import FitTable, fill_table


class PresetsScreen(Screen):
    BINDINGS = [Binding("escape", "dashboard", "Dashboard"), Binding("enter", "load", "Load")]

    def __init__(self):
        super().__init__()
        self.infos = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="preset-dirs", markup=False)
        with Horizontal(id="presets-main"):
            yield FitTable(id="presets-table", cursor_type="row", zebra_stripes=True)
            yield FitTable(id="preset-values", show_cursor=False)
        with Horizontal(id="preset-actions"):
            yield Button("Load in form", id="load", variant="primary", compact=True,
                         action="screen.load")
            yield Button("Save form…", id="save", compact=True, action="screen.save_form")
            yield Button("Delete", id="delete", variant="error", compact=True,
                         action="screen.delete_preset")
            yield Button("Import…", id="import", compact=True, action="screen.import_preset")
            yield Button("Export…", id="export", compact=True, action="screen.export_preset")
            yield Button("Back", id="dash", compact=True, action="screen.dashboard")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#presets-table", DataTable).focus()

    @work(thread=True, exclusive=True, group="presets")
    def reload(self) -> None:
        store = PresetStore()
        self.post_message(PresetsListed(store, store.list()))

    def on_presets_listed(self, message: PresetsListed) -> None:
        store, infos = message.store, message.infos
        self.infos = infos
        from sidestep.config.paths import short

        self.query_one("#preset-dirs", Static).update(
            f"local {short(store.dirs['local'])} · global {short(store.dirs['global'])} · "
            "built-in (read-only)")
        self._fill()
        self.call_after_refresh(self._fill)  # again once laid out: the table's width is known
        self._view()

    def _fill(self) -> None:
        """The list, its descriptions cut to the table's width (refilled on resize)."""
        table = self.query_one("#presets-table", DataTable)
        rows = [(i.name, i.source + (f" (hides {', '.join(i.shadows)})" if i.shadows else ""),
                 i.description) for i in self.infos]
        row = table.cursor_row
        fill_table(table, ("name", "location", "description"), rows,
                   [i.name for i in self.infos], fit_last=True)
        if row is not None and 0 < row < table.row_count:  # a refill keeps the chosen preset
            table.move_cursor(row=row)

    def on_resize(self) -> None:
        if self.infos:
            self.call_after_refresh(self._fill)

    def selected(self):
        table = self.query_one("#presets-table", DataTable)
        if not self.infos or table.cursor_row is None or table.cursor_row >= len(self.infos):
            return None
        return self.infos[table.cursor_row]

    @on(DataTable.RowSelected, "#presets-table")
    def _chosen(self) -> None:
        """Enter on the list (the table takes the key before the screen's binding sees it)."""
        self.action_load()

    @on(DataTable.RowHighlighted, "#presets-table")
    def _highlighted(self) -> None:
        self._view()

    def _view(self) -> None:
        values = self.query_one("#preset-values", DataTable)
        info = self.selected()
        rows: list[tuple[str, str]] = []
        if info is not None:
            try:
                preset = PresetStore().load(info.name)
            except PresetError as exc:
                rows = [("error", str(exc))]
            else:
                rows = [(s.file_key, to_text(s, preset.values[s.name]) or "(none)")
                        for s in schema.PRESET_FIELDS if s.name in preset.values]
        fill_table(values, ("field", "value"), rows)

    def action_load(self) -> None:
        info = self.selected()
        if info is not None:
            self.app.load_preset_in_form(info.name)

    def action_dashboard(self) -> None:
        self.app.action_dashboard()

    def _prompt(self, title: str, label: str, value: str, then) -> None:
        from sidestep.tui.screens.dialogs import PromptScreen

        self.app.push_screen(PromptScreen(title, label, value), then)

    def _write(self, write, ok: str, refused=None) -> None:
        """``write(overwrite)``, asking before it replaces a file (preset_writes)."""
        from sidestep.tui.preset_writes import write_asking

        def done(result) -> None:
            self.notify(ok.format(result=result))
            self.reload()

        write_asking(self.app, write, done, "Preset", refused)

    def _do(self, fn, ok: str) -> None:
        try:
            result = fn()
        except (PresetError, OSError) as exc:
            self.app.show_error("Preset", str(exc))
            return
        self.notify(ok.format(result=result))
        self.reload()

    def action_save_form(self) -> None:
        values = self.app.last_form_values()
        if not values:
            self.app.show_error("Nothing to save", "Open the training form first (F), "
                                "set it up, then save it here or from the form.")
            return
        from sidestep.tui.preset_writes import save_preset

        self._prompt("Save preset", "Name for a local preset:", "",
                     lambda name: name and save_preset(self.app, name, values,
                                                       "saved from the app", self.reload))

    def action_delete_preset(self) -> None:
        from sidestep.tui.screens.dialogs import ConfirmScreen

        info = self.selected()
        if info is None:
            return
        if info.source == "builtin":  # refused before asking, not after
            self.app.show_error("Cannot delete", f"'{info.name}' is a built-in preset and "
                                "cannot be deleted; save a local preset of the same name to "
                                "use your own values instead")
            return
        store = PresetStore()

        def answer(choice: str) -> None:
            if choice == "delete":
                self._do(lambda: store.delete(info.name)[1], "deleted {result}")

        self.app.push_screen(ConfirmScreen(
            "Delete preset?", f"Delete {info.source} preset '{info.name}'?",
            [("delete", "Delete", "error"), ("cancel", "Cancel", "primary")]), answer)

    def action_import_preset(self) -> None:
        self._prompt("Import preset", "Path of a preset JSON file:", "",
                     lambda path: path and self._write(
                         lambda overwrite: PresetStore().import_file(
                             Path(path).expanduser(), overwrite=overwrite)[1],
                         "imported to {result}"))

    def action_export_preset(self) -> None:
        info = self.selected()
        if info is not None:
            self._export(info.name, f"./{info.name}.json")

    def _export(self, name: str, value: str, problem: str = "") -> None:
        """The export prompt; a refused export opens it again with the path typed and why."""
        label = f"Write '{name}' to (file or folder):"
        if problem:
            label = f"✗ {problem}\n{label}"

        def chosen(path: str | None) -> None:
            if path:
                self._write(lambda overwrite: PresetStore().export(
                    name, Path(path).expanduser(), overwrite=overwrite),
                    "exported to {result}", lambda why: self._export(name, path, why))

        self._prompt("Export preset", label, value, chosen)
