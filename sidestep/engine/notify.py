"""``--notify-command``: a shell command run when a run ends (completed, stopped or failed).

A fatal problem always ends the run, so it is reported there: ``SIDESTEP_STATUS=failed`` and
the problem in ``SIDESTEP_ERROR``. The command runs once, after ``run.json`` holds the final
status (at the event bus's close), with a time limit; it never raises into the run, and a
failure is a warning in the run's log.

Its environment: SIDESTEP_STATUS, SIDESTEP_RUN_DIR, SIDESTEP_STEP, SIDESTEP_EPOCH (epochs
finished), SIDESTEP_ERROR (empty unless failed), SIDESTEP_ADAPTER and SIDESTEP_CHECKPOINT
(empty when there is none).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

from sidestep.engine.events import Event, Problem, RunFinished

log = logging.getLogger("sidestep.engine")

TIMEOUT_SECONDS = 30.0


class NotifySink:
    def __init__(self, command: str, run_dir: Path | str, timeout: float = TIMEOUT_SECONDS):
        self.command = command
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self._problem = ""
        self._result: RunFinished | None = None

    def handle(self, event: Event) -> None:
        if isinstance(event, Problem) and event.fatal and not self._problem:
            self._problem = event.message + (f" (try: {event.remedy})" if event.remedy else "")
        elif isinstance(event, RunFinished):
            self._result = event

    def close(self) -> None:
        result, self._result = self._result, None
        if result is None:
            return
        try:
            self._run(result)
        except Exception as exc:  # a notification never fails a run
            log.warning("--notify-command could not run: %s", exc)

    def environment(self, result: RunFinished) -> dict[str, str]:
        error = (self._problem or result.error or "") if result.status == "failed" else ""
        return {**os.environ,
                "SIDESTEP_STATUS": result.status,
                "SIDESTEP_RUN_DIR": str(self.run_dir.resolve()),
                "SIDESTEP_STEP": str(result.step),
                "SIDESTEP_EPOCH": str(result.epoch),
                "SIDESTEP_ERROR": error,
                "SIDESTEP_ADAPTER": result.adapter_path or "",
                "SIDESTEP_CHECKPOINT": result.checkpoint_path or ""}

    def _run(self, result: RunFinished) -> None:
        own_group = hasattr(os, "killpg")  # so a timeout ends the command's children too
        proc = subprocess.Popen(self.command, shell=True, env=self.environment(result),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=own_group)
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            if own_group:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            proc.kill()
            proc.communicate()
            log.warning("--notify-command was stopped after %.0f s: %s", self.timeout,
                        self.command)
            return
        text = output.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            log.warning("--notify-command exited with %d: %s%s", proc.returncode, self.command,
                        f"\n{text[-2000:]}" if text else "")
        elif text:
            log.info("--notify-command: %s", text[-2000:])


def notify_sinks(config) -> list[NotifySink]:
    """The notify sink for ``config``, if it asks for one (for the trainer's event bus)."""
    command = (getattr(config, "notify_command", None) or "").strip()
    return [NotifySink(command, config.output_dir)] if command else []
