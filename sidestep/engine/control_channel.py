"""Commands into a run from other processes (``sidestep stop|pause|resume|save RUN``).

The channel is a folder in the run folder::

    control/
      <time_ns>-<pid>-<random>.json   a command waiting for the run: {"command": "pause", ...}
      .<name>.tmp                      a command being written (ignored until renamed)
      acks/<name>.json                 the run's answer to that command (``state`` below)

A sender writes each command to a file of its own and renames it into place, so two commands
sent at once both arrive whole; the run reads them in name order (the send time leads the
name) and deletes each as it takes it. The run applies one command at a time to its
``Control`` (the object the app and the signal handlers use, checked every micro-batch) and
holds the next until the previous one has taken effect, which it learns from the run's own
events: so "pause, then resume" really pauses first. A stop is never held: it ends the run,
saving a checkpoint, and whatever is still held ends with it.

Ack states: ``queued`` (held behind an earlier command), ``received`` (applied, effect not
seen yet), ``done`` (took effect; ``message`` says how), ``ended`` (the run ended first) and
``ignored`` (unknown, unreadable, or sent before this run started).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidestep.config.atomic import write_json
from sidestep.engine.events import CheckpointSaved, Event, RunFinished, RunPaused, RunResumed

log = logging.getLogger("sidestep.engine")

CONTROL_DIR = "control"
ACKS_DIR = "acks"
COMMANDS = ("stop", "pause", "resume", "save")
POLL_SECONDS = 0.25
# "unchanged": the run was already as asked (a pause while paused, a resume while running), so
# it did nothing; the sender exits 1 for it, as for any command the run did not carry out.
FINAL_STATES = ("done", "ended", "ignored", "unchanged")


class ChannelError(ValueError):
    """The command could not be written (the message names the folder and the fix)."""


# -- sender side ---------------------------------------------------------------------------------
def control_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / CONTROL_DIR


def send(run_dir: Path | str, command: str, sender: str = "") -> str:
    """Write ``command`` for the run in ``run_dir``; returns its name (to read its ack).
    ``sender`` names the program for the run's log ("sidestep-tui"); none is the CLI."""
    if command not in COMMANDS:
        raise ChannelError(f"unknown command {command!r}; one of: {', '.join(COMMANDS)}")
    folder = control_dir(run_dir)
    if not folder.is_dir():
        if folder.exists():
            raise ChannelError(f"{folder}: is not a folder, so the run cannot receive "
                               "commands; remove that file (a live run makes the folder "
                               "again within a second)")
        raise ChannelError(f"{run_dir}: this run takes no commands (it has no {CONTROL_DIR}/ "
                           "folder; it was started by an older Side-Step); stop it with "
                           "kill -TERM <its pid> instead")
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.json"
    tmp = folder / f".{name}.tmp"
    body = json.dumps({"command": command, "sent_at": time.time(), "pid": os.getpid(),
                       **({"sender": sender} if sender else {})})
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, body.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, folder / name)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise ChannelError(f"{folder}: cannot write a command there "
                           f"({exc.strerror or exc}); run this as the user who started the "
                           "run, or make the folder writable") from None
    return name


