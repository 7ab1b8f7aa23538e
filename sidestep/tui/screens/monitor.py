"""The live monitor: progress, loss and LR charts, GPU panel, log, run controls.

Widgets redraw on a fixed-rate timer from the shared ``RunState``, whatever the event rate.
Leaving the screen never stops the run.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, ProgressBar, RichLog, Static

from sidestep.tui.state import RunState
from sidestep.tui.widgets.gpu import GpuPanel

_LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "debug": "dim"}


def fmt_eta(seconds) -> str:
    from sidestep.cli.train_cmd import fmt_duration

    return fmt_duration(seconds)


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("l", "toggle_log_scale", "Log scale"),
        Binding("space", "toggle_pause", "Pause/resume", id="monitor_pause"),
        Binding("c", "save_now", "Save now"),
        Binding("x", "stop", "Stop & save"),
        Binding("escape", "dashboard", "Dashboard"),
    ]

    def __init__(self, state: RunState, live: bool = True):
        super().__init__()
        self.state = state
        self.live = live
        self._log_seen = 0

    def compose(self) -> ComposeResult:
        from sidestep.tui.widgets.charts import LossChart, LrChart

        yield Header()
        with Horizontal(id="monitor-top"):
            with Vertical(id="monitor-progress"):
                yield Label("", id="run-title")
                yield Label("", id="epoch-label")
                yield ProgressBar(id="epoch-bar", show_eta=False)
                yield Label("", id="step-label")
                yield ProgressBar(id="step-bar", show_eta=False)
                yield Label("", id="rate-label")
            yield GpuPanel(id="gpu-panel")
        with Horizontal(id="charts"):
            yield LossChart(id="loss-chart")
            yield LrChart(id="lr-chart")
        yield RichLog(id="run-log", max_lines=2000, wrap=True, markup=False)
        with Horizontal(id="monitor-actions"):
            yield Button("Pause (space)", id="pause", compact=True)
            yield Button("Save now (c)", id="save", compact=True)
            yield Button("Stop & save (x)", id="stop", variant="error", compact=True)
            yield Button("Dashboard (esc)", id="dash", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        hz = getattr(getattr(self.app, "settings", None), "refresh_hz", 4.0) or 4.0
        self.set_interval(1.0 / hz, self.refresh_view)
        self.refresh_view()
        if not self.live or not self.state.active:
            for bid in ("pause", "save", "stop"):
                self.query_one(f"#{bid}", Button).disabled = True

    def refresh_view(self) -> None:
        s = self.state
        status = s.status + (" (read-only)" if s.read_only else "")
        self.query_one("#run-title", Label).update(f"{s.title or s.run_dir}  [{status}]")
        self.query_one("#epoch-label", Label).update(
            f"epoch {s.epoch}/{s.total_epochs or '?'}")
        ebar = self.query_one("#epoch-bar", ProgressBar)
        ebar.update(total=max(s.total_epochs, 1), progress=s.epoch)
        self.query_one("#step-label", Label).update(
            f"step {s.step}/{s.total_steps or '?'}   loss "
            f"{(s.losses[-1] if s.losses else float('nan')):.4f}   best "
            + (f"{s.best_loss:.4f} @ {s.best_step}" if s.best_loss is not None else "—"))
        sbar = self.query_one("#step-bar", ProgressBar)
        sbar.update(total=max(s.total_steps, 1), progress=s.step)
        rate = f"{s.samples_per_sec:.2f} samples/s" if s.samples_per_sec else "— samples/s"
        lr = f"lr {s.lrs[-1]:.2e}" if s.lrs else "lr —"
        self.query_one("#rate-label", Label).update(
            f"{rate}   ETA {fmt_eta(s.eta_seconds) if s.active else '—'}   {lr}   "
            f"{s.device} {s.precision}")
        self.query_one("#loss-chart").draw(s)
        self.query_one("#lr-chart").draw(s)
        readings = self.app.gpu_readings() if hasattr(self.app, "gpu_readings") else []
        self.query_one(GpuPanel).update_from(readings)
        log = self.query_one("#run-log", RichLog)
        new = s.log_total - self._log_seen
        if new > 0:
            lines = list(s.log)[-min(new, len(s.log)):]
            for level, text in lines:
                style = _LEVEL_STYLE.get(level)
                if style:
                    from rich.text import Text

                    log.write(Text(text, style=style))
                else:
                    log.write(text)
            self._log_seen = s.log_total
        pause = self.query_one("#pause", Button)
        pause.label = "Resume (space)" if s.status == "paused" else "Pause (space)"
        if self.live and not s.active:
            for bid in ("pause", "save", "stop"):
                self.query_one(f"#{bid}", Button).disabled = True

    # -- actions -------------------------------------------------------------------------------
    def action_toggle_log_scale(self) -> None:
        chart = self.query_one("#loss-chart")
        chart.log_scale = not chart.log_scale
        chart.draw(self.state, force=True)

    def action_toggle_pause(self) -> None:
        if not self.live or not self.state.active:
            return
        if self.state.status == "paused":
            self.app.runner.resume()
        else:
            self.app.runner.pause()

    def action_save_now(self) -> None:
        if self.live and self.state.active:
            self.app.runner.save_now()

    def action_stop(self) -> None:
        if not (self.live and self.state.active):
            return
        from sidestep.tui.screens.dialogs import ConfirmScreen

        def answer(choice: str) -> None:
            if choice == "stop":
                self.app.runner.stop()

        self.app.push_screen(ConfirmScreen(
            "Stop training?", "The run stops at the next micro-batch and saves a checkpoint you "
            "can resume from (History → Resume).",
            [("stop", "Stop and save", "error"), ("cancel", "Keep training", "primary")]),
            answer)

    def action_dashboard(self) -> None:
        self.app.action_dashboard()

    @on(Button.Pressed, "#pause")
    def _pause(self) -> None:
        self.action_toggle_pause()

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save_now()

    @on(Button.Pressed, "#stop")
    def _stop(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#dash")
    def _dash(self) -> None:
        self.action_dashboard()
