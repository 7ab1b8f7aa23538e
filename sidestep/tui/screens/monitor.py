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

CHART_PERIOD_S = 1.0
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
        self._drawn_version = -1
        self._texts: dict[str, object] = {}

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
        # Charts are the costly part (plotext renders text in Python): at most once a second,
        # so an attached monitor does not slow a CPU-bound run down.
        self.set_interval(CHART_PERIOD_S, self.refresh_charts)
        self.refresh_view()
        self.refresh_charts()
        if not self.live or not self.state.active:
            for bid in ("pause", "save", "stop"):
                self.query_one(f"#{bid}", Button).disabled = True

    def _text(self, selector: str, text: str) -> None:
        """Change a label only when its text changed, without a layout pass (fixed sizes):
        every reflow costs the training thread CPU time on a CPU-only box."""
        widget = self.query_one(selector)
        if self._texts.get(selector) != text:
            self._texts[selector] = text
            widget.update(text, layout=False)

    def _bar(self, selector: str, total: int, progress: int) -> None:
        key = (max(total, 1), progress)
        if self._texts.get(selector) != key:
            self._texts[selector] = key
            self.query_one(selector, ProgressBar).update(total=key[0], progress=progress)

    def refresh_view(self) -> None:
        s = self.state
        readings = self.app.gpu_readings() if hasattr(self.app, "gpu_readings") else []
        self.query_one(GpuPanel).update_from(readings)
        if s.version == self._drawn_version:
            return
        self._drawn_version = s.version
        status = s.status + (" (read-only)" if s.read_only else "")
        self._text("#run-title", f"{s.title or s.run_dir}  [{status}]")
        self._text("#epoch-label", f"epoch {s.epoch}/{s.total_epochs or '?'}")
        self._bar("#epoch-bar", s.total_epochs, s.epoch)
        last = s.losses[-1] if s.losses else float("nan")
        best = f"{s.best_loss:.4f} @ {s.best_step}" if s.best_loss is not None else "—"
        self._text("#step-label", f"step {s.step}/{s.total_steps or '?'}   loss {last:.4f}   "
                                  f"best {best}")
        self._bar("#step-bar", s.total_steps, s.step)
        rate = f"{s.samples_per_sec:.2f} samples/s" if s.samples_per_sec else "— samples/s"
        lr = f"lr {s.lrs[-1]:.2e}" if s.lrs else "lr —"
        self._text("#rate-label", f"{rate}   ETA {fmt_eta(s.eta_seconds) if s.active else '—'}"
                                  f"   {lr}   {s.device} {s.precision}")
        log = self.query_one("#run-log", RichLog)
        new = s.log_total - self._log_seen
        if new > 0:
            from rich.text import Text

            for level, text in list(s.log)[-min(new, len(s.log)):]:
                style = _LEVEL_STYLE.get(level)
                log.write(Text(text, style=style) if style else text)
            self._log_seen = s.log_total
        label = "Resume (space)" if s.status == "paused" else "Pause (space)"
        pause = self.query_one("#pause", Button)
        if str(pause.label) != label:
            pause.label = label
        if self.live and not s.active:
            for bid in ("pause", "save", "stop"):
                button = self.query_one(f"#{bid}", Button)
                if not button.disabled:
                    button.disabled = True

    def refresh_charts(self) -> None:
        self.query_one("#loss-chart").draw(self.state)
        self.query_one("#lr-chart").draw(self.state)

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
