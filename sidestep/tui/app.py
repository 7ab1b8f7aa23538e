"""The Side-Step app: screens, keys, navigation, and the one handler for its workers. The run's
lifecycle and signals live in ``runner.py``, the demo build in ``demo.py``, the command palette
in ``commands.py``.

Start-up imports only Textual and the light parts of Side-Step; torch and the engine load in a
background thread after the first frame (and are needed only when a run starts).
"""

from __future__ import annotations

import logging
import os
import traceback
from functools import partial
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from sidestep.config import paths
from sidestep.config.plural import counted
from sidestep.config.settings import Settings, SettingsStore
from sidestep.engine.events import RunFinished
from sidestep.tui.attached import (DETACH_WORKER, FOLLOW_WORKER, SEND_WORKER, AttachedRun,
                                   StartRefused, start_detached)
from sidestep.tui.commands import SideStepCommands
from sidestep.tui.jobs import EstimateJob, PreprocessJob
from sidestep.tui.demo import DEMO_BUILD, open_demo_form, start_demo
from sidestep.tui.runner import (EngineRunner, RunTarget, announce, install_stop_signals,
                                 left_running, own_run_line, save_before_exit,
                                 stop_for_signal)
from sidestep.tui.state import RunState
from sidestep.tui.widgets.fields import is_field_widget
from sidestep.tui.typeahead import KeySettled, TypedKeys

log = logging.getLogger("sidestep.tui")

# Colours that are exact xterm-256 entries, so a 256-colour terminal shows them unchanged.
THEMES = [
    Theme(name="sidestep-dark", primary="#5fafff", secondary="#af87ff", accent="#ffaf5f",
          warning="#ffd75f", error="#ff5f5f", success="#87d787", foreground="#dadada",
          background="#1c1c1c", surface="#262626", panel="#303030", dark=True),
    Theme(name="sidestep-light", primary="#005faf", secondary="#5f00af", accent="#af5f00",
          warning="#af8700", error="#d70000", success="#008700", foreground="#1c1c1c",
          background="#eeeeee", surface="#e4e4e4", panel="#d0d0d0", dark=False),
]


