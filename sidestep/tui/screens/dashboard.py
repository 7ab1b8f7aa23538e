"""The dashboard: quick actions, recent runs, the checkpoint folder's models, a GPU line."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static

from sidestep.tui.messages import ModelsFound, RunsFound
from sidestep.tui.redraw import TextLine, shown
from sidestep.tui.widgets.tables import fill_table


def fmt_loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


class DashboardScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="quick-actions"):
            # the app's own actions: a button is one more way to press the key (the footer
            # shows the keys; labels with them no longer fit 100 columns)
            yield Button("Train", id="go-fixed", variant="primary",
                         action="app.new_training('fixed')", tooltip="fixed training (F)")
            yield Button("Vanilla", id="go-vanilla", action="app.new_training('vanilla')",
                         tooltip="vanilla training (V)")
            yield Button("Monitor", id="go-monitor", action="app.monitor")
            yield Button("Dataset", id="go-dataset", action="app.dataset",
                         tooltip="dataset browser (P)")
            yield Button("Estimate", id="go-estimate", action="app.estimate",
                         tooltip="module sensitivity, selective training (E)")
            yield Button("History", id="go-history", action="app.history",
                         tooltip="past runs (H)")
            yield Button("Presets", id="go-presets", action="app.presets")
            yield Button("Settings", id="go-settings", action="app.settings",
                         tooltip="settings (S)")
        yield TextLine("", id="active-run")
        with Horizontal(id="dash-panels"):
            with Vertical(id="dash-runs"):
                yield Label("Recent runs", classes="panel-title")
                yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="dash-models"):
                yield Label("Models", classes="panel-title")
                yield Static("", id="models-root", markup=False)
                yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield TextLine("GPU: sampling…", id="gpu-line")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)
        self.tick()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()
        self.tick()

    def reload(self) -> None:
        self.load_runs()
        self.load_models()

    def tick(self) -> None:
        if not shown(self):
            return
        app = self.app
        readings = app.gpu_readings() if hasattr(app, "gpu_readings") else []
        from sidestep.tui.widgets.gpu import gpu_lines

        self.query_one("#gpu-line", TextLine).set_text(" | ".join(gpu_lines(readings)))
        state = getattr(getattr(app, "runner", None), "state", None)
        line = ""
        if state is not None:
            if state.active:
                line = (f"▶ {state.status}: {state.title} — step {state.step}/"
                        f"{state.total_steps or '?'}, epoch {state.epoch}/"
                        f"{state.total_epochs or '?'} (Monitor shows it)")
            elif state.finished is not None:
                line = f"last run {state.status}: {state.title}"
        self.query_one("#active-run", TextLine).set_text(line)
        button = self.query_one("#go-monitor", Button)
        if button.disabled != (state is None):
            button.disabled = state is None

    @work(thread=True, exclusive=True, group="dash-runs")
    def load_runs(self) -> None:
        from sidestep.engine.run_dir import find_runs

        roots = self.app.run_roots()
        self.post_message(RunsFound(roots, find_runs(roots)[:12]))

    def on_runs_found(self, message: RunsFound) -> None:
        runs = message.runs
        rows = [(r.name, r.status, f"{r.epochs_done}/{r.epochs_total or '?'}",
                 fmt_loss(r.best_loss)) for r in runs] or [("(no runs yet)", "", "", "")]
        keys = [str(r.path) for r in runs] or [None]
        fill_table(self.query_one("#runs-table", DataTable),
                   ("run", "status", "epochs", "best loss"), rows, keys)

    @work(thread=True, exclusive=True, group="dash-models")
    def load_models(self) -> None:
        from sidestep.model.checkpoints import DiscoveryError, list_models

        root = self.app.checkpoint_root()
        try:
            entries, error = list_models(root), None
        except DiscoveryError as exc:
            entries, error = [], str(exc)
        self.post_message(ModelsFound(root, entries, error))

    def on_models_found(self, message: ModelsFound) -> None:
        from sidestep.config.paths import short

        root, entries, error = message.root, message.entries, message.error

        self.query_one("#models-root", Static).update(short(root) + (f"\n{error}" if error
                                                                     else ""))
        rows = [(e.name, e.family, "XL" if e.is_xl else f"h{e.hidden_size}" if e.hidden_size
                 else "?") for e in entries]
        fill_table(self.query_one("#models-table", DataTable), ("model", "family", "size"),
                   rows, [e.name for e in entries])

    @on(DataTable.RowSelected, "#runs-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key and Path(key).exists():
            self.app.open_history_run(Path(key))

    @on(DataTable.RowSelected, "#models-table")
    def train_model(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.action_new_training("fixed", {"model_variant": event.row_key.value})
