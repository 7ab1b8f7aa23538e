"""A run in another process, shown and controlled in the app as if it were its own: one started
with ``--detach`` (from the command line, or from the form with "Keep running after I quit"),
a headless ``sidestep fixed`` in another terminal, or another app's run.

``AttachedRun`` offers what the monitor needs of the App's ``EngineRunner`` (``RunTarget``):

- **state**: a ``RunState`` caught up on the run's ``events.jsonl`` so far in a worker thread
  (``open``, before anything shows it: a long run's file is large), then followed by a worker
  of its own (``follow``: ``EventTail`` reads only what was appended since, and a slow or
  network disk never stalls the screen); the App's drain timer applies what it queued.
- **active**: from the run's process (pid, host and heartbeat: ``run_is_alive``), never from the
  status run.json records. A process that is gone without a ``run_finished`` ends the run as
  ``interrupted`` after a grace period (another host's files may lag).
- **pause / resume / save_now / stop**: commands through the run folder's control channel,
  written by a worker (a write there may wait on the disk), in the order given. A folder that
  cannot take them is an error shown in the app. Until the run has claimed its folder (it is
  still loading) there is no channel: a stop is a SIGTERM to its process (nothing is trained
  yet, so nothing is lost), pause and save wait for it.

Quitting the app never stops it; the app says how to attach again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from sidestep.engine.events import Event, RunFinished
from sidestep.engine.live_runs import EventTail
from sidestep.engine.run_dir import CONSOLE_LOG, EVENTS_FILE
from sidestep.tui.state import RunState

LOOK_SECONDS = 2.0    # how often the run's process is looked at
GRACE_SECONDS = 5.0   # after it is gone, how long its last events may take to show
POLL_SECONDS = 0.5    # how often the follower reads the events file
MAX_EVENTS_PER_TICK = 2000
SEND_WORKER = "run-command"
FOLLOW_WORKER = "follow-run"
DETACH_WORKER = "detach-start"


class StartRefused(Exception):
    """A detached start that did not happen; the message says why (shown in the app)."""


class AttachedRun:
    outlives_app = True  # its own process: quitting the app leaves it training

    def __init__(self, app, run_dir: Path | str, *, process: dict[str, Any] | None = None,
                 since: float = 0.0, title: str | None = None):
        self.app = app
        self.run_dir = Path(run_dir)
        # The process we know of before run.json names one (a start still loading): the pid
        # spawn returned, or the detached-start record's.
        self.process = process
        self.since = since  # events before it belong to an earlier run in the same folder
        self.tail = EventTail(self.run_dir / EVENTS_FILE)
        self.state: RunState = RunState(run_dir=str(self.run_dir),
                                        title=title or str(self.run_dir))
        self.alive = True
        self.claimed = process is None  # the run has written run.json: its channel listens
        self._terminated = False
        self._pending: deque[Event] = deque()  # read by the follower, applied by drain
        self._ended = False  # the follower has queued the run's end
        self._gone: RunFinished | None = None  # the end it wrote for a vanished process
        self._gone_claimed = False
        self._next_look = 0.0
        self._gone_at: float | None = None
        self._announced: RunFinished | None = None
        self._lock = threading.Lock()
        self._commands: list[str] = []
        self._sending = False

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, app, run_dir: Path | str) -> "AttachedRun | None":
        """The run live in ``run_dir``, caught up on its events so far; None when no process
        runs there. Reads files: call it from a worker."""
        from sidestep.engine.run_dir import live_status

        run_dir = Path(run_dir)
        status, info = live_status(run_dir)
        if status == "running" and info is not None and info.get("pid") == os.getpid() and \
                info.get("host") == socket.gethostname():
            return None  # this app's own engine: not another process's run
        if status == "running":
            run = cls(app, run_dir, since=float((info or {}).get("started_at") or 0.0))
        else:  # a detached start still loading (run.json comes when it claims the folder)
            entry = starting_entry(run_dir)
            if entry is None:
                return None
            run = cls(app, run_dir, process=entry,
                      since=float(entry.get("started_at") or 0.0))
        run.catch_up()
        pid = (info or {}).get("pid") if status == "running" else run.process.get("pid")
        run.state.add_log(f"attached to {run_dir}" + (f" (pid {pid})" if pid else "")
                          + ": it trains in its own process; quitting the app leaves it "
                          "training")
        return run

    def catch_up(self) -> None:
        """Fold the events written so far (worker thread, before the state is shown)."""
        for event in self.tail.read():
            if event.time >= self.since:
                self.state.apply(event)
        if self.state.finished is not None:  # ended before we looked: nothing to announce
            self._announced = self.state.finished
        self._next_look = time.monotonic() + LOOK_SECONDS

    # -- following: a worker reads, the UI thread applies ----------------------------------------
    @property
    def active(self) -> bool:
        return self.state.finished is None and self.alive

    def follow(self) -> None:
        """Worker thread (``FOLLOW_WORKER``): read what the run appends and look at its
        process until it ends or the app quits."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        while not worker.is_cancelled and self.poll():
            time.sleep(POLL_SECONDS)

    def poll(self) -> bool:
        """Queue the events appended since the last call and, when due, look at the process;
        False once the run's end is queued (nothing more to follow). Reads files."""
        if self._ended:
            return False
        events = [e for e in self.tail.read() if e.time >= self.since]
        with self._lock:
            self._pending.extend(events)
        if any(isinstance(e, RunFinished) for e in events):
            self._ended = True
            return False
        now = time.monotonic()
        if not events and now >= self._next_look:
            self._next_look = now + LOOK_SECONDS
            gone = self._look(now)
            if gone is not None:
                with self._lock:
                    self._pending.append(gone)
                self._ended = True
                return False
        return True

    def drain(self) -> int:
        """UI thread: apply what the follower queued (at most ``MAX_EVENTS_PER_TICK``)."""
        if self.state.finished is not None:
            return 0
        with self._lock:
            batch = [self._pending.popleft()
                     for _ in range(min(len(self._pending), MAX_EVENTS_PER_TICK))]
        for event in batch:
            self.state.apply(event)
            if event is self._gone and self._gone_claimed:
                self.state.status = "interrupted"
        if batch and self.state.status != "starting":
            self.claimed = True  # it trains (run_started comes after the claim)
        return len(batch)

    def _look(self, now: float) -> RunFinished | None:
        """The end to show when the process is gone (after the grace period), else None."""
        from sidestep.engine.run_dir import live_status, run_is_alive

        _status, info = live_status(self.run_dir)
        claimed = info is not None and (self.process is None
                                        or info.get("pid") == self.process.get("pid"))
        if claimed:
            self.claimed = True
            alive = run_is_alive(info, self.run_dir)
        else:  # not claimed yet (still loading), or a folder an earlier run left
            alive = self.process is not None and run_is_alive(self.process)
        if alive:
            self.alive, self._gone_at = True, None
            return None
        if self._gone_at is None:
            self._gone_at = now
            self._next_look = now + GRACE_SECONDS  # then it is judged
            return None
        if now - self._gone_at < GRACE_SECONDS:
            return None
        self._gone, self._gone_claimed = self._end_gone(claimed), claimed
        self.alive = False
        return self._gone

    def _end_gone(self, claimed: bool) -> RunFinished:
        """The process is gone and wrote no end: say what is left."""
        from sidestep.engine.checkpointing import list_checkpoints

        saved = list_checkpoints(self.run_dir) if self.run_dir.is_dir() else []
        if not claimed and self._terminated:
            return RunFinished(status="stopped", reason="stopped while loading")
        if not claimed:
            error = ("the run ended before its first step"
                     + (f": {last_lines(self.run_dir / CONSOLE_LOG)}"
                        if (self.run_dir / CONSOLE_LOG).is_file() else ""))
        else:
            error = ("the run's process ended without finishing (killed, or its machine "
                     "went down)"
                     + (f"; its newest complete checkpoint is {saved[-1]}" if saved else
                        "; it saved no checkpoint"))
        return RunFinished(status="failed", step=self.state.step, epoch=self.state.epoch,
                           error=error, error_kind="runtime",
                           checkpoint_path=str(saved[-1]) if saved else None,
                           reason="process gone")

    def take_finished(self) -> RunFinished | None:
        finished = self.state.finished
        if finished is None or finished is self._announced:
            return None
        self._announced = finished
        self.alive = False
        return finished

    # -- commands ------------------------------------------------------------------------------
    def pause(self) -> None:
        self._send("pause", "pause sent: the run pauses at its next micro-batch")

    def resume(self) -> None:
        self._send("resume", "resume sent")

    def save_now(self) -> None:
        self._send("save", "save sent: the run saves a checkpoint at its next micro-batch"
                   if self.state.status != "paused" else "save sent: the run saves now")

    def stop(self, reason: str = "stopped from the app") -> None:
        if self._send("stop", "stop sent: the run saves a checkpoint at its next "
                      "micro-batch and ends"):
            self.state.status = "stopping"

    def _send(self, command: str, note: str) -> bool:
        """Queue ``command`` for the run; one worker writes them, in order. False when the
        run is no longer live, or still loading."""
        if not self.active:
            return False
        if not self.claimed:
            if command == "stop":
                return self._terminate()
            self.app.notify("the run is still loading: its controls work once it trains",
                            severity="warning")
            return False
        self.state.add_log(note)
        with self._lock:
            self._commands.append(command)
            if self._sending:
                return True
            self._sending = True
        self.app.run_worker(self._write_commands, thread=True, name=SEND_WORKER,
                            group=SEND_WORKER, exit_on_error=False)
        return True

    def _terminate(self) -> bool:
        """Stop a run that is still loading: its process ends (it has claimed nothing)."""
        import signal

        from sidestep.engine.run_dir import run_is_alive

        process = self.process or {}
        if process.get("host") != socket.gethostname() or not run_is_alive(process):
            self.app.notify("the run is still loading: stop it once it trains",
                            severity="warning")
            return False
        try:
            os.kill(int(process["pid"]), signal.SIGTERM)
        except (OSError, ValueError, KeyError) as exc:
            self.app.notify(f"could not stop the run's process: {exc}", severity="error")
            return False
        self._terminated = True
        self.state.add_log("stopping: the run was still loading, so nothing is lost")
        return True

    def _write_commands(self) -> None:
        """Worker thread: write the queued commands; raises ``ChannelError`` (the App shows
        it) for a folder that cannot take them, dropping the rest."""
        from sidestep.engine.control_channel import send

        while True:
            with self._lock:
                if not self._commands:
                    self._sending = False
                    return
                command = self._commands.pop(0)
            try:
                send(self.run_dir, command, sender="sidestep-tui")
            except BaseException:
                with self._lock:
                    self._commands.clear()
                    self._sending = False
                raise


