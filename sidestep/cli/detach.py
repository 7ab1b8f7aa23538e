"""``--detach``: the run as a process of its own, apart from the terminal that started it.

The start is checked first exactly as any start is (the caller has run the preflight and the
confirmation). The child is the same command line without ``--detach``, in a new session (no
controlling terminal, so a closing terminal sends it no SIGHUP), stdin from /dev/null and its
output in ``console.log`` in the run folder (no terminal or pipe to lose). It is the same
engine, so events.jsonl, checkpoints and exact resume are as for any run. Each start is also
noted in the cache folder, so ``sidestep runs`` finds it wherever ``--output-dir`` pointed.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sidestep.cli.output import Out
from sidestep.engine.live_runs import child_argv, spawn
from sidestep.engine.run_dir import CONSOLE_LOG, EVENTS_FILE

__all__ = ["child_argv", "start_detached"]


# How long the starter waits to see the run begin training (model loaded, resume read): a
# start that fails later than any check here can see (weights that do not load) is then an
# error here, not a "started" that ends a second later in console.log.
START_WAIT_SECONDS = 120.0


def start_detached(config, args, out: Out) -> int:
    run_dir = Path(config.output_dir).expanduser().absolute()
    argv = child_argv(list(getattr(args, "raw_argv", None) or sys.argv[1:]))
    made = not run_dir.exists()
    log = run_dir / CONSOLE_LOG
    log_size = log.stat().st_size if log.is_file() else None
    # a resume into its own folder: what the earlier run wrote there says nothing of this one
    events_size = _size(run_dir / EVENTS_FILE)
    try:
        pid = spawn(argv, run_dir)
    except OSError as exc:
        if made:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(exc, PermissionError) or not run_dir.parent.exists():
            out.error(f"{run_dir}: cannot write the run's console log there "
                      f"({exc.strerror or exc}); choose another --output-dir")
            return EXIT_BAD_INPUT
        out.error(f"could not start the run in the background: {exc}")
        return EXIT_FAILED
    from sidestep.engine.run_dir import program

    out.info(f"starting in the background: {run_dir} (pid {pid}); waiting for it to load the "
             "model ...")
    failure = _await_start(run_dir, pid, events_size, log_size or 0)
    if failure is not None:
        _take_back(run_dir, made, log, log_size)
        out.error(failure)
        return EXIT_BAD_INPUT
    where, sidestep = shlex.quote(str(run_dir)), program()
    out.info(f"started in the background: {run_dir} (pid {pid})")
    out.info(f"  its output:  {run_dir / CONSOLE_LOG}")
    out.info(f"  watch it:    {sidestep} attach {where}   (ctrl+c leaves it running)")
    out.info(f"  control it:  {sidestep} pause|resume|save|stop {where}")
    out.info(f"  list runs:   {sidestep} runs")
    return EXIT_OK


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _since(path: Path, offset: int) -> str:
    """What ``path`` holds past ``offset`` (all of it if it was rewritten shorter)."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) >= offset:
                fh.seek(offset)
            else:
                fh.seek(0)
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _await_start(run_dir: Path, pid: int, events_from: int = 0, log_from: int = 0) -> str | None:
    """None once the run has begun training (a run_started event past ``events_from``) or is
    still loading after START_WAIT_SECONDS; else why it ended (the error lines its console
    log gained past ``log_from``)."""
    import time

    from sidestep.engine.run_dir import has_exited

    deadline = time.monotonic() + START_WAIT_SECONDS
    while True:
        gone = has_exited(pid)
        if '"type": "run_started"' in _since(run_dir / EVENTS_FILE, events_from):
            return None
        if gone:
            break
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
    lines = _since(run_dir / CONSOLE_LOG, log_from).splitlines()
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return "; ".join(errors[-2:]) or (f"the run ended before it began training; see "
                                      f"{run_dir / CONSOLE_LOG}")


def _take_back(run_dir: Path, made: bool, log: Path, log_size: int | None) -> None:
    """A start that failed leaves nothing, as one in the foreground does: the folder if this
    start made it, else its console log as it was."""
    import shutil

    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif log_size is None:
        log.unlink(missing_ok=True)
    else:
        with open(log, "r+b") as f:
            f.truncate(log_size)
