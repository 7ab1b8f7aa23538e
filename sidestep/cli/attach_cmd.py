"""``sidestep attach RUN``: the headless view of a running run, fed by its ``events.jsonl``.

The view is the one a headless ``sidestep fixed`` shows (``PlainProgress``/``RichProgress``),
started from where the run is (its newest step and epoch) and then following the file as it
grows. ctrl+c leaves: the run is another process, in another session, and never hears it.
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from sidestep.cli.output import Out
from sidestep.engine.live_runs import EventTail
from sidestep.engine.run_dir import resume_command

POLL_SECONDS = 0.2
LOOK_SECONDS = 2.0   # how often the run's process is looked at while the file is quiet
GRACE_SECONDS = 5.0  # run.json says it ended a moment before events.jsonl does


def run_attach(args, out: Out) -> int:
    from sidestep.cli.runs_cmd import not_live

    import signal
    import threading

    # ctrl+c is how one leaves: take it even where it came in ignored (a shell's background
    # job, a harness), which would otherwise leave attach following the run to its end.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = Path(args.dir).expanduser()
    problem = not_live(run_dir, "attach to")
    if problem and "still starting" in problem:
        out.info(f"{run_dir}: the run is starting; waiting for it (ctrl+c leaves)")
        try:
            problem = _wait_for_start(run_dir)
        except KeyboardInterrupt:
            out.info("detached; the run keeps starting")
            return EXIT_OK
    if problem:
        out.error(problem)
        return EXIT_BAD_INPUT
    return Attached(run_dir, out).follow()


def _wait_for_start(run_dir: Path) -> str | None:
    from sidestep.cli.runs_cmd import not_live

    while True:
        problem = not_live(run_dir, "attach to")
        if not problem or "still starting" not in problem:
            return problem
        time.sleep(0.5)


class Attached:
    def __init__(self, run_dir: Path, out: Out):
        from sidestep.cli.train_cmd import PlainProgress, RichProgress
        from sidestep.engine.run_dir import EVENTS_FILE, read_run

        self.run_dir = run_dir
        self.out = out
        self.info: dict[str, Any] = read_run(run_dir) or {}
        every = int((self.info.get("config") or {}).get("log_every") or 1)
        self.view = PlainProgress(out, every) if out.plain else RichProgress(out)
        self.tail = EventTail(run_dir / EVENTS_FILE)
        # events before this process claimed the folder belong to an earlier run in it
        self.since = float(self.info.get("started_at") or 0.0)
        self.lost = threading.Event()

    def follow(self) -> int:
        from sidestep.cli.streams import GUARD

        def lost(_reason: str) -> None:
            self.lost.set()

        GUARD.listen(lost)
        try:
            pid = self.info.get("pid")
            self.out.info(f"attached to {self.run_dir}" + (f" (pid {pid})" if pid else "")
                          + "; ctrl+c leaves it running")
            code = self._catch_up()
            if code is None:
                code = self._loop()
        except KeyboardInterrupt:
            self.view.close()
            from sidestep.engine.run_dir import program

            again = f"{program()} attach {shlex.quote(str(self.run_dir))}"
            self.out.info(f"detached; the run keeps training (`{again}` to watch again)")
            return EXIT_OK
        finally:
            GUARD.forget(lost)
        return code

    def _catch_up(self) -> int | None:
        """Show where the run is now: its start, newest epoch and step, a pause."""
        from sidestep.cli.train_cmd import PlainProgress
        from sidestep.engine.events import (EpochEnded, RunFinished, RunPaused, RunResumed,
                                            RunStarted, StepMetrics)

        mine = [e for e in self.tail.read() if e.time >= self.since]
        newest: dict[type, Any] = {}
        for e in mine:
            newest[type(e)] = e
            if isinstance(e, RunResumed):
                newest.pop(RunPaused, None)
        every = getattr(self.view, "every", None)
        if isinstance(self.view, PlainProgress):
            self.view.every = 1  # the newest step is shown, whatever --log-every
        # in the order they happened: an epoch's line follows the step that ended it
        for e in sorted((newest[k] for k in (RunStarted, EpochEnded, StepMetrics) if k in newest),
                        key=mine.index):
            self.view.handle(e)
        if isinstance(self.view, PlainProgress):
            self.view.every = every
        if RunFinished in newest:
            return self._finish(newest[RunFinished])
        if RunPaused in newest:
            self._say_paused(newest[RunPaused].step)
        return None

    def _loop(self) -> int:
        from sidestep.engine.events import RunFinished, RunPaused, RunResumed
        from sidestep.engine.run_dir import live_status

        next_look = time.monotonic() + LOOK_SECONDS
        gone_at = None
        while not self.lost.is_set():
            for e in self.tail.read():
                if e.time < self.since:
                    continue
                if isinstance(e, RunFinished):
                    return self._finish(e)
                self.view.handle(e)
                if isinstance(e, RunPaused):
                    self._say_paused(e.step)
                elif isinstance(e, RunResumed):
                    self.out.info(f"resumed at step {e.step}")
            now = time.monotonic()
            if gone_at is None and now >= next_look:
                next_look = now + LOOK_SECONDS
                if live_status(self.run_dir)[0] != "running":
                    gone_at = now
            if gone_at is not None and now - gone_at > GRACE_SECONDS:
                return self._gone()
            time.sleep(POLL_SECONDS)
        return EXIT_OK  # our own output went away: leave quietly

    def _say_paused(self, step: int) -> None:
        self.out.info(f"paused at step {step}; `sidestep resume {self.run_dir}` continues it")

    def _finish(self, result) -> int:
        self.view.handle(result)
        self.view.close()
        say = self.out.info
        if result.status == "completed":
            say(f"the run completed: adapter in {result.adapter_path}")
            return EXIT_OK
        if result.status == "stopped":
            say(f"the run stopped at step {result.step}"
                + (f"; resume with: {resume_command(result.checkpoint_path)}"
                   if result.checkpoint_path else ""))
            return EXIT_STOPPED
        self.out.error(f"the run failed: {result.error or 'see its sidestep.log'}")
        return EXIT_BAD_INPUT if result.error_kind == "input" else EXIT_FAILED

    def _gone(self) -> int:
        from sidestep.engine.run_dir import live_status

        self.view.close()
        status, info = live_status(self.run_dir)
        checkpoint = (info or {}).get("checkpoint_path")
        if status is None:  # a start that failed before its first step takes its files back
            self.out.error("the run ended before its first step and took its files back")
        elif status == "interrupted":
            from sidestep.engine.checkpointing import list_checkpoints

            saved = list_checkpoints(self.run_dir)
            self.out.error("the run's process is gone (interrupted)"
                           + (f"; resume with: {resume_command(saved[-1])}" if saved else ""))
        else:
            self.out.info(f"the run ended: {status}"
                          + (f"; last checkpoint {checkpoint}" if checkpoint else ""))
        return EXIT_OK if status == "completed" else \
            EXIT_STOPPED if status == "stopped" else EXIT_FAILED