# -- helpers -------------------------------------------------------------------------------------
def starting_entry(run_dir: Path) -> dict[str, Any] | None:
    """The detached-start record of a live process for ``run_dir`` (newest), if any."""
    from sidestep.engine.live_runs import recorded
    from sidestep.engine.run_dir import run_is_alive

    try:
        target = run_dir.resolve()
    except OSError:
        return None
    for entry in reversed(recorded()):
        try:
            same = Path(entry["run_dir"]).resolve() == target
        except OSError:
            continue
        if same:
            return entry if run_is_alive(entry) else None
    return None


def last_lines(path: Path, lines: int = 4, limit: int = 4096) -> str:
    """The last few non-empty lines of a log, joined (a failed start says why there)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - limit))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " / ".join(kept)


def start_detached(app, config) -> AttachedRun:
    """Worker thread: check ``config`` as any start is checked, then start it as a process of
    its own (the same command line the CLI's ``--detach`` runs) and return it attached.
    Raises ``StartRefused`` with the reason."""
    import shutil

    from sidestep.config.command_line import command_args
    from sidestep.engine.live_runs import child_argv, spawn
    from sidestep.engine.preflight import preflight
    from sidestep.engine.run_dir import process_identity
    from sidestep.engine.trainer import input_error_types

    try:
        preflight(config)
    except input_error_types() as exc:
        raise StartRefused(str(exc)) from None
    run_dir = Path(config.output_dir).expanduser().absolute()
    argv = child_argv(command_args(config.mode, config.to_dict()))
    made = not run_dir.exists()
    since = time.time()
    try:
        pid = spawn(argv, run_dir)
    except OSError as exc:
        if made:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise StartRefused(f"{run_dir}: could not start the run in the background "
                           f"({exc.strerror or exc})") from None
    run = AttachedRun(app, run_dir, process=process_identity(pid), since=since,
                      title=str(config.output_dir))
    run._next_look = time.monotonic() + LOOK_SECONDS
    run.state.add_log(f"started {config.mode} training in the background (pid {pid}): "
                      f"loading libraries and the model; its output goes to "
                      f"{run_dir / CONSOLE_LOG}")
    return run
