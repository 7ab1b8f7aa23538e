"""The App's one training engine: a thread worker attached to the App (never to a Screen, whose
workers die when it is popped), events through a queue the App drains on a timer; what the
monitor controls (``RunTarget``: this engine, or a run in another process, ``attached.py``);
how a run's end is announced; the signals that stop it; the wait for its save when the app
exits."""

from __future__ import annotations

import queue
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

from sidestep.engine.control import Control
from sidestep.engine.events import RunFinished
from sidestep.engine.sinks import QueueSink
from sidestep.engine.run_dir import LOG_FILE, resume_command
from sidestep.tui.state import EarlierSteps, RunState

MAX_EVENTS_PER_TICK = 2000


def default_engine(config, sinks, control):
    from sidestep.engine.trainer import Trainer

    return Trainer(config, sinks, control, with_app=True)  # the UI shares our CPU


class RunTarget(Protocol):
    """A run the monitor shows live and controls, and the App drains on its timer: the App's
    own ``EngineRunner`` or an ``AttachedRun`` (a run in another process)."""

    state: RunState | None
    outlives_app: bool  # True: quitting the app leaves it training

    @property
    def active(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def save_now(self) -> None: ...

    def stop(self, reason: str = ...) -> None: ...

    def drain(self) -> int: ...

    def take_finished(self) -> RunFinished | None: ...


class EngineRunner:
    outlives_app = False  # the engine is a thread of this process: quitting stops it

    def __init__(self, app, factory: Callable[..., Any] | None = None):
        self.app = app
        self.factory = factory or default_engine
        self.state: RunState | None = None
        self.control: Control | None = None
        self.config = None
        self.worker = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.done = threading.Event()
        self.done.set()
        self.quit_after_run = False  # a signal or Quit asked the app to leave once it saved
        self._announced: RunFinished | None = None

    @property
    def active(self) -> bool:
        return not self.done.is_set()

    def start(self, config) -> RunState:
        if self.active:
            raise RuntimeError("a training run is already active")
        self.config = config
        self._announced = None
        self.control = Control()
        self._queue = queue.SimpleQueue()
        self.state = RunState(run_dir=str(config.output_dir), title=str(config.output_dir))
        self.state.add_log(f"starting {config.mode} training: loading libraries and the model")
        self.done.clear()
        sink = QueueSink(self._queue)
        control = self.control

        def work():
            try:
                if config.resume_from:  # before the engine's first event
                    earlier = EarlierSteps.of(config.output_dir, config.resume_from)
                    if earlier is not None:
                        sink.queue.put(earlier)
                engine = self.factory(config, [sink], control)
                return engine.run()
            finally:
                self.done.set()

        self.worker = self.app.run_worker(work, thread=True, group="engine", name="training",
                                          exit_on_error=False, exclusive=False)
        return self.state

    def drain(self) -> int:
        """Fold queued events into the state (UI thread). Returns how many were applied."""
        if self.state is None:
            return 0
        n = 0
        while n < MAX_EVENTS_PER_TICK:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self.state.apply(event)
            n += 1
        return n

    # -- commands ------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped from the app") -> None:
        if self.control and self.active:
            self.control.request_stop(reason)
            if self.state:
                self.state.status = "stopping"
                self.state.add_log("stopping: saving a checkpoint at the next micro-batch")

    def pause(self) -> None:
        if self.control and self.active:
            self.control.pause()
            if self.state:
                self.state.add_log("pausing at the next micro-batch")

    def resume(self) -> None:
        if self.control and self.active:
            self.control.resume()

    def save_now(self) -> None:
        if self.control and self.active:
            self.control.save_now()
            if self.state:
                # a paused engine wakes to save at once (Control.wait_while_paused)
                self.state.add_log("saving a checkpoint now" if self.state.status == "paused"
                                   else "saving a checkpoint at the next micro-batch")

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def take_finished(self) -> RunFinished | None:
        """The run's end the first time it is asked for after it arrived (announced once)."""
        state = self.state
        if state is None or state.finished is None or state.finished is self._announced:
            return None
        self._announced = state.finished
        return state.finished


def announce(app, finished: RunFinished, target: RunTarget | None = None) -> None:
    """A run's end, in the app. ``target``: the run it came from (None: the App's engine)."""
    if target is None or target is app.runner:
        if app.runner.quit_after_run:
            # the CLI's exit codes: 0 completed, 130 stopped with a checkpoint, 1 failed
            app.exit(return_code={"completed": 0, "stopped": 130}.get(finished.status, 1))
            return
        where = ""
    else:  # another process's run: say which (the monitor may show another one)
        where = f" ({target.state.title})" if target.state is not None else ""
    if finished.status == "completed":
        app.notify(f"training completed{where}: adapter in {finished.adapter_path}",
                   timeout=10)
    elif finished.status == "stopped":
        app.notify(f"training stopped{where}; checkpoint {finished.checkpoint_path}"
                   if finished.checkpoint_path else
                   f"training stopped{where} before its first step; nothing was kept",
                   timeout=10)
    else:
        interrupted = target is not None and target.state is not None and \
            target.state.status == "interrupted"
        hint = ("Fix the input and start again." if finished.error_kind == "input" else
                "History → Resume continues from its newest checkpoint." if interrupted else
                "The run folder's sidestep.log has the details." if _has_log(app, target) else
                "The Monitor's log shows what ran (a failed start keeps no sidestep.log).")
        app.show_error("Run interrupted" if interrupted else "Training failed",
                       finished.error or "unknown error", hint)


def _has_log(app, target: RunTarget | None) -> bool:
    """Whether the failed run left a sidestep.log to point at (a failed start takes its
    folder back, log and all)."""
    state = (target if target is not None else app.runner).state
    return state is not None and (Path(state.run_dir).expanduser() / LOG_FILE).is_file()


def install_stop_signals(app) -> None:
    """SIGTERM and SIGHUP go to ``app._on_stop_signal``. The loop runs the handlers as ordinary
    callbacks on the UI thread (the C-level handler only wakes the loop), so they may touch
    the app."""
    import asyncio

    loop = asyncio.get_running_loop()
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            loop.add_signal_handler(sig, app._on_stop_signal, name)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def stop_for_signal(app, name: str) -> None:
    """SIGTERM/SIGHUP (a dropped SSH session): save the run, then leave."""
    runner = app.runner
    if runner.active:
        if runner.state:
            runner.state.add_log(f"{name}: stopping with a checkpoint, then quitting")
        runner.stop(f"{name} received")
        runner.quit_after_run = True
    else:
        app.exit()


def save_before_exit(app) -> None:
    """However the app ended, a running engine finishes its save before the process exits."""
    app.preprocessing.stop()
    app.estimating.stop()  # it writes nothing: ending at its next batch is enough
    if app.preprocessing.active and not app.terminal_dead:
        try:  # the process cannot end before the song under way does: say why it waits
            print("preprocessing stops after the song under way (finished files and pass-1 "
                  "work are kept)…", flush=True)
        except OSError:
            pass
    app.preprocessing.wait(timeout=300)  # the song under way is written whole, or not at all
    if app.runner.active:
        app.runner.stop()
        if not app.terminal_dead:
            try:
                print("waiting for the training run to save a checkpoint…", flush=True)
            except OSError:
                pass
        app.runner.wait(timeout=900)


def own_run_line(app) -> str | None:
    """How the app's own run ended, for the terminal the app leaves (a SIGTERM or a quit
    during a run ends it with the screen that said so), with where it resumes."""
    state, config = app.runner.state, app.runner.config
    finished = state.finished if state is not None else None
    if finished is None or config is None:
        return None
    line = f"{Path(config.output_dir).name}: {finished.status} at step {finished.step}"
    if finished.status != "completed" and finished.checkpoint_path:
        line += f"; resume with: {resume_command(finished.checkpoint_path, config.mode)}"
    elif finished.adapter_path:
        line += f"; adapter: {finished.adapter_path}"
    return line


def left_running(app) -> list[str]:
    """One line per run the app showed that goes on training in its own process, for when
    the app has left the terminal (quitting never stops those)."""
    import shlex

    from sidestep.engine.run_dir import program

    return [f"the run keeps training in the background: {program()} attach "
            f"{shlex.quote(str(run.run_dir.absolute()))}"
            for run in getattr(app, "attached", {}).values() if run.active]