class SideStepApp(App):
    CSS_PATH = "app.tcss"
    # screens get "-narrow" under 100 columns (an SSH terminal's default 80): app.tcss fits them
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-not-narrow")]
    TITLE = "Side-Step"
    SUB_TITLE = "ACE-Step 1.5 adapter training"
    COMMANDS = App.COMMANDS | {SideStepCommands}
    # Single letters (either case, shown in capitals as in the spec) act only when no field
    # has focus: see check_action.
    BINDINGS = [
        Binding("f,F", "new_training('fixed')", "Train", key_display="F", id="train_fixed"),
        Binding("v,V", "new_training('vanilla')", "Vanilla", key_display="V",
                id="train_vanilla"),
        # Not in the footer: at 100 columns it would push out Quit; Esc and the header lead
        # home from every screen, and Help lists D.
        Binding("d,D", "dashboard", "Dashboard", key_display="D", id="dashboard", show=False),
        Binding("p,P", "dataset", "Dataset", key_display="P", id="dataset"),
        Binding("e,E", "estimate", "Estimate", key_display="E", id="estimate"),
        Binding("h,H", "history", "History", key_display="H", id="history"),
        Binding("s,S", "settings", "Settings", key_display="S", id="settings"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("q,Q", "request_quit", "Quit", key_display="Q", id="quit"),
        Binding("ctrl+q", "quit_anywhere", "Quit", show=False, priority=True),
        # Focus moves when Tab arrives, in the order of the keys around it: as an ordinary
        # binding it ran once the key had bubbled back up, after the letters typed next had
        # gone to the field being left (widgets/text_input.py has the other half)
        Binding("tab", "app.focus_next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", show=False, priority=True),
    ]
    LETTER_ACTIONS = frozenset({"new_training", "dashboard", "dataset", "estimate", "history",
                                "settings", "help", "request_quit"})

    def __init__(self, *, demo: bool = False, demo_dir: Path | None = None,
                 settings_path: Path | None = None, engine_factory=None, gpu_reader=None,
                 prewarm: bool = True, install_signals: bool = True, watch_css: bool = False):
        super().__init__(watch_css=watch_css)
        self.demo = demo
        self.demo_dir = Path(demo_dir) if demo_dir else paths.cache_dir() / "demo"
        self.settings_store = SettingsStore(settings_path)
        self.settings, self._settings_warnings = self.settings_store.load()
        self.runner = EngineRunner(self, engine_factory)
        # Runs in other processes the app shows (by folder), and the run the Monitor key opens.
        self.attached: dict[str, AttachedRun] = {}
        self.target: RunTarget | None = None
        self._problems_told: dict[int, int] = {}  # id(state) -> its problems already seen
        self._fatal_told: set[int] = set()        # id(state) of runs told "needs you"
        self.preprocessing = PreprocessJob(self)
        self.estimating = EstimateJob(self)
        self.last_estimate: dict | None = None  # the estimate screen's result, kept across visits
        # a songs folder -> the preprocess dialog's values last started for it
        self.preprocess_choices: dict[str, dict] = {}
        self.gpu_reader = gpu_reader
        self.gpu = None
        self.prewarm = prewarm
        self.install_signals = install_signals
        self.errors: list[BaseException] = []
        self._last_form = None
        self._run_form = None  # the form the App's engine run was started from
        self._kept_form = None  # a form whose start failed or was refused: F reopens it
        self._open_origin = None  # the screen a run opened from History returns to
        self.typed = TypedKeys(self, self._handle_typed_key)  # keys in the order typed
        for theme in THEMES:
            self.register_theme(theme)

    # -- start-up ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from sidestep.tui.screens.dashboard import DashboardScreen

        self.theme = self.settings.theme if self.settings.theme in self.available_themes \
            else "sidestep-dark"
        for warning in self._settings_warnings:
            self.notify(warning, severity="warning", timeout=10)
        # The sampler starts after the first frame: NVML's import and init are not free.
        self.call_after_refresh(self._start_gpu_sampler)
        # The monitor drains on its own refresh; this catches the end of a run elsewhere.
        self.set_interval(1.0, self.drain_events)
        self.push_screen(DashboardScreen(id="dashboard"))
        if self.install_signals:
            install_stop_signals(self)
        if self.prewarm:
            # After the first frame: the imports (torch, peft, lightning) hold the GIL for
            # seconds and would otherwise delay the dashboard's first paint.
            self.call_after_refresh(self.set_timer, 0.5, self._start_prewarm)
        if self.demo:
            start_demo(self)

    def _start_prewarm(self) -> None:
        self.run_worker(_prewarm_engine, thread=True, group="prewarm", exit_on_error=False)

    def _start_gpu_sampler(self) -> None:
        from sidestep.telemetry.nvml import GpuSampler

        self.gpu = GpuSampler(period=self.settings.gpu_poll_seconds, reader=self.gpu_reader)
        self.gpu.start()

    def gpu_readings(self) -> list:
        return self.gpu.latest()[1] if self.gpu else []

    def detect_gpus(self) -> list[dict]:
        """Total and free memory per GPU (blocking: call from a worker thread)."""
        if self.gpu_reader is not None:
            return [{"index": r.index, "name": r.name, "total_mib": r.mem_total_mib,
                     "free_mib": r.mem_free_mib, "other_processes_mib": r.other_processes_mib}
                    for r in self.gpu_reader() if r.mem_total_mib]
        from sidestep.config.profiles import detect_gpus

        return detect_gpus()

    def get_driver_class(self):
        driver_class = super().get_driver_class()
        from textual.drivers.linux_driver import LinuxDriver

        if driver_class is LinuxDriver:
            from sidestep.tui.terminal import HangupSafeDriver

            return HangupSafeDriver
        return driver_class

    @property
    def terminal_dead(self) -> bool:
        return bool(getattr(self._driver, "terminal_dead", False))

    def _on_stop_signal(self, name: str) -> None:
        """SIGTERM/SIGHUP (a dropped SSH session): save the run, then leave."""
        if name == "SIGHUP":
            self._terminal_gone()
        stop_for_signal(self, name)

    def _terminal_gone(self) -> None:
        """The terminal hung up: nothing may be written to it again (writes fail or block)."""
        from sidestep.tui.terminal import silence_std_streams

        gone = getattr(self._driver, "terminal_gone", None)
        if gone is not None:
            gone()
        silence_std_streams()

    def on_unmount(self) -> None:
        # Whatever ends the app (a quit that skipped the dialog, an internal error), an active
        # run stops with a checkpoint: Python waits for the engine thread before it exits, and
        # a run that never stops would hang the process with nothing saved.
        self.runner.stop()
        self.preprocessing.stop()
        self.estimating.stop()
        if self.gpu:
            self.gpu.stop(timeout=2.0)

    # -- settings and folders ------------------------------------------------------------------
    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        if settings.theme in self.available_themes:
            self.theme = settings.theme
        if self.gpu:
            self.gpu.period = settings.gpu_poll_seconds

    def checkpoint_root(self) -> Path:
        if self.demo:
            return self.demo_dir / "checkpoints"
        return Path(self.settings.checkpoint_dir).expanduser()

    def demo_runs_root(self) -> Path:
        """Where the demo's runs go: an output root the user saved in Settings, else the demo's
        own folder (not ./output of wherever the demo started)."""
        from sidestep.config.settings import Settings

        saved = self.settings.output_root
        if saved and saved != Settings().output_root:
            return Path(saved).expanduser()
        return self.demo_dir / "runs"

    def run_roots(self) -> list[Path]:
        roots = [Path(self.settings.output_root).expanduser()]
        demo_runs = self.demo_dir / "runs"
        if self.demo or demo_runs.is_dir():
            roots.append(demo_runs)
        if self.runner.config is not None:
            parent = Path(self.runner.config.output_dir).expanduser().parent
            if parent not in roots:
                roots.append(parent)
        return roots

    def run_places(self) -> list[Path]:
        """Where runs are looked for: the roots, then the folders of runs started in the
        background anywhere else (``--detach`` to any folder; killed ones too), and of every
        run a training started in (an --output-dir outside the root). Reads files: call it
        from a worker."""
        from sidestep.engine.live_runs import recorded, remembered_runs

        return [*self.run_roots(), *(Path(e["run_dir"]) for e in recorded()),
                *reversed(remembered_runs())]

    # -- navigation ----------------------------------------------------------------------------
    def push_screen(self, screen, *args, **kwargs):
        """A new screen gets its width class (``-narrow``) before it mounts: set after, on its
        first resize, it restyles every widget again (half a second on the training form)."""
        if not isinstance(screen, str) and not screen.is_attached:
            width = self.size.width
            for edge, name in self.HORIZONTAL_BREAKPOINTS:
                screen.set_class(False, name)
            name = max((b for b in self.HORIZONTAL_BREAKPOINTS if width >= b[0]), default=None)
            if name is not None:
                screen.add_class(name[1])
        return super().push_screen(screen, *args, **kwargs)

    def goto(self, screen=None) -> None:
        """Show ``screen`` with the dashboard under it (None: the dashboard itself)."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if screen is not None:
            self.push_screen(screen)

    def action_dashboard(self) -> None:
        self.goto(None)

    def action_new_training(self, mode: str = "fixed", explicit: dict | None = None,
                            preset: str | None = None, focus: str | None = None,
                            resumed: tuple[str, dict] | None = None) -> None:
        from sidestep.tui.form_model import fresh_run_dir
        from sidestep.tui.screens.train_form import TrainingFormScreen

        kept = self._typed_in_kept_form(mode) \
            if explicit is None and preset is None and resumed is None else None
        if kept is not None:
            explicit, preset = kept
        demo_ready = self.demo and (self.demo_dir / "tensors").is_dir()
        if demo_ready and explicit is None and preset is None:
            open_demo_form(self, mode)  # F or V in the demo: its quick form, as at the start
            return
        root = self.demo_runs_root() if self.demo else \
            Path(self.settings.output_root).expanduser()
        values = {"checkpoint_dir": str(self.checkpoint_root()),
                  "output_dir": fresh_run_dir(root, "demo" if self.demo else "run")}
        if demo_ready:  # with the demo's model
            values["dataset_dir"] = str(self.demo_dir / "tensors")
        elif self.settings.dataset_root:
            values["dataset_dir"] = self.settings.dataset_root
        if self.settings.keep_running:  # the form's "Keep running after I quit" starts checked
            values["detach"] = True
        values.update(explicit or {})
        form = TrainingFormScreen(mode, values, preset=preset, focus=focus, resumed=resumed)
        self._last_form = form
        if kept is not None:  # edits made in it are kept the same way
            self._kept_form = form
        self.goto(form)

    def _typed_in_kept_form(self, mode: str) -> tuple[dict, str | None] | None:
        """(values, preset) of the form whose start failed or was refused, for a plain new
        form of its mode: the user fixes what went wrong instead of typing it all again."""
        from sidestep.engine.run_dir import RUN_FILE

        form = self._kept_form
        if form is None or form.mode != mode:
            return None
        typed = dict(form.explicit)
        out = typed.get("output_dir")
        if out and (Path(str(out)).expanduser() / RUN_FILE).is_file():
            typed.pop("output_dir")  # the failed run kept its folder: a fresh one instead
        return typed, form.preset_name

    def load_preset_in_form(self, name: str) -> None:
        """A new form from preset ``name`` that keeps what a preset does not hold (paths,
        device, model) from the last form: loading one must not empty the dataset folder."""
        from sidestep.config import schema

        last = self._last_form
        if last is None:
            self.action_new_training(preset=name)
            return
        held = {s.name for s in schema.PRESET_FIELDS}
        kept = {k: v for k, v in last.explicit.items() if k not in held}
        self.action_new_training(last.mode, kept, preset=name)

    def current_target(self) -> RunTarget | None:
        """The run the Monitor shows: the one started or attached last."""
        target = self.target if self.target is not None else self.runner
        return target if target.state is not None else None

    def action_monitor(self) -> None:
        from sidestep.tui.screens.monitor import MonitorScreen

        target = self.current_target()
        if target is None:  # none of its own: the newest run live in another process
            self.run_worker(self._newest_live_run, thread=True, name="monitor-find",
                            group="monitor-find", exclusive=True, exit_on_error=False)
            return
        self.goto(MonitorScreen(target.state, target=target))

    def _newest_live_run(self) -> Path | None:
        """Worker thread: the live run started last under the places runs are looked for."""
        from sidestep.engine.live_runs import run_rows

        live = [r for r in run_rows(self.run_places()) if r["live"]]
        newest = max(live, key=lambda r: r.get("started_at") or 0, default=None)
        return Path(newest["path"]) if newest else None

    def action_dataset(self, folder: str | None = None) -> None:
        from sidestep.tui.screens.dataset import DatasetScreen

        pick = False
        if folder is None:
            if self.demo:  # its songs, even while the demo is still being built
                folder = str(self.demo_dir / "audio")
            else:  # none set: the browser asks (it scanned the current folder, said "no audio")
                folder = self.settings.dataset_root or None
                pick = True  # the root is where the user's datasets are: one is typed next
        self.goto(DatasetScreen(folder, pick=pick))

    def action_estimate(self, explicit: dict | None = None) -> None:
        from sidestep.tui.screens.estimate import EstimateScreen

        if isinstance(self.screen, EstimateScreen) and explicit is None:
            return  # already there: a new screen would drop the ranking under way
        self.goto(EstimateScreen(explicit))

    def action_compare_configs(self, paths: list[str] | None = None) -> None:
        from sidestep.tui.screens.estimate import CompareScreen

        self.goto(CompareScreen(paths))

    def action_history(self) -> None:
        from sidestep.tui.screens.history import HistoryScreen

        self.goto(HistoryScreen())

    def action_presets(self) -> None:
        from sidestep.tui.screens.presets import PresetsScreen

        self.goto(PresetsScreen())

    def action_settings(self) -> None:
        from sidestep.tui.screens.settings import SettingsScreen

        self.goto(SettingsScreen())

    def action_help(self) -> None:
        from sidestep.tui.screens.help import HelpScreen

        self.goto(HelpScreen())

    def last_form_values(self) -> dict | None:
        form = self._last_form
        return form.current_values() if form is not None else None

    def last_form_typed(self) -> dict:
        """What the user typed in the last form (epochs, learning rate, ...), for a new form
        that carries on from it; not where that run writes or what it resumes."""
        form = self._last_form
        typed = dict(form.explicit) if form is not None else {}
        for name in ("output_dir", "resume_from", "module_config"):
            typed.pop(name, None)
        return typed

    def model_widths(self) -> dict[str, int]:
        """The default model's latent and condition widths, to check ``.pt`` files against;
        {} when the checkpoint folder cannot tell (the files are then compared with each
        other). Reads a file: call it from a worker."""
        import json

        from sidestep.model.checkpoints import resolve_model
        from sidestep.model.config import AceStepConfig

        try:
            model = resolve_model(self.checkpoint_root(), "turbo")
            path = model.path / "config.json"
            cfg = AceStepConfig.from_dict(json.loads(path.read_text(encoding="utf-8")),
                                          str(path))
        except Exception:  # no usable model here: not the dataset's problem
            return {}
        return {"latent_width": cfg.audio_acoustic_hidden_dim, "cond_width": cfg.enc_hidden}

    # -- preprocessing -------------------------------------------------------------------------
    def start_preprocess(self, config, screen) -> bool:
        """False when an earlier preprocessing is still finishing its song (the screen says
        so); one job at a time, so two never write the same folder."""
        return self.preprocessing.start(config, screen)

    def cancel_preprocess(self) -> None:
        self.preprocessing.stop()

    # -- the estimate -------------------------------------------------------------------------
    def start_estimate(self, config, screen) -> bool:
        if self.runner.active:
            self.show_error("A run is active", "The estimate would compete with the training "
                            "run for the GPU's memory: stop the run first, or wait for it.")
            return False
        if not self.estimating.start(config, screen):
            self.show_error("An estimate is running",
                            "The previous estimate is still finishing its current batch; "
                            "try again in a moment.")
            return False
        return True

    def cancel_estimate(self) -> None:
        self.estimating.stop()

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, config) -> None:
        from sidestep.tui.screens.monitor import MonitorScreen

        if self.runner.active:
            self.show_error("A run is active", "Only one training run at a time: stop the "
                            "current one first (Monitor → Stop & save).")
            return
        if self.estimating.active:
            self.show_error("An estimate is running", "It would compete with the run for the "
                            "GPU's memory: cancel it or wait for it (Estimate screen).")
            return
        if any(w.name == DETACH_WORKER and not w.is_finished for w in self.workers):
            self.notify("a run is being started in the background: one moment")
            return  # (a thread worker cannot be taken back: two would share the folder)
        self._run_form, self._kept_form = self._last_form, None
        if config.detach:  # "Keep running after I quit": a process of its own
            self.run_worker(partial(start_detached, self, config), thread=True,
                            group=DETACH_WORKER, name=DETACH_WORKER, exit_on_error=False)
            self.notify("checking the run, then starting it in the background…")
            return
        state = self.runner.start(config)
        self.target = self.runner
        self.goto(MonitorScreen(state, target=self.runner))

    def _add_attached(self, run: AttachedRun, origin=None) -> None:
        from sidestep.tui.screens.monitor import MonitorScreen

        key = _folder_key(run.run_dir)
        self.attached[key] = run
        self._problems_told[id(run.state)] = len(run.state.problems)
        self.run_worker(run.follow, thread=True, name=FOLLOW_WORKER,
                        group=f"{FOLLOW_WORKER}:{key}", exit_on_error=False)
        self.target = run
        self._show_monitor(MonitorScreen(run.state, target=run, back_to=origin), origin)

    def open_history_run(self, path: Path) -> None:
        from sidestep.tui.screens.history import HistoryScreen
        from sidestep.tui.screens.monitor import MonitorScreen

        # Opened from History, the curves go on top of it, so Esc returns there.
        origin = self.screen if isinstance(self.screen, HistoryScreen) else None
        state = self.runner.state
        if state is not None and state.active and self._is_own_run(path):
            self.target = self.runner
            self._show_monitor(MonitorScreen(state, target=self.runner, back_to=origin),
                               origin)
            return
        run = self.attached.get(_folder_key(path))
        if run is not None and run.active:
            self.target = run
            self._show_monitor(MonitorScreen(run.state, target=run, back_to=origin), origin)
            return

        def load() -> RunState | AttachedRun:
            # a run live in another process is followed; any other is read back
            live = AttachedRun.open(self, Path(path))
            return live if live is not None else RunState.from_run_dir(Path(path))

        self._open_origin = origin  # where Esc returns once the run is shown
        self.run_worker(load, thread=True, group="history-load", exit_on_error=False,
                        exclusive=True, name="history-load")

    def _is_own_run(self, path: Path) -> bool:
        """Is ``path`` the folder of the run the App's engine trains?"""
        folders = {self.runner.state.run_dir if self.runner.state else None,
                   self.runner.config.output_dir if self.runner.config else None}
        return _folder_key(path) in {_folder_key(f) for f in folders if f}

    def _show_monitor(self, monitor, origin) -> None:
        if origin is not None and self.screen is origin:
            self.push_screen(monitor)
        else:
            self.goto(monitor)

    def resume_run(self, run_dir: Path, checkpoint: Path) -> None:
        from sidestep.config.resume import carried_settings
        from sidestep.engine.run_dir import read_run
        from sidestep.tui.form_model import FORM_MODES

        info = read_run(run_dir) or {}
        cfg = info.get("config") or {}
        mode = cfg.get("mode") if cfg.get("mode") in FORM_MODES else "fixed"
        explicit = carried_settings(mode, cfg)
        explicit.update(resume_from=str(checkpoint), output_dir=str(run_dir))
        epochs = cfg.get("epochs")
        if info.get("status") == "completed" and epochs:
            # a finished run continues only with more epochs: say so before Start refuses
            # (the form's check of Resume from reads the epochs the checkpoint trained)
            self.action_new_training(mode, explicit, focus="epochs",
                                     resumed=(str(checkpoint), cfg))
            self.notify(f"{run_dir.name} finished all {counted(epochs, 'epoch')}: raise Epochs "
                        f"above {epochs} to train it further, then start", severity="warning",
                        timeout=10)
            return
        self.action_new_training(mode, explicit, resumed=(str(checkpoint), cfg))
        self.notify(f"resuming from {checkpoint.name}: check the form, then start")

    def active_target(self) -> RunTarget | None:
        """The Monitor's run while it is active, else None."""
        target = self.current_target()
        return target if target is not None and target.active else None

    def _run_command(self, command: str) -> None:
        target = self.active_target()
        if target is None:  # (a palette opened during the run, chosen after it ended)
            self.notify("no run is active", severity="warning")
            return
        getattr(target, command)()

    def action_pause_run(self) -> None:
        self._run_command("pause")

    def action_resume_run(self) -> None:
        self._run_command("resume")

    def action_save_now(self) -> None:
        self._run_command("save_now")

    def action_stop_run(self) -> None:
        self._run_command("stop")

    def drain_events(self) -> None:
        """Fold new events of every run the app shows; tell of ends and fatal problems."""
        for target in (self.runner, *self.attached.values()):
            target.drain()
            self._tell(target)

    def _tell(self, target: RunTarget) -> None:
        state = target.state
        if state is None:
            return
        told = self._problems_told.get(id(state), 0)
        fatal = [p for p in state.problems[told:] if p.fatal]
        self._problems_told[id(state)] = len(state.problems)
        finished = target.take_finished()
        name = Path(state.run_dir or state.title).name
        quitting = target is self.runner and self.runner.quit_after_run
        if finished is not None:
            if target is self.runner and finished.status == "failed":
                self._kept_form = self._run_form
            # the failure after a fatal problem already told is the same news
            if not quitting and id(state) not in self._fatal_told:
                self.tell_user(f"Side-Step: run {state.status}", _end_text(name, finished))
            announce(self, finished, target)
        elif fatal:
            self._fatal_told.add(id(state))
            self.tell_user("Side-Step: run needs you", f"{name}: {fatal[-1].message}")

    def tell_user(self, title: str, body: str) -> None:
        """The bell and/or a desktop notification, as the settings say (off: nothing)."""
        from sidestep.tui.notify import notice_escapes

        text = notice_escapes(self.settings.notify, title, body,
                              tmux=bool(os.environ.get("TMUX")))
        if text:
            self.write_escapes(text)

    def write_escapes(self, text: str) -> None:
        """Raw escapes on the terminal, in order with the screen's own output: through the
        driver's writer (as ``App.bell`` does), whose output file drops writes once the
        terminal is gone (``terminal.TerminalOut``). Never raises."""
        driver = self._driver
        if driver is None or self.is_headless or self.terminal_dead:
            return
        try:
            driver.write(text)
        except Exception:  # not in application mode (starting, leaving): the notice is lost
            pass

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place that reacts to a finished worker, by its name."""
        worker = event.worker
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        failed = event.state == WorkerState.ERROR
        if worker.name == "training" and worker is self.runner.worker and failed:
            state = self.runner.state
            error = f"{type(worker.error).__name__}: {worker.error}"
            log.error("engine worker failed: %s", error)
            if state is not None and state.finished is None:
                state.apply(RunFinished(status="failed", error=error, error_kind="runtime"))
        elif worker.name == DEMO_BUILD:
            from sidestep.tui.screens.demo_setup import DemoSetupScreen

            if not failed and isinstance(self.screen, DemoSetupScreen):
                open_demo_form(self)
            elif not failed:  # the user went on elsewhere meanwhile: not pulled away from it
                self.notify("The demo is ready: F opens a form on its model and songs",
                            title="Demo", timeout=10)
            else:
                self.show_error("Demo setup failed", f"{type(worker.error).__name__}: "
                                f"{worker.error}", "Run `sidestep make-demo DIR` for details.")
        elif worker.name == PreprocessJob.WORKER:
            self.preprocessing.finished(worker, failed)
        elif worker.name == EstimateJob.WORKER:
            self.estimating.finished(worker, failed)
        elif worker.name == "monitor-find":
            if not failed and worker.result is not None:
                self.open_history_run(worker.result)
            else:
                self.notify("no run yet: start one with F")
        elif worker.name == "history-load":
            from sidestep.tui.screens.monitor import MonitorScreen

            if failed:
                self.show_error("Cannot open run", str(worker.error))
            elif isinstance(worker.result, AttachedRun):
                self._add_attached(worker.result, self._open_origin)
            else:
                origin = self._open_origin
                self._show_monitor(MonitorScreen(worker.result, live=False, back_to=origin),
                                   origin)
        elif worker.name == DETACH_WORKER:
            if not failed:
                self._add_attached(worker.result)
                return
            self._kept_form = self._run_form
            if isinstance(worker.error, StartRefused):
                self.show_error("Cannot start the run", str(worker.error),
                                "Fix the form and start again.")
            else:
                self.show_error("Cannot start the run", f"{type(worker.error).__name__}: "
                                f"{worker.error}")
        elif worker.name == FOLLOW_WORKER and failed:
            self.notify(f"stopped following the run: {type(worker.error).__name__}: "
                        f"{worker.error}", title="Attached run", severity="error", timeout=15)
        elif worker.name == SEND_WORKER and failed:
            from sidestep.engine.control_channel import ChannelError

            error = worker.error
            self.notify(str(error) if isinstance(error, ChannelError) else
                        f"the command was not sent: {type(error).__name__}: {error}",
                        title="Run command", severity="error", timeout=15)

    # -- errors and quitting -------------------------------------------------------------------
    def show_error(self, title: str, message: str, hint: str = "") -> None:
        from sidestep.tui.screens.dialogs import ErrorScreen
        from sidestep.tui.wording import in_app_words

        self.push_screen(ErrorScreen(title, in_app_words(message), in_app_words(hint)))

    def _handle_exception(self, error: Exception) -> None:
        """Unexpected errors in handlers show in the app instead of ending it."""
        self.errors.append(error)
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        log_path = paths.cache_dir() / "sidestep-tui.log"
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(details + "\n")
        except OSError:
            pass
        if not self.is_running or not self.screen_stack:
            super()._handle_exception(error)
            return
        try:
            self.call_later(self.show_error, "Unexpected error",
                            f"{type(error).__name__}: {error}",
                            f"The app keeps running. Details: {log_path}")
        except Exception:
            super()._handle_exception(error)

    async def on_event(self, event: events.Event) -> None:
        """Keys from the terminal go through ``typed`` (typeahead.py): one at a time, each
        after the one before has settled."""
        if isinstance(event, events.Key) and not event.is_forwarded:
            await self.typed.arrived(event)
            return
        await super().on_event(event)

    async def _handle_typed_key(self, event: events.Key):
        """One typed key. A letter runs its binding at once, not after the focused widget has
        passed it back up, so that it acts where it was typed; the lookup is the one the key
        would bubble through (focused widget, screen, app; a dialog stops it), so the same
        binding wins; in a text field a letter is data and goes there. Any other key is
        Textual's. Returns the widget the key was given to (None: handled here)."""
        if (event.character is not None and len(event.key) == 1
                and not is_field_widget(self.focused)
                and await self._check_bindings(event.key)):
            return None
        target = self.focused or self.screen
        await super().on_event(event)
        return target

    def on_key_settled(self, message: KeySettled) -> None:
        self.typed.settled(message.serial)

    def release_keys(self) -> None:
        """A screen that puts the cursor in a field once built (``PLACES_FOCUS``) has: the keys
        typed after the letter that opened it go on."""
        self.typed.release()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The single-letter keys are refused while a field has focus: an Input consumes
        printable keys itself, but a suggestion list, a Select or a Checkbox does not, and the
        key would reach these bindings (typing a path jumped to Settings). One check here
        covers every such widget on every screen. None: shown dimmed in the footer."""
        if action in self.LETTER_ACTIONS and is_field_widget(self.focused):
            return None
        return True

    def action_help_quit(self) -> None:
        """ctrl+c outside a text field (Textual's binding): a terminal habit, so say what to
        press instead of doing nothing; training is never stopped by it."""
        what = "X on the Monitor stops the run and saves; " if self.runner.active else ""
        self.notify(f"ctrl+c does not quit here: {what}Q or ctrl+q quits (asking first while "
                    "a run is active)", title="Quit?", timeout=6)

    def get_system_commands(self, screen):
        """Textual's palette entries, less its "Quit": that exited at once, mid-run, without
        the question Q asks (the palette's own Quit, from commands.py, asks)."""
        return [c for c in super().get_system_commands(screen)
                if c.callback != self.action_quit]

    async def action_quit_anywhere(self) -> None:
        await self.action_request_quit()

    async def action_request_quit(self) -> None:
        from sidestep.tui.screens.dialogs import ConfirmScreen

        if not self.runner.active:
            if not self.settings.confirm_quit:
                self.exit()
                return
            going_on = left_running(self)
            self.push_screen(ConfirmScreen("Quit Side-Step?", "Leave the app?" + (
                f" {len(going_on)} run(s) keep training in the background." if going_on
                else ""), [("quit", "Quit", "error"), ("cancel", "Cancel", "primary")],
                default="quit"),  # nothing is lost: q, Enter quits
                             lambda choice: self.exit() if choice == "quit" else None)
            return

        def answer(choice: str) -> None:
            if choice == "stop":
                self.runner.stop()
                self.runner.quit_after_run = True
                self.notify("saving a checkpoint; the app closes when it is written",
                            timeout=30)

        self.push_screen(ConfirmScreen(
            "Training is running",
            "Quit now? The run stops at the next micro-batch and saves a checkpoint first.",
            [("stop", "Stop, save and quit", "error"), ("cancel", "Cancel", "primary")]),
            answer)


def _prewarm_engine() -> None:
    """Import the engine's heavy libraries while the user is still in the form."""
    import sidestep.engine.trainer  # noqa: F401
    from sidestep import bytecode

    bytecode.write_later()  # where Python will not: the next start skips compiling them


def run_app(demo: bool = False) -> int:
    """Run the app; the exit code is 130 when it quit by stopping a run (a signal, or Quit
    during a run), as for the CLI."""
    app = SideStepApp(demo=demo)
    try:
        app.run()
    finally:
        save_before_exit(app)
        if not app.terminal_dead:
            own = own_run_line(app)
            for line in ([own] if own else []) + left_running(app):
                # quitting never stops another process's run
                try:
                    print(line, flush=True)
                except OSError:
                    break
    return app.return_code or 0


def _folder_key(path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(Path(path).absolute())


def _end_text(name: str, finished: RunFinished) -> str:
    if finished.status == "completed":
        return f"{name} completed at step {finished.step}"
    if finished.status == "stopped":
        return f"{name} stopped at step {finished.step}"
    return f"{name} failed: {finished.error or 'see its sidestep.log'}"
