"""``sidestep fixed`` / ``vanilla``: summary, confirmation, live progress, signals, exit codes.

Exit codes: 0 completed, 130 stopped (a checkpoint was saved), 1 failed, 2 bad input.
SIGINT, SIGTERM and SIGHUP ask the engine to stop and save; a second signal exits at once
without touching the last complete checkpoint. So does losing the terminal or the pipe that
stdout goes to: the run stops and saves, and its log file keeps what could not be shown.
"""

from __future__ import annotations

import os
import sys
import time

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from sidestep.cli.output import Out
from sidestep.cli.signals import SignalStop
from sidestep.engine.describe import fmt_duration, summary_rows
from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, RunStarted, SampleWritten, StepMetrics)
from sidestep.engine.run_dir import resume_command


def _shown(e: LogLine, said: set[str]) -> bool:
    """Warnings and library errors. The engine's own errors arrive as ``Problem`` events,
    which are shown instead (the log line is for the log file). ``said``: the warnings shown
    with the summary, not repeated when the trainer logs them again."""
    if e.message in said:
        return False
    return e.level == "warning" or (e.level == "error" and e.source != "sidestep.engine")


class _BestOnce:
    """best/adapter is rewritten on every epoch that improves: its path is said once (and
    again only if it moves), the epoch lines' "new best" mark the later saves."""

    def __init__(self):
        self.shown: str | None = None

    def first(self, e: CheckpointSaved) -> bool:
        if e.kind != "best":
            return True
        first, self.shown = e.path != self.shown, e.path
        return first

    @staticmethod
    def note(e: CheckpointSaved) -> str:
        return (" (rewritten at each epoch marked 'new best')" if e.kind == "best"
                else "")


class PlainProgress:
    """Line output for logs and pipes."""

    def __init__(self, out: Out, every: int):
        self.out = out
        self.said: set[str] = set()
        self.every = max(1, every)
        self.total = 0
        self.epochs = 0
        self.fatal_shown = False
        self.best = _BestOnce()
        self.best_line: str | None = None

    def handle(self, e: Event) -> None:
        say = self.out.info
        if isinstance(e, RunStarted):
            self.total, self.epochs = e.total_steps, e.total_epochs
            say(f"training {e.adapter_type} on {e.model}: {e.dataset_size} songs, "
                f"{e.total_steps} steps, {e.trainable_params:,} trainable parameters, "
                f"{e.device} {e.precision}" + (f", resumed from {e.resumed_from}"
                                               if e.resumed_from else ""))
        elif isinstance(e, StepMetrics):
            if e.step % self.every == 0 or e.step == 1 or e.step == self.total:
                say(f"step {e.step}/{self.total} epoch {e.epoch}/{self.epochs} loss "
                    f"{e.loss:.4f} lr {e.lr:.2e} "
                    f"{(e.samples_per_sec or 0):.2f} samples/s ETA {fmt_duration(e.eta_seconds)}")
        elif isinstance(e, EpochEnded):
            say(f"epoch {e.epoch}/{self.epochs} done: mean loss {e.mean_loss:.4f}"
                + (f", validation loss {e.val_loss:.4f}" if e.val_loss is not None else "")
                + e.best_note() + f" ({e.seconds:.1f} s)")
            if self.best_line:
                say(self.best_line)
                self.best_line = None
        elif isinstance(e, CheckpointSaved):
            if self.best.first(e):
                line = e.line() + self.best.note(e)
                if e.kind == "best":  # saved before its epoch's event: said after its line
                    self.best_line = line
                else:
                    say(line)
        elif isinstance(e, SampleWritten):
            say(f"sample for epoch {e.epoch}: {e.path} ({e.seconds:.1f} s to render)")
        elif isinstance(e, Problem):
            text = e.message + (f" (try: {e.remedy})" if e.remedy else "")
            (self.out.error if e.fatal else self.out.warn)(text)
            self.fatal_shown = self.fatal_shown or e.fatal
        elif isinstance(e, LogLine) and _shown(e, self.said):
            self.out.warn(e.message)

    def close(self) -> None:
        pass


class RichProgress:
    """Live bars for a terminal: epochs, steps, loss, learning rate, ETA."""

    def __init__(self, out: Out):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.console = out.console
        self.said: set[str] = set()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console,
            refresh_per_second=4, transient=False)
        self.epoch_task = None
        self.step_task = None
        self.fatal_shown = False
        self.best = _BestOnce()

    def handle(self, e: Event) -> None:
        from rich.markup import escape

        p = self.progress
        if isinstance(e, RunStarted):
            p.start()
            p.console.print(f"training [bold]{e.adapter_type}[/] on {escape(e.model)}: "
                            f"{e.dataset_size} songs, {e.trainable_params:,} trainable "
                            f"parameters, {e.device} {e.precision}")
            self.epoch_task = p.add_task("epochs", total=e.total_epochs,
                                         completed=e.start_epoch, info="")
            self.step_task = p.add_task("steps ", total=e.total_steps,
                                        completed=e.start_step, info="")
        elif isinstance(e, StepMetrics) and self.step_task is not None:
            p.update(self.step_task, completed=e.step,
                     info=f"loss {e.loss:.4f}  lr {e.lr:.2e}  "
                          f"{(e.samples_per_sec or 0):.2f} samples/s")
        elif isinstance(e, EpochEnded) and self.epoch_task is not None:
            p.update(self.epoch_task, completed=e.epoch, info=f"mean loss {e.mean_loss:.4f}"
                     + (f"  val {e.val_loss:.4f}" if e.val_loss is not None else "")
                     + ("  best" if e.best else ""))
        elif isinstance(e, CheckpointSaved):
            if self.best.first(e):
                p.console.print(escape(e.line())
                                + escape(self.best.note(e)))
        elif isinstance(e, SampleWritten):
            p.console.print(f"sample for epoch {e.epoch}: {escape(e.path)}")
        elif isinstance(e, Problem):
            color = "red" if e.fatal else "yellow"
            p.console.print(f"[{color}]{escape(e.message)}[/]"
                            + (f"\n  try: {escape(e.remedy)}" if e.remedy else ""))
            self.fatal_shown = self.fatal_shown or e.fatal
        elif isinstance(e, LogLine) and _shown(e, self.said):
            p.console.print(f"[yellow]{escape(e.message)}[/]")
        elif isinstance(e, RunFinished):
            p.stop()

    def close(self) -> None:
        self.progress.stop()


