"""Run history: runs under the output roots, their curves (read-only), resume, export of a
finished run's adapter for ComfyUI, acestep.cpp or PEFT, and the audio samples a run rendered."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from sidestep.tui.messages import AdapterExported, RunsFound
from sidestep.tui.screens.dashboard import fmt_loss
from sidestep.tui.widgets import samples
from sidestep.tui.widgets.tables import FitTable, fill_table

log = logging.getLogger("sidestep.tui")


class HistoryScreen(samples.SampleKeys, Screen):
    BINDINGS = [
        *samples.BINDINGS,
        Binding("enter", "open", "Curves", show=False),
        Binding("r,R", "resume", "Resume", key_display="R"),
        Binding("o,O", "open", "Open curves", key_display="O"),
        Binding("x,X", "export", "Export", key_display="X"),
        Binding("escape", "dashboard", "Dashboard"),
    ]

    def __init__(self):
        super().__init__()
        self.runs = []
        self.loaded = False  # the first listing has arrived
        self._typed_ahead: str | None = None  # O, R or X pressed before it had
        self.last_export: AdapterExported | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="history-roots", markup=False)
        yield FitTable(id="history-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="history-detail", markup=False)
        # shown for a run that rendered samples (HistoryScreen.-samples in app.tcss)
        yield samples.SamplesPanel(id="history-samples")
        with Horizontal(id="history-actions"):
            yield Button("Open curves (O)", id="open", variant="primary", compact=True,
                         action="screen.open")
            yield Button("Resume (R)", id="resume", variant="success", compact=True,
                         action="screen.resume")
            yield Button("Export (X)", id="export", compact=True, action="screen.export")
            yield Button("Refresh", id="refresh", compact=True, action="screen.refresh")
            yield Button("Dashboard", id="dash", compact=True, action="screen.dashboard")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#history-table", DataTable)
        self.reload()
        table.focus()

    @work(thread=True, exclusive=True, group="history")
    def reload(self) -> None:
        from sidestep.engine.run_dir import find_runs

        roots = self.app.run_roots()
        runs = find_runs(self.app.run_places())
        under = [root.resolve() for root in roots]
        elsewhere = sum(not any(r.path.resolve().is_relative_to(u) for u in under) for r in runs)
        self.post_message(RunsFound(roots, runs, elsewhere=elsewhere))

    def on_runs_found(self, message: RunsFound) -> None:
        roots, runs = message.roots, message.runs
        self.runs = runs
        self.loaded = True
        from sidestep.config.paths import short

        self.query_one("#history-roots", Static).update(
            "runs found under: " + ", ".join(short(r) for r in roots)
            + (f"; and {message.elsewhere} started elsewhere" if message.elsewhere else ""))
        rows = [(r.name, r.status, r.mode, r.adapter_type, r.model,
                 f"{r.epochs_done}/{r.epochs_total or '?'}", str(r.last_step),
                 fmt_loss(r.best_loss),
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at))
                 if r.started_at else "?") for r in runs]
        fill_table(self.query_one("#history-table", DataTable),
                   ("run", "status", "mode", "adapter", "model", "epochs", "step", "lowest loss",
                    "started"), rows, [str(r.path) for r in runs])
        self._detail()
        if self._typed_ahead:
            action, self._typed_ahead = self._typed_ahead, None
            getattr(self, f"action_{action}")()

    def _before_listing(self, action: str) -> bool:
        """H then R typed at once: R came before the runs were listed and did nothing (X
        said "no run to export"). It is done when they are."""
        if self.loaded:
            return False
        self._typed_ahead = action
        return True

    def selected(self):
        table = self.query_one("#history-table", DataTable)
        if not self.runs or table.cursor_row is None or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._detail()

    def _detail(self) -> None:
        r = self.selected()
        text = "no runs found yet" if not self.runs else ""
        if r is not None:
            from sidestep.config.paths import short

            adapter = short(r.adapter_path) if r.adapter_path else \
                f"— (best: {short(r.best_adapter)})" if r.best_adapter else "—"
            latest = short(r.latest_checkpoint) if r.latest_checkpoint else "— (cannot resume)"
            text = f"{short(r.path)}\nadapter: {adapter}\nlatest checkpoint: {latest}"
        self.query_one("#history-detail", Static).update(text)
        self._show_samples(r)

    def _show_samples(self, r) -> None:
        from sidestep.engine.run_dir import SAMPLES_DIR

        has = r is not None and (r.path / SAMPLES_DIR).is_dir()
        self.set_class(has, "-samples")
        panel = self.query_one("#history-samples", samples.SamplesPanel)
        if has and panel.listing != r.path:
            panel.load_run(r.path)

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        if self._before_listing("open"):
            return
        r = self.selected()
        if r is not None:
            self.app.open_history_run(r.path)

    def action_resume(self) -> None:
        if self._before_listing("resume"):
            return
        r = self.selected()
        if r is None:
            return
        if r.latest_checkpoint is None:
            self.app.show_error("Nothing to resume", f"{r.path} has no complete checkpoint.")
            return
        self.app.resume_run(r.path, r.latest_checkpoint)

    def action_export(self) -> None:
        """The selected run's final adapter (a run stopped before writing one: its best
        adapter, else its newest checkpoint), through the export dialog, written off the UI
        thread by the same ``export_adapter`` as ``sidestep export``."""
        from sidestep.tui.screens.export_dialog import ExportDialog, export_source

        if self._before_listing("export"):
            return
        r = self.selected()
        if r is None:
            self.notify("no run to export", severity="warning")
            return
        found = export_source(r)
        if found is None:
            self.notify(f"{r.name} has no adapter yet (status: {r.status}): no final or best "
                        "adapter and no complete checkpoint", title="Nothing to export",
                        severity="warning", timeout=10)
            return
        adapter, source = found
        if source:  # a stopped run: say what stands in for the final adapter
            self.notify(f"{r.name} has no final adapter (status: {r.status}); exporting its "
                        f"{'best adapter' if source == 'best' else Path(adapter).name}")

        def chosen(choice) -> None:
            if choice:
                self.notify(f"exporting {r.name} for {choice['fmt']}")
                self.run_export(adapter, choice)

        self.app.push_screen(ExportDialog(r.path, adapter, r.adapter_type, source), chosen)

    @work(thread=True, group="export")
    def run_export(self, adapter: str, choice: dict) -> None:
        from sidestep.engine.adapters import AdapterError
        from sidestep.engine.export import export_adapter

        try:
            result = export_adapter(adapter, **choice)
        except AdapterError as exc:  # bad source or refused output: nothing was written
            self.post_message(AdapterExported(None, str(exc)))
        except Exception as exc:  # the environment (disk, permissions) or a bug: no traceback
            log.error("export of %s failed", adapter, exc_info=exc)
            self.post_message(AdapterExported(None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(AdapterExported(result, None))

    def on_adapter_exported(self, message: AdapterExported) -> None:
        from sidestep.config.paths import short

        self.last_export = message
        if message.error:
            from sidestep.tui.wording import in_app_words

            # (the dialog's switch reads "Replace an existing output (--force)")
            self.notify(in_app_words(message.error), title="Export not written",
                        severity="error", timeout=20)
            return
        r = message.result
        self.notify(f"wrote {short(r.output)}: {r.kind.upper()}, {r.modules} modules, {r.fmt}",
                    title="Exported", timeout=10)
        for note in r.notes:
            self.notify(note, severity="warning", timeout=15)

    def action_refresh(self) -> None:
        self.reload()

    def action_dashboard(self) -> None:
        self.app.action_dashboard()
