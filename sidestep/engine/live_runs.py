"""Runs in other processes: where detached runs went, how to start one, what each run under the
output roots is doing now, and a reader that follows a run's ``events.jsonl`` as it grows.

Shared by the command line (``sidestep runs``, ``attach``, ``--detach``) and the app (the
dashboard's live runs, a monitor attached to a run it did not start). Liveness comes from the
run's pid, host and heartbeat (``run_dir.run_is_alive``), never from a recorded status alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sidestep.engine.run_dir import CONSOLE_LOG

REGISTRY = "detached-runs.jsonl"
REGISTRY_KEEP = 50
KNOWN = "run-folders.txt"  # every run folder a training started in, for History and `runs`
KNOWN_KEEP = 200


def child_argv(raw_argv: list[str]) -> list[str]:
    """The same command without ``--detach`` (and a final ``--no-detach``, so a detach flag
    from anywhere else cannot start yet another process), never asking for confirmation."""
    rest = [a for a in raw_argv if a != "--detach"]
    # the top-level switches given before the command are the ones added here
    while rest and rest[0] in ("--plain", "-y", "--yes"):
        rest.pop(0)
    return [sys.executable, "-m", "sidestep", "--plain", "-y", *rest, "--no-detach"]


def spawn(argv: list[str], run_dir: Path) -> int:
    """Start ``argv`` in a session of its own (no controlling terminal: a closing terminal
    sends it no SIGHUP), stdin from /dev/null, output appended to ``run_dir/console.log``;
    note it in the registry. Returns the pid; raises OSError (the caller removes what it made)."""
    import shlex

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / CONSOLE_LOG, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} started in the background: "
                  f"{shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, close_fds=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, **_own_session())
    # The starter (the app; the CLI exits at once) is its parent: reap it when it ends, or a
    # killed run lingers as a zombie until the app quits.
    import threading

    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    record(run_dir, proc.pid)
    return proc.pid


def _own_session() -> dict[str, Any]:
    if os.name == "nt":  # pragma: no cover - no sessions there: a detached process group
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
        return {"creationflags": flags}
    return {"start_new_session": True}


# -- where detached runs went, for `sidestep runs` ----------------------------------------------
def _registry() -> Path:
    from sidestep.config.paths import cache_dir

    return cache_dir() / REGISTRY


def record(run_dir: Path, pid: int) -> None:
    """Note a detached start (the newest ``REGISTRY_KEEP``); a failure here costs nothing."""
    from sidestep.engine.run_dir import process_identity

    entry = {"run_dir": str(run_dir), **process_identity(pid), "started_at": time.time()}
    try:
        lines = _registry().read_text(encoding="utf-8").splitlines()[-(REGISTRY_KEEP - 1):]
    except OSError:
        lines = []
    try:
        from sidestep.config.atomic import write_text

        write_text(_registry(), "\n".join([*lines, json.dumps(entry)]) + "\n")
    except OSError:
        pass


def recorded() -> list[dict[str, Any]]:
    """The detached starts noted here, newest last (unreadable lines skipped)."""
    out = []
    try:
        lines = _registry().read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("run_dir"), str):
            out.append(entry)
    return out


# -- what each run is doing ------------------------------------------------------------------
def progress(run_dir: Path) -> dict[str, Any]:
    """The newest run_started, step and pause (its time, while paused) in ``events.jsonl``
    (read incrementally: ``events_digest``)."""
    from sidestep.engine.events_digest import digest, json_object
    from sidestep.engine.run_dir import EVENTS_FILE

    seen = digest(Path(run_dir) / EVENTS_FILE)
    s, st, p = (json_object(line) for line in (seen.started_line, seen.step_line,
                                                 seen.pause_line))
    return {"total_steps": s.get("total_steps"), "total_epochs": s.get("total_epochs"),
            "step": st.get("step"), "epoch": st.get("epoch"), "last_loss": st.get("loss"),
            "paused_at": p.get("time") if p.get("type") == "paused" else None}


def run_rows(roots: list[Path]) -> list[dict[str, Any]]:
    """One dict per run under ``roots``, plus detached starts that have not written run.json
    yet (``starting``)."""
    from sidestep.engine.run_dir import (CONSOLE_LOG, RUN_FILE, find_runs, read_run,
                                         run_is_alive)

    rows = []
    for s in find_runs(roots):
        info = read_run(s.path) or {}
        live = s.status == "running"
        prog = progress(s.path)
        # a pause counts if this process made it (not a run before it in the folder)
        paused = isinstance(prog["paused_at"], (int, float)) and \
            prog["paused_at"] >= (info.get("started_at") or 0)
        status = "paused" if live and paused else s.status
        rows.append({
            "path": str(s.path), "status": status, "live": live,
            "pid": info.get("pid") if live else None, "host": info.get("host"),
            "epoch": prog["epoch"] if prog["epoch"] is not None else s.epochs_done,
            # complete epochs (epoch_end events): "epochs" everywhere a user reads it; "epoch"
            # above is the one the last step was in (in progress while live)
            "epochs_done": s.epochs_done,
            "total_epochs": prog["total_epochs"] or s.epochs_total,
            "step": prog["step"] if prog["step"] is not None else s.last_step,
            "total_steps": prog["total_steps"], "last_loss": prog["last_loss"],
            "best_loss": s.best_loss, "started_at": s.started_at,
            "finished_at": s.finished_at, "mode": s.mode, "adapter_type": s.adapter_type,
            "model": s.model, "adapter_path": s.adapter_path,
            "latest_checkpoint": str(s.latest_checkpoint) if s.latest_checkpoint else None})
    seen = {Path(r["path"]).resolve() for r in rows}
    for entry in recorded():
        folder = Path(entry["run_dir"])
        if (folder / RUN_FILE).is_file() or not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        if run_is_alive(entry):
            status = "starting"  # still loading: run.json comes when the folder is claimed
        elif (folder / CONSOLE_LOG).is_file():
            status = "failed"  # a start that failed took its files back; the log says why
        else:
            continue
        rows.append({"path": str(folder), "status": status, "live": status == "starting",
                     "pid": entry.get("pid") if status == "starting" else None,
                     "host": entry.get("host"), "epoch": None, "epochs_done": None,
                     "total_epochs": None,
                     "step": None, "total_steps": None, "last_loss": None,
                     "best_loss": None, "started_at": entry.get("started_at"),
                     "finished_at": None, "mode": None, "adapter_type": None,
                     "model": None, "adapter_path": None, "latest_checkpoint": None,
                     "console_log": str(folder / CONSOLE_LOG)})
    rows.sort(key=lambda r: (not r["live"], -(r["started_at"] or 0.0)))
    return rows


class EventTail:
    """New complete lines of a growing ``events.jsonl``, as events (a torn last line waits for
    the rest; a file cut back, as a failed start's rollback does, is read again)."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = 0
        self.partial = b""

    def read(self) -> list:
        from sidestep.engine.events import parse_line

        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                if size < self.pos:
                    self.pos, self.partial = 0, b""
                fh.seek(self.pos)
                data = fh.read()
                self.pos = fh.tell()
        except OSError:
            return []
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [e for e in map(parse_line, lines) if e is not None]


# -- every run's folder, wherever it is ----------------------------------------------------------
def remember_run(run_dir: Path) -> None:
    """Note the folder of a run that starts (the newest ``KNOWN_KEEP``): History and `sidestep
    runs` look under the output root, and a run given another --output-dir vanished from them
    once the app that started it had quit. A failure here costs nothing."""
    from sidestep.config.atomic import write_text
    from sidestep.config.paths import cache_dir

    folder = os.path.abspath(run_dir)
    try:
        known = [f for f in remembered_runs() if str(f) != folder][-(KNOWN_KEEP - 1):]
        write_text(cache_dir() / KNOWN, "".join(f"{f}\n" for f in [*known, folder]))
    except OSError:
        pass


def remembered_runs() -> list[Path]:
    """The run folders ``remember_run`` noted, oldest first (some may be gone since)."""
    from sidestep.config.paths import cache_dir

    try:
        lines = (cache_dir() / KNOWN).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [Path(line) for line in lines if line.strip()]
