"""Runs that outlive the terminal: ``runs`` (what is live and recent), ``stop``, ``pause``,
``resume`` and ``save`` (through the run folder's control channel) and ``attach``.

Liveness comes from the pid, host and heartbeat that run.json records, never from its status
field alone: a run whose process is gone shows ``interrupted``.

Exit codes of the control commands: 0 the run acted on the command, 1 it did not (it ended
first, or not within ``--wait``), 2 bad input (not a run folder, a run that is not live, a
control folder that cannot be written).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sidestep.cli.output import Out
from sidestep.config.plural import counted
from sidestep.engine.live_runs import run_rows
from sidestep.engine.run_dir import resume_command

CONTROL_HELP = {
    "stop": "Stop a running run: it saves a checkpoint at the next micro-batch and ends.",
    "pause": "Pause a running run at the next micro-batch (it keeps its memory).",
    "resume": "Resume a paused run.",
    "save": "Make a running run save a checkpoint now, and go on training.",
}
WAIT_SECONDS = 60.0
GRACE_SECONDS = 5.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_run_parsers(sub, formatter) -> None:
    runs = sub.add_parser(
        "runs", formatter_class=formatter,
        help="List live and recent runs: status, pid, epochs done, step, last loss, the "
             "newest checkpoint.",
        description="List live and recent runs, live first: folder, status (running, paused, "
                    "starting, completed, stopped, failed, interrupted: the process is gone), "
                    "pid, epochs done and step, last loss, start time and the newest complete "
                    "checkpoint (what --resume-from takes). Without DIR it looks under "
                    "the settings' output root, the demo's runs and every folder a run "
                    "started in.")
    runs.add_argument("dirs", nargs="*", metavar="DIR",
                      help="run folders, or folders holding runs (two levels down)")
    runs.add_argument("--json", action="store_true",
                      help="print JSON: {\"runs\": [{path, status, live, pid, step, ...}]}")
    runs.add_argument("--limit", type=_count, default=10, metavar="N",
                      help="finished runs to list, newest first; live ones are always listed "
                           "(default 10; 0: all)")

    attach = sub.add_parser(
        "attach", formatter_class=formatter,
        help="Watch a running run live; ctrl+c leaves it running.",
        description="Follow a running run's progress (its events.jsonl as it is written). "
                    "ctrl+c detaches and the run keeps training; the view ends by itself "
                    "when the run does, with the run's exit code (0 completed, 130 stopped, "
                    "1 failed or gone).")
    attach.add_argument("dir", metavar="DIR", help="the run folder")

    for name, text in CONTROL_HELP.items():
        p = sub.add_parser(name, help=text, formatter_class=formatter,
                           description=text + " The command goes through the run folder's "
                           "control/ folder; this waits for the run to act on it and says "
                           "what happened. Exit 0 when it did, 1 when it did not (yet, or "
                           "it had nothing to do: a pause while paused), 2 "
                           "when DIR is not a live run or its control folder is not writable.")
        p.add_argument("dir", metavar="DIR", help="the run folder")
        p.add_argument("--wait", type=_seconds, default=WAIT_SECONDS, metavar="SECONDS",
                       help=f"how long to wait for the run to act on it (default "
                            f"{WAIT_SECONDS:g}; 0: send and return, exit 1 unless the run "
                            f"had already acted)")


def run_runs_command(args: argparse.Namespace, out: Out) -> int:
    if args.command == "runs":
        return list_runs(args, out)
    if args.command == "attach":
        from sidestep.cli.attach_cmd import run_attach

        return run_attach(args, out)
    return send_command(args, out)


# -- runs ---------------------------------------------------------------------------------------
def default_roots() -> list[Path]:
    from sidestep.config.paths import cache_dir
    from sidestep.config.settings import SettingsStore
    from sidestep.engine.live_runs import recorded, remembered_runs

    settings, _ = SettingsStore().load()
    roots = [Path(settings.output_root).expanduser(), cache_dir() / "demo" / "runs"]
    return roots + [Path(e["run_dir"]) for e in reversed(recorded())] \
        + list(reversed(remembered_runs()))


def list_runs(args: argparse.Namespace, out: Out) -> int:
    if args.dirs:
        roots = [Path(d).expanduser() for d in args.dirs]
        for root in roots:
            if not root.is_dir():
                out.error(f"{_not_a_folder(root)}; give run folders or folders holding runs")
                return EXIT_BAD_INPUT
    else:
        roots = default_roots()
    rows = run_rows(roots)
    live = [r for r in rows if r["live"]]
    done = [r for r in rows if not r["live"]]
    hidden = len(done) - args.limit if args.limit and len(done) > args.limit else 0
    rows = live + (done[:args.limit] if args.limit else done)
    if args.json:
        out.json({"runs": rows})
        return EXIT_OK
    if not rows:
        from sidestep.config.paths import short

        out.info("no runs found under " + ", ".join(short(r) for r in roots[:4]))
        return EXIT_OK
    out.table("", ("folder", "status", "pid", "epochs", "step", "last loss", "started",
                   "checkpoint"), [_cells(r) for r in rows])
    if hidden:
        out.info(f"{counted(hidden, 'older run')} not shown: --limit 0 lists every run")
    unfinished = [r for r in rows if not r["live"] and r["latest_checkpoint"]
                  and r["status"] in ("stopped", "interrupted", "failed")]
    if unfinished:  # the newest: the command it goes on with, ready to paste
        from sidestep.config.paths import short
        from sidestep.engine.run_dir import resume_command

        r = unfinished[0]
        out.info(f"{short(r['path'])} is {r['status']}; go on with: "
                 f"{resume_command(r['latest_checkpoint'])}")
    return EXIT_OK


def _not_a_folder(path: Path) -> str:
    return f"{path}: {'is a file' if path.exists() else 'no such folder'}"


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    from sidestep.config.paths import short

    def of(a, b):
        return "-" if a is None else f"{a}/{b}" if b else str(a)

    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"])) \
        if r["started_at"] else "-"
    loss = f"{r['last_loss']:.4f}" if isinstance(r["last_loss"], (int, float)) else "-"
    return (short(r["path"]), r["status"], str(r["pid"] or "-"),
            of(r["epochs_done"], r["total_epochs"]), of(r["step"], r["total_steps"]), loss,
            started, Path(r["latest_checkpoint"]).name if r["latest_checkpoint"] else "-")


# -- stop, pause, resume, save ------------------------------------------------------------------
def not_live(run_dir: Path, doing: str) -> str | None:
    """Why ``run_dir`` is not a live run to ``doing`` (None when it is one)."""
    from sidestep.engine.live_runs import recorded
    from sidestep.engine.run_dir import (CONSOLE_LOG, live_status, run_file_problem,
                                         run_is_alive)

    if not run_dir.is_dir():
        return f"{_not_a_folder(run_dir)}; give a run folder (`sidestep runs` lists them)"
    status, _ = live_status(run_dir)
    if status is None:
        here = run_dir.resolve()
        started = [e for e in recorded() if Path(e["run_dir"]).resolve() == here]
        if any(run_is_alive(e) for e in started):
            return (f"{run_dir}: the run is still starting (it has not claimed its folder "
                    f"yet); try again in a moment")
        if started and (run_dir / CONSOLE_LOG).is_file():
            return f"{run_dir}: the run did not start; {run_dir / CONSOLE_LOG} says why"
        corrupt = run_file_problem(run_dir)
        if corrupt:
            return f"{corrupt}; `sidestep runs` lists the runs it can read"
        return f"{run_dir}: not a run folder (no run.json); `sidestep runs` lists runs"
    if status == "running":
        return None
    why = " (its process is gone)" if status == "interrupted" else ""
    return f"{run_dir}: the run is not running (status: {status}{why}); nothing to {doing}"


def send_command(args: argparse.Namespace, out: Out) -> int:
    from sidestep.engine.control_channel import ChannelError, send

    run_dir = Path(args.dir).expanduser()
    command = args.command
    problem = not_live(run_dir, command)
    if problem:
        out.error(problem)
        return EXIT_BAD_INPUT
    try:
        name = send(run_dir, command)
    except ChannelError as exc:
        out.error(not_live(run_dir, command) or str(exc))  # it may have ended meanwhile
        return EXIT_BAD_INPUT
    return _await(run_dir, name, command, args.wait, out)


def _await(run_dir: Path, name: str, command: str, wait: float, out: Out) -> int:
    from sidestep.engine.control_channel import FINAL_STATES, read_ack, withdraw
    from sidestep.engine.run_dir import live_status

    deadline = time.monotonic() + wait
    next_look = time.monotonic() + 1.0
    ack = None
    gone_at = None  # when the run was seen to have ended
    while True:
        ack = read_ack(run_dir, name) or ack
        if ack and ack.get("state") in FINAL_STATES:
            break
        now = time.monotonic()
        # run.json says the run ended a moment before the run's last answers are written
        if now >= deadline or (gone_at is not None and now - gone_at > GRACE_SECONDS):
            break
        if gone_at is None and now >= next_look:  # ended, killed, crashed: stop waiting
            next_look = now + 1.0
            if live_status(run_dir)[0] != "running":
                gone_at = now
        time.sleep(0.1)
    gone = gone_at is not None
    state = (ack or {}).get("state")
    message = (ack or {}).get("message", "")
    if state == "done":
        out.info(f"{command}: {message}")
        if command == "stop" and ack.get("checkpoint"):
            out.info(f"continue with: {resume_command(ack['checkpoint'])}")
        return EXIT_OK
    if state == "unchanged":  # nothing wrong, but the run did not do it: exit 1 as documented
        out.warn(f"{command}: {message}")
        return EXIT_FAILED
    if state in ("ended", "ignored"):
        out.error(f"{command}: {message}")
        return EXIT_FAILED
    if state in ("received", "queued"):
        what = "has it queued behind an earlier command" if state == "queued" else \
            "has it but has not acted on it yet"
        out.warn(f"{command}: the run {what} ({wait:g} s); it acts at its next micro-batch. "
                 f"`sidestep runs {run_dir}` shows its state")
        return EXIT_FAILED
    if gone or live_status(run_dir)[0] != "running":
        withdraw(run_dir, name)
        out.error(f"{command}: the run ended before it read the command")
        return EXIT_FAILED
    if wait <= 0:  # not seen to act: exit 1 as documented, though nothing is wrong
        out.info(f"sent {command} to {run_dir} (--wait 0: not waiting for it); it acts at its "
                 f"next micro-batch. `sidestep runs {run_dir}` shows its state")
        return EXIT_FAILED
    out.warn(f"{command}: the run has not read the command within {wait:g} s (it may be busy "
             f"or hung); it stays queued in {run_dir / 'control'}")
    return EXIT_FAILED
