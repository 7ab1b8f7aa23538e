"""``sidestep estimate``: rank the decoder's attention projections by gradient sensitivity on
the user's dataset and write the module config that ``selective`` trains."""

from __future__ import annotations

from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_STOPPED
from sidestep.cli.output import Out
from sidestep.config.plural import counted


def default_output(config) -> Path:
    """``./estimate-<variant>-<granularity>.json``, never an existing file."""
    from sidestep.engine.estimate import default_output as default_path

    return default_path(config.model_variant, config.granularity)


def run_estimate(config, out: Out) -> int:
    from sidestep.cli.signals import CancelBetweenUnits
    from sidestep.data.paths import output_file_problem
    from sidestep.engine.describe import fmt_duration
    from sidestep.engine.estimate import estimate, write_result
    from sidestep.engine.trainer import input_error_types

    output = Path(config.output) if config.output else default_output(config)
    problem = output_file_problem(output, "--output", "estimate.json", replace=config.force)
    if problem:  # before the slow part, and before anything is written
        out.error(problem)
        return EXIT_BAD_INPUT
    try:
        with CancelBetweenUnits("{name}: stopping after this batch (nothing is written)"
                                "{again}") as stop:
            def show(e) -> None:
                stop.show_notices(out)
                if e.phase == "batch":
                    out.info(f"[batch {e.done}/{e.total}] {fmt_duration(e.eta_s)} left")
                else:
                    out.info(f"[{e.phase}] {e.message}")

            result = estimate(config, progress=show, cancel=stop.cancel.is_set)
    except input_error_types() as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    if result.cancelled:
        message = (f"cancelled after {counted(result.batches, 'batch', 'batches')}; nothing was "
                   "written")
        out.info(message)
        if stop.output_lost:  # stdout is gone (`| head`): say it where it can be read
            out.warn(message.replace("cancelled", "output closed, so stopped") + "; run it "
                     "again with the output to a file or the terminal")
        return EXIT_STOPPED
    out.table(f"Top {result.top_k} of {len(result.ranking)} ({result.granularity}s, "
              f"{counted(result.batches, 'batch', 'batches')})", ("rank", "module", "score"),
              [(str(i + 1), name, f"{score:.3f}") for i, (name, score)
               in enumerate(result.top())])
    try:
        write_result(result, output)
    except OSError as exc:
        out.error(f"--output {output}: cannot write it ({exc.strerror or exc})")
        return EXIT_BAD_INPUT
    out.info(f"wrote {output}; train on it with `sidestep selective --module-config "
             f"{output} ...`")
    return EXIT_OK
