"""The live monitor: progress, loss and LR charts, GPU panel, log, run controls, and the audio
samples when the run renders them.

Widgets redraw on a fixed-rate timer from the shared ``RunState``, whatever the event rate.
Leaving the screen never stops the run. A live monitor controls its ``target`` (the App's own
engine, or a run in another process it is attached to: ``runner.RunTarget``); without one it
shows a finished run read-only.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header

from sidestep.tui.redraw import TextLine, shown
from sidestep.tui.runner import RunTarget
from sidestep.tui.state import RunState
from sidestep.tui.widgets.bar import CellBar
from sidestep.tui.widgets.gpu import GpuPanel
from sidestep.tui.widgets.log_tail import LogTail
from sidestep.tui.widgets.samples import BINDINGS as SAMPLE_BINDINGS
from sidestep.tui.widgets.samples import SampleKeys, SamplesPanel

CHART_PERIOD_S = 1.0        # fastest chart redraw
CHART_PERIOD_MAX_S = 5.0    # slowest, when the UI thread is over its budget
UI_CPU_BUDGET = 0.01        # share of one core the app may take from a running engine
# With the samples panel beside the loss chart: the LR chart shows from this many columns,
# and under this many rows the log keeps two lines so the charts keep some height.
WIDE_COLUMNS = 150
SHORT_ROWS = 30
LOW_ROWS = 26  # header, progress, a 5-line log, the charts' minimum, buttons and footer


def fmt_eta(seconds) -> str:
    from sidestep.engine.describe import fmt_duration

    return fmt_duration(seconds)


def val_text(s: RunState) -> str:
    """The newest validation loss and the epoch that saved best/adapter ("" without one)."""
    if not s.val_losses:
        return ""
    epoch = max(s.val_losses)
    text = f"   val loss {s.val_losses[epoch][1]:.4f}"
    if s.best_val_epoch is not None and s.best_val_epoch in s.val_losses:
        best = s.val_losses[s.best_val_epoch][1]
        text += f" (best {best:.4f} @ {s.best_val_epoch})"
    return text


class MonitorScreen(SampleKeys, Screen):
    # Nothing focused: Enter must not press Pause because it was the first button.
    AUTO_FOCUS = ""  # ("" is none; None would mean the App's "*")
    BINDINGS = [
        Binding("l,L", "toggle_log_scale", "Log scale", key_display="L"),
        Binding("g,G", "full_log", "Full log", key_display="G"),
        Binding("space", "toggle_pause", "Pause/resume", id="monitor_pause"),
        Binding("c,C", "save_now", "Save now", key_display="C"),
        Binding("x,X", "stop", "Stop & save", key_display="X"),
        Binding("escape", "back", "Back"),
        *SAMPLE_BINDINGS,   # [ ] and y, out of the footer (the panel's border shows them)
    ]

    def __init__(self, state: RunState, target: RunTarget | None = None,
                 back_to: Screen | None = None, *, live: bool = True):
        super().__init__()
        self.state = state
        self.target = target if live else None
        self.live = self.target is not None
        self.back_to = back_to  # the screen under this one that Esc returns to (History)
        self._drawn_version = -1
        self.chart_period = CHART_PERIOD_S
        self._next_chart = 0.0
        self._cpu_mark = (time.thread_time(), time.perf_counter())
        self._samples_key: tuple | None = None

    def compose(self) -> ComposeResult:
        from sidestep.tui.widgets.charts import LossChart, LrChart

        yield Header()
        with Horizontal(id="monitor-top"):
            with Vertical(id="monitor-progress"):
                yield TextLine("", id="run-title")
                yield TextLine("", id="epoch-label")
                yield CellBar(id="epoch-bar")
                yield TextLine("", id="step-label")
                yield CellBar(id="step-bar")
                yield TextLine("", id="rate-label")
            yield GpuPanel(id="gpu-panel")
        # The log sits right under the progress lines: what changes every second is then one
        # band at the top, and Textual repaints the box around all changed widgets, so with
        # the log below the charts every tick would re-composite the charts as well.
        yield LogTail(lines=5, id="run-log")
        with Horizontal(id="charts"):
            yield LossChart(id="loss-chart")
            yield LrChart(id="lr-chart")
            yield SamplesPanel(id="samples-panel")
        with Horizontal(id="monitor-actions"):
            yield Button("Pause (space)", id="pause", compact=True,
                         action="screen.toggle_pause")
            yield Button("Save now (C)", id="save", compact=True, action="screen.save_now")
            yield Button("Stop & save (X)", id="stop", variant="error", compact=True,
                         action="screen.stop")
            yield Button("Full log (G)", id="log", compact=True, action="screen.full_log")
            yield Button("History (esc)" if self.back_to is not None else "Dashboard (esc)",
                         id="dash", compact=True, action="screen.back")
        yield Footer()

    def on_resize(self) -> None:
        self._fit_layout()

    def _fit_layout(self) -> None:
        width, height = self.app.size
        self.set_class(width >= WIDE_COLUMNS, "-wide")
        # Under LOW_ROWS (80x24), or under SHORT_ROWS beside the samples panel, the log box is
        # three lines shorter (app.tcss) so the buttons stay on screen: it tails fewer lines.
        low = height < LOW_ROWS or (self.has_class("-samples") and height < SHORT_ROWS)
        self.set_class(low, "-low-log")
        lines = 2 if low else 5
        tail = self.query_one(LogTail)
        if tail.lines != lines:
            tail.lines = lines
            tail._seen = -1  # redraw the tail now, with fewer lines
            self._drawn_version = -1

    def _show_samples(self) -> None:
        """The samples panel, once the run has samples or is set to render them."""
        s = self.state
        key = (len(s.samples), s.samples[-1].path if s.samples else None,
               s.samples[-1].time if s.samples else None, s.sample_every)
        if key == self._samples_key:
            return
        self._samples_key = key
        if not s.samples and s.sample_every <= 0:
            return
        if not self.has_class("-samples"):
            self.add_class("-samples")
            self._fit_layout()
        note = ""
        if not s.samples:
            note = (f"no audio sample yet: one renders every {s.sample_every} epochs"
                    if s.sample_every > 1 else "no audio sample yet: one renders every epoch")
        self.query_one(SamplesPanel).set_samples(s.samples, s.run_dir or None, note)

    def on_screen_resume(self) -> None:
        self._next_chart = 0.0
        self.refresh_view()

    def on_mount(self) -> None:
        hz = getattr(getattr(self.app, "settings", None), "refresh_hz", 1.0) or 1.0
        self.set_interval(1.0 / hz, self.refresh_view)
        # One timer (every wake-up takes the GIL from a running engine); the charts, the
        # costly part (plotext renders text in Python), redraw on it when due.
        self._fit_layout()
        self.refresh_view()
        self.refresh_charts()
        for bid in ("pause", "save", "stop"):
            button = self.query_one(f"#{bid}", Button)
            # a past run read back, or an ended one, has nothing to control
            button.display = self.live and self.state.active
            button.disabled = not self.state.active

    def _text(self, selector: str, text: str) -> None:
        self.query_one(selector, TextLine).set_text(text)

    def _bar(self, selector: str, total: int, progress: float) -> None:
        self.query_one(selector, CellBar).set_progress(progress, total)

    def refresh_view(self) -> None:
        if not shown(self):
            return
        if self.live:
            self.app.drain_events()
        self._chart_tick()
        s = self.state
        readings = self.app.gpu_readings() if hasattr(self.app, "gpu_readings") else []
        self.query_one(GpuPanel).update_from(readings)
        if s.version == self._drawn_version:
            return
        self._drawn_version = s.version
        self._show_samples()
        status = s.status + (" (read-only)" if s.read_only else "")
        if self.target is not None and self.target.outlives_app:
            status += " · in the background"  # its own process: quitting leaves it training
        # status and the folder's name (its full path in the tooltip): a long path cut the
        # status off on a narrow terminal
        where = Path(s.run_dir or s.title)
        self._text("#run-title", f"[{status}] {where.name}")
        title = self.query_one("#run-title")
        if title.tooltip != str(where):
            title.tooltip = str(where)
        if s.active:  # the epoch in progress; the bar fills as epochs complete
            self._text("#epoch-label", f"epoch {s.epoch}/{s.total_epochs or '?'}" + val_text(s))
            partial = s.epoch_progress if s.epoch > s.epochs_done else 0.0
            self._bar("#epoch-bar", s.total_epochs, s.epochs_done + partial)
        else:  # an ended run: the epochs it completed, as History and `runs` say
            self._text("#epoch-label", f"{s.epochs_done}/{s.total_epochs or '?'} epochs done"
                       + val_text(s))
            self._bar("#epoch-bar", s.total_epochs, s.epochs_done)
        last = f"{s.losses[-1]:.4f}" if s.losses else "—"  # (not "nan" before the first step)
        best = f"{s.best_loss:.4f} @ {s.best_step}" if s.best_loss is not None else "—"
        self._text("#step-label", f"step {s.step}/{s.total_steps or '?'}   loss {last}   "
                                  f"lowest {best}")
        self._bar("#step-bar", s.total_steps, s.step)
        rate = f"{s.samples_per_sec:.2f} samples/s" if s.samples_per_sec else "— samples/s"
        lr = f"lr {s.lrs[-1]:.2e}" if s.lrs else "lr —"
        where = f"{s.device} {s.precision}" + (f" x {s.world_size} processes"
                                                 if s.world_size > 1 else "")
        # paused: the last ETA would stand still and read as a stuck run
        eta = "— (paused)" if s.status == "paused" else \
            fmt_eta(s.eta_seconds) if s.active else "—"
        self._text("#rate-label", f"{rate}   ETA {eta}   {lr}   {where}")
        self.query_one(LogTail).show(s.log, s.log_total)
        label = "Resume (space)" if s.status == "paused" else "Pause (space)"
        pause = self.query_one("#pause", Button)
        if str(pause.label) != label:
            pause.label = label
        if self.live:
            # an ended run has nothing to control: hidden, as on a past run read back (greyed
            # out, they read as keys that should work)
            for bid in ("pause", "save", "stop"):
                button = self.query_one(f"#{bid}", Button)
                if button.display != s.active:
                    button.disabled, button.display = not s.active, s.active
                    self.refresh_bindings()

    def _chart_tick(self) -> None:
        """Redraw the charts when due (called from ``refresh_view``, only while shown)."""
        now = time.perf_counter()
        if now < self._next_chart:
            return
        if self.live and self.state.active:
            self._adapt_chart_period(now)
        self._next_chart = now + self.chart_period
        self.refresh_charts()

    def _adapt_chart_period(self, now: float) -> None:
        """Keep the UI thread under UI_CPU_BUDGET of a core while a run is active: the engine
        shares the GIL with it, so every UI millisecond is one the training loop waits for. The
        measure is this thread's CPU time (all of Textual's work), the knob the chart period."""
        cpu0, wall0 = self._cpu_mark
        cpu = time.thread_time()
        if now - wall0 < 0.5:
            return
        share = (cpu - cpu0) / (now - wall0)
        self._cpu_mark = (cpu, now)
        if share > UI_CPU_BUDGET:
            self.chart_period = min(self.chart_period * 1.5, CHART_PERIOD_MAX_S)
        elif share < UI_CPU_BUDGET / 2:
            self.chart_period = max(self.chart_period / 1.5, CHART_PERIOD_S)

    def refresh_charts(self) -> None:
        self.query_one("#loss-chart").draw(self.state)
        self.query_one("#lr-chart").draw(self.state)

    # -- actions -------------------------------------------------------------------------------
    def action_toggle_log_scale(self) -> None:
        chart = self.query_one("#loss-chart")
        chart.log_scale = not chart.log_scale
        chart.draw(self.state, force=True)

    def action_full_log(self) -> None:
        from sidestep.tui.screens.log_view import LogScreen

        self.app.push_screen(LogScreen(self.state))

    RUN_ACTIONS = ("toggle_pause", "save_now", "stop")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The run's keys: only while it runs (hidden, with their buttons, for a past run read
        back and once a live one ended)."""
        if action in self.RUN_ACTIONS:
            return self.live and self.state.active
        return True

    def action_toggle_pause(self) -> None:
        if not self.live or not self.state.active:
            return
        if self.state.status == "paused":
            self.target.resume()
        else:
            self.target.pause()

    def action_save_now(self) -> None:
        if self.live and self.state.active:
            self.target.save_now()

    def action_stop(self) -> None:
        if not (self.live and self.state.active):
            return
        from sidestep.tui.screens.dialogs import ConfirmScreen

        def answer(choice: str) -> None:
            if choice == "stop":
                self.target.stop()

        self.app.push_screen(ConfirmScreen(
            "Stop training?", "The run stops at the next micro-batch and saves a checkpoint you "
            "can resume from (History → Resume).",
            [("stop", "Stop and save", "error"), ("cancel", "Keep training", "primary")]),
            answer)

    def action_back(self) -> None:
        stack = self.app.screen_stack
        if self.back_to is not None and len(stack) > 1 and stack[-1] is self and \
                stack[-2] is self.back_to:
            self.app.pop_screen()
        else:
            self.app.action_dashboard()
