"""The dashboard: quick actions, recent runs (those live in any process first, with their step,
kept current), the checkpoint folder's models, a GPU line. Enter on a run live in another
process attaches the monitor to it."""

from __future__ import annotations

from pathlib import Path

import time

from textual import on, work
from textual.coordinate import Coordinate
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static

from sidestep.tui.messages import LiveRunsFound, ModelsFound, RunsFound
from sidestep.tui.redraw import TextLine, shown
from sidestep.tui.widgets.tables import FitTable, fill_table


LIVE_REFRESH_S = 5.0  # how often the live rows' step and status are read again
RUN_COLUMNS = ("run", "status", "epochs", "lowest loss")  # a step loss; best/ is by epoch


def fmt_loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def live_cells(row: dict) -> tuple[str, str, str, str]:
    """A live run's row: its status with the step it is at, and the epochs it has completed
    (as the ended runs' rows and History count them)."""
    step = f" · step {row['step']}" if row.get("step") is not None else ""
    done = row.get("epochs_done")
    epochs = f"{done}/{row.get('total_epochs') or '?'}" if done is not None else "—"
    return Path(row["path"]).name, f"{row['status']}{step}", epochs, fmt_loss(row.get("best_loss"))


def live_rows(dirs: list[Path]) -> list[dict]:
    """``run_rows`` of the runs live now among ``dirs`` and the detached starts on record
    (wherever their folder is). Reads files: call it from a worker."""
    from sidestep.engine.live_runs import recorded, run_rows
    from sidestep.engine.run_dir import run_is_alive

    dirs = list(dirs)
    seen = {d.resolve() for d in dirs}
    for entry in recorded():
        folder = Path(entry["run_dir"])
        if folder.resolve() not in seen and run_is_alive(entry):
            seen.add(folder.resolve())
            dirs.append(folder)
    return [r for r in run_rows(dirs) if r["live"]] if dirs else []


class DashboardScreen(Screen):
    # The runs: Enter opens the highlighted one (every button has its key, in the footer).
    AUTO_FOCUS = "#runs-table"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._live: dict[str, dict] = {}  # the live rows shown, by path
        self._next_live = time.monotonic() + LIVE_REFRESH_S  # (mounting loads them all)

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
                yield FitTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="dash-models"):
                yield Label("Models", classes="panel-title")
                yield Static("", id="models-root", markup=False)
                yield FitTable(id="models-table", cursor_type="row", zebra_stripes=True)
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
        target = app.current_target() if hasattr(app, "current_target") else None
        state = target.state if target is not None else None
        line = ""
        if state is not None:
            if state.active:
                line = (f"▶ {state.status}: {state.title} — step {state.step}/"
                        f"{state.total_steps or '?'}, epoch {state.epoch}/"
                        f"{state.total_epochs or '?'} (Monitor shows it)")
            elif state.finished is not None:
                line = f"last run {state.status}: {state.title}"
        if time.monotonic() >= self._next_live:  # also finds a run started elsewhere since
            self._next_live = time.monotonic() + LIVE_REFRESH_S
            self.load_live()
        self.query_one("#active-run", TextLine).set_text(line)
        button = self.query_one("#go-monitor", Button)
        if button.disabled != (state is None):
            button.disabled = state is None

    @work(thread=True, exclusive=True, group="dash-runs")
    def load_runs(self) -> None:
        from sidestep.engine.run_dir import find_runs

        roots = self.app.run_roots()
        runs = find_runs(self.app.run_places())
        live = live_rows([r.path for r in runs if r.status == "running"])
        # a live run shows once, in its live row (resolving paths stats: done here, off the UI)
        live_paths = {Path(row["path"]).resolve() for row in live}
        ended = [r for r in runs[:12] if r.path.resolve() not in live_paths]
        self.post_message(RunsFound(roots, ended, live=live))

    @work(thread=True, exclusive=True, group="dash-live")
    def load_live(self) -> None:
        """The live runs, looked for afresh (reads only run.json files)."""
        from sidestep.engine.run_dir import live_run_folders

        self.post_message(LiveRunsFound(live_rows(live_run_folders(self.app.run_roots()))))

    def on_runs_found(self, message: RunsFound) -> None:
        self._live = {row["path"]: row for row in message.live}
        self._next_live = time.monotonic() + LIVE_REFRESH_S
        runs = message.runs
        rows = [live_cells(row) for row in self._live.values()]
        rows += [(r.name, r.status, f"{r.epochs_done}/{r.epochs_total or '?'}",
                  fmt_loss(r.best_loss)) for r in runs]
        keys = [*self._live, *(str(r.path) for r in runs)]
        fill_table(self.query_one("#runs-table", DataTable), RUN_COLUMNS,
                   rows or [("(no runs yet)", "", "", "")], keys or [None])

    def on_live_runs_found(self, message: LiveRunsFound) -> None:
        """Step and status of the live rows, in place (the cursor stays); a run that ended
        or a new one reloads the list."""
        rows = {row["path"]: row for row in message.rows}
        if set(rows) != set(self._live):
            self.load_runs()
            return
        table = self.query_one("#runs-table", DataTable)
        for path, row in rows.items():
            if row == self._live[path]:
                continue
            self._live[path] = row
            index = table.get_row_index(path)
            for column, text in enumerate(live_cells(row)[1:], start=1):
                table.update_cell_at(Coordinate(index, column), text, update_width=True)

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
        if error:  # the dashboard's models come from the settings, not from a flag
            error = error.replace("--checkpoint-dir", "Settings → 'Default checkpoint folder'")

        self.query_one("#models-root", Static).update(short(root) + (f"\n{error}" if error
                                                                     else ""))
        rows = [(e.name, e.family, "XL" if e.is_xl else f"h{e.hidden_size}" if e.hidden_size
                 else "?") for e in entries]
        fill_table(self.query_one("#models-table", DataTable), ("model", "family", "size"),
                   rows, [e.name for e in entries])

    @on(DataTable.RowSelected, "#runs-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        """A live run in another process is attached to (the app's own shows as today);
        any other opens read-only."""
        key = event.row_key.value
        if key and Path(key).exists():
            self.app.open_history_run(Path(key))

    @on(DataTable.RowSelected, "#models-table")
    def train_model(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.action_new_training("fixed", {"model_variant": event.row_key.value})