def read_ack(run_dir: Path | str, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((control_dir(run_dir) / ACKS_DIR / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def withdraw(run_dir: Path | str, name: str) -> bool:
    """Take back a command the run has not read yet (True if it was still there)."""
    try:
        (control_dir(run_dir) / name).unlink()
        return True
    except OSError:
        return False


# -- run side ------------------------------------------------------------------------------------
@dataclass
class _Command:
    name: str
    command: str
    sender: Any = None
    sent_at: float = field(default_factory=time.time)  # the sender's clock: the same host
    applied_at: float | None = None  # wall time it reached Control; None while held
    ack: dict[str, Any] = field(default_factory=dict)
    program: str = ""  # who sent it: "" the CLI, "sidestep-tui" the app


class ControlWatcher:
    """Polls ``control/`` on its own thread and applies commands to ``control``; also an event
    sink, which is how it sees a command take effect. ``start`` when the run folder is
    claimed; the event bus ``close``s it when the run ends."""

    def __init__(self, run_dir: Path | str, control, poll: float = POLL_SECONDS):
        self.folder = control_dir(run_dir)
        self.control = control
        self.poll = poll
        self._lock = threading.Lock()  # guards the facts below (set by the event thread)
        self._paused_at: float | None = None  # time of the RunPaused not yet resumed
        self._pauses: list[float] = []
        self._resumes: list[float] = []
        # (time, what to answer, path) of step checkpoints
        self._saves: list[tuple[float, str, str]] = []
        self._step = 0
        self._finished: RunFinished | None = None
        self._queue: list[_Command] = []  # read, not finished: the head may be in flight
        self._skip: set[str] = set()  # names read but not deletable
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent_any = False
        self._warned = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "ControlWatcher":
        try:
            (self.folder / ACKS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("run control is off (sidestep stop/pause/resume/save): cannot make "
                        "%s: %s", self.folder, exc)
            return self
        # Whatever is there was sent to an earlier run in this folder, not to this one.
        for name in self._listing():
            self._sent_any = True
            self._ack(_Command(name, "?"), "ignored", "sent before this run started")
            self._delete(name)
        self._thread = threading.Thread(target=self._loop, name="sidestep-control",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop polling; what is still held or in flight gets its final answer."""
        self._quit.set()
        if self._thread is not None:
            self._thread.join(10.0)
        if not self._sent_any:  # nothing was ever sent: leave no clutter in the run folder
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- sink: what the run reports ------------------------------------------------------------
    def handle(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunPaused):
                self._paused_at = event.time
                self._pauses.append(event.time)
                del self._pauses[:-8]
            elif isinstance(event, RunResumed):
                self._paused_at = None
                self._resumes.append(event.time)
                del self._resumes[:-8]
            elif isinstance(event, CheckpointSaved):
                self._step = event.step
                if event.kind == "step" or event.again:  # "save now" where one was just made
                    self._saves.append((event.time, event.line() if event.again
                                        else f"saved {event.path}", event.path))
                    del self._saves[:-8]
            elif isinstance(event, RunFinished):
                self._finished = event
            elif getattr(event, "type", "") == "step":
                self._step = event.step

    # -- the polling thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._quit.wait(self.poll):
            self._tick()
        self._tick(final=True)

    def _tick(self, final: bool = False) -> None:
        try:
            for name in self._listing():
                if name not in self._skip:
                    self._queue.append(self._take(name))
            self._advance(final)
        except Exception as exc:  # never into the run; say so once
            if not self._warned:
                self._warned = True
                log.warning("run control: %s", exc)

    def _listing(self) -> list[str]:
        try:
            with os.scandir(self.folder) as entries:
                return sorted(e.name for e in entries if e.name.endswith(".json")
                              and not e.name.startswith(".") and e.is_file())
        except FileNotFoundError:  # removed by hand: made again (not the run folder itself)
            try:
                self.folder.mkdir()
                (self.folder / ACKS_DIR).mkdir()
            except OSError:
                pass
            return []
        except OSError:  # replaced by a file, unreadable: nothing to take now
            return []

    def _take(self, name: str) -> _Command:
        self._sent_any = True
        try:
            data = json.loads((self.folder / name).read_text(encoding="utf-8"))
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        self._delete(name)
        sent = data.get("sent_at")
        cmd = _Command(name, str(data.get("command", "?")), data.get("pid"),
                       sent if isinstance(sent, (int, float)) else time.time(),
                       program=str(data.get("sender") or ""))
        command = cmd.command
        if command not in COMMANDS:
            self._ack(cmd, "ignored", f"unknown command {command!r}")
        return cmd

    def _delete(self, name: str) -> None:
        try:
            (self.folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            self._skip.add(name)

    def _advance(self, final: bool) -> None:
        """Settle the command in flight, then apply the next; a stop goes at once."""
        queue = self._queue
        queue[:] = [c for c in queue if c.ack.get("state") not in FINAL_STATES]
        while queue:
            head = queue[0]
            if head.applied_at is None:
                self._apply(head)
            if not self._settle(head, final):
                break
            queue.pop(0)
        for cmd in queue[1:]:
            if cmd.command == "stop" and cmd.applied_at is None:
                self._apply(cmd)  # never held: it ends the run, whatever is ahead of it
            if not self._settle(cmd, final) and cmd.applied_at is None and \
                    cmd.ack.get("state") != "queued":
                self._ack(cmd, "queued", "waits for the previous command to take effect")
        queue[:] = [c for c in queue if c.ack.get("state") not in FINAL_STATES]

    def _apply(self, cmd: _Command) -> None:
        control = self.control
        cmd.applied_at = time.time()
        pid = f", pid {cmd.sender}" if cmd.sender else ""
        who = (f"the app ({cmd.program}{pid})" if cmd.program == "sidestep-tui" else
               f"`sidestep {cmd.command}`" + (f" (pid {cmd.sender})" if cmd.sender else ""))
        with self._lock:
            paused_seen = self._paused_at is not None
            finished = self._finished
        if finished is not None:
            return  # _settle answers it
        if cmd.command == "stop":
            log.info("%s: stop and save", who)
            control.request_stop(f"{who} asked to stop")
        elif cmd.command == "pause":
            if paused_seen:
                self._ack(cmd, "unchanged", f"already paused at step {self._step}; nothing "
                          "to pause")
                return
            log.info("%s: pause", who)
            control.pause()
        elif cmd.command == "resume":
            if not paused_seen:
                was = control.paused
                control.resume()  # a pause not begun yet is called off
                if was:
                    self._ack(cmd, "done", "the pause was called off before it began")
                else:
                    self._ack(cmd, "unchanged", "the run was not paused; nothing to resume")
                return
            log.info("%s: resume", who)
            control.resume()
        elif cmd.command == "save":
            log.info("%s: save a checkpoint now", who)
            control.save_now()
        self._ack(cmd, "received", "applied; waiting for the run to act on it")

    def _settle(self, cmd: _Command, final: bool) -> bool:
        """Give ``cmd`` its final answer if it has one now; True when it has."""
        if cmd.ack.get("state") in FINAL_STATES:
            return True
        with self._lock:
            finished = self._finished
            after = cmd.applied_at
            # any step checkpoint made after it was sent will do (a stop's included)
            saved = [(said, p) for t, said, p in self._saves if t >= cmd.sent_at]
            paused = any(t >= after for t in self._pauses) if after is not None else False
            resumed = any(t >= after for t in self._resumes) if after is not None else False
            step = self._step
        if cmd.command == "save" and saved:
            # "already holds step N: nothing new to save" when no new one was written
            said, path = saved[0]
            return self._ack(cmd, "done", said, checkpoint=path)
        if cmd.applied_at is not None:
            if cmd.command == "pause" and paused:
                return self._ack(cmd, "done", f"paused at step {step}")
            if cmd.command == "resume" and resumed:
                return self._ack(cmd, "done", f"resumed at step {step}")
        if finished is not None:
            return self._ended(cmd, finished)
        if final:  # the run is closing without a RunFinished (should not happen)
            return self._ack(cmd, "ended", "the run ended before it took this command")
        return False

    def _ended(self, cmd: _Command, result: RunFinished) -> bool:
        where = f"step {result.step}"
        if cmd.command == "stop" and cmd.applied_at is not None:
            if result.status == "stopped":
                message = (f"stopped at {where}; saved {result.checkpoint_path}"
                           if result.checkpoint_path else
                           "stopped before the first step; nothing was trained or kept")
            else:
                message = f"the run ended first ({result.status} at {where})"
            return self._ack(cmd, "done", message, status=result.status,
                             checkpoint=result.checkpoint_path)
        message = f"the run ended ({result.status} at {where}) before this took effect"
        return self._ack(cmd, "ended", message, status=result.status,
                         checkpoint=result.checkpoint_path)

    def _ack(self, cmd: _Command, state: str, message: str, **extra: Any) -> bool:
        cmd.ack = {"name": cmd.name, "command": cmd.command, "state": state,
                   "message": message, "step": self._step, "at": time.time(), **extra}
        try:
            write_json(self.folder / ACKS_DIR / cmd.name, cmd.ack)
        except OSError as exc:
            log.debug("run control: cannot write the answer to %s: %s", cmd.name, exc)
        return state in FINAL_STATES