def memory_summary(config, out: Out) -> None:
    """The VRAM estimate under the summary; a warning when it will not fit the GPU."""
    from sidestep.cli.vram_cmd import free_mib_for
    from sidestep.config.profiles import model_config_dict
    from sidestep.config.vram import estimate, summary_line

    model_cfg = model_config_dict(config.checkpoint_dir, config.model_variant)
    try:
        free = free_mib_for(config.device)
        line = summary_line(config, model_cfg, free)
        est = estimate(config, model_cfg)
    except Exception as exc:  # an estimate must never block training
        out.warn(f"memory estimate unavailable: {exc}")
        return
    out.info(line)
    if free is not None and est.verdict(free) == "will not fit":
        out.warn("this configuration will probably not fit in GPU memory: lower the batch size, "
                 "rank or --chunk-duration, or use --vram-profile auto")


def confirm(out: Out) -> bool:
    if not sys.stdin.isatty():
        out.error("no terminal to confirm on; pass --yes (before the subcommand) to start "
                  "training without the prompt")
        return False
    try:
        answer = input("Start training? [y/N] ").strip().lower()
    except EOFError:
        return False
    return answer in ("y", "yes")


def run_training(resolved, args, out: Out) -> int:
    from sidestep.cli.streams import GUARD
    from sidestep.engine.control import Control
    from sidestep.engine.preflight import preflight
    from sidestep.engine.trainer import Trainer, input_error_types

    config = resolved.config
    from sidestep.engine.distributed import torchrun_rank

    if torchrun_rank():  # torchrun's other ranks share rank 0's terminal: it alone prints
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # (errors still go to stderr)
    try:  # before the summary and the prompt: nothing to confirm for a run we would refuse
        warnings = preflight(config)
        if config.preprocess:  # --tensor-output (a songs folder, other songs' tensors), the songs
            from sidestep.data.preprocess import check_training_preprocess

            warnings += check_training_preprocess(config)
    except input_error_types() as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    out.table("Side-Step training", ("setting", "value"), summary_rows(config))
    memory_summary(config, out)
    for note in warnings:  # with the summary: the answer to the prompt may depend on them
        out.warn(note)
    if not args.yes and not confirm(out):
        out.info("not started")
        return EXIT_BAD_INPUT if not sys.stdin.isatty() else EXIT_OK
    if config.detach:  # checked like any start; the run itself is another process's
        from sidestep.cli.detach import start_detached

        return start_detached(config, args, out)
    control = Control()
    sink = PlainProgress(out, config.log_every) if out.plain else RichProgress(out)
    sink.said = set(warnings)
    t0 = time.monotonic()
    trainer = Trainer(config, [sink], control)

    def output_lost(reason: str) -> None:  # a closed pipe or a vanished terminal
        control.request_stop(f"output closed ({reason})")

    GUARD.listen(output_lost)
    try:
        with SignalStop(control, lambda msg: trainer.emit(LogLine(msg, level="warning"))):
            result = trainer.run()
    finally:
        GUARD.forget(output_lost)
    sink.close()
    took = fmt_duration(time.monotonic() - t0)
    if result.status == "completed":
        out.info(f"done in {took}: adapter in {result.adapter_path}"
                 + (f" ({result.reason})" if result.reason else ""))
        return EXIT_OK
    if result.status == "stopped":
        lost = GUARD.lost_reason
        why = f" ({lost})" if lost else ""
        if result.checkpoint_path is None:
            line = f"stopped before the first step{why}: nothing was trained, nothing was kept"
        else:
            line = (f"stopped after step {result.step}{why}; resume with: "
                    f"{resume_command(result.checkpoint_path)}")
        if lost:  # standard output closed (`| head`): the last word goes where it can be read
            print(line, file=sys.stderr)
        else:
            out.info(line)
        return EXIT_STOPPED
    if not sink.fatal_shown:
        out.error(result.error or "training failed")
    if result.checkpoint_path:
        out.info(f"last state saved to {result.checkpoint_path}; after the fix, resume with: "
                 f"{resume_command(result.checkpoint_path)}")
    return EXIT_BAD_INPUT if result.error_kind == "input" else EXIT_FAILED
