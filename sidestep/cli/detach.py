"""``--detach``: the run as a process of its own, apart from the terminal that started it.

The start is checked first exactly as any start is (the caller has run the preflight and the
confirmation). The child is the same command line without ``--detach``, in a new session (no
controlling terminal, so a closing terminal sends it no SIGHUP), stdin from /dev/null and its
output in ``console.log`` in the run folder (no terminal or pipe to lose). It is the same
engine, so events.jsonl, checkpoints and exact resume are as for any run. Each start is also
noted in the cache folder, so ``sidestep runs`` finds it wherever ``--output-dir`` pointed.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sidestep.cli.output import Out
from sidestep.engine.live_runs import child_argv, spawn
from sidestep.engine.run_dir import CONSOLE_LOG

__all__ = ["child_argv", "start_detached"]


def start_detached(config, args, out: Out) -> int:
    run_dir = Path(config.output_dir).expanduser().absolute()
    argv = child_argv(list(getattr(args, "raw_argv", None) or sys.argv[1:]))
    made = not run_dir.exists()
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

    where, sidestep = shlex.quote(str(run_dir)), program()
    out.info(f"started in the background: {run_dir} (pid {pid})")
    out.info(f"  its output:  {run_dir / CONSOLE_LOG}")
    out.info(f"  watch it:    {sidestep} attach {where}   (ctrl+c leaves it running)")
    out.info(f"  control it:  {sidestep} pause|resume|save|stop {where}")
    out.info(f"  list runs:   {sidestep} runs")
    return EXIT_OK
