"""The checks a run can make in a moment, before anything is printed, asked or written: the
output folder, the checkpoint to resume, the model and the dataset folder. The CLI runs them
before its summary (a mistyped path should not get a summary and a memory estimate first); the
trainer runs them again, with the deeper checks, when it starts."""

from __future__ import annotations

import math


def preflight(config, output_dir: bool = True) -> list[str]:
    """Raises the engine's input errors (each names the field or file and the fix).
    ``output_dir=False`` skips the folder check, for runs that write no files. Returns the
    warnings about the configuration it can already give (``config_warnings``), so the CLI
    shows them with its summary, before it asks to start."""
    from sidestep.data.tensors import list_files
    from sidestep.engine import checkpointing
    from sidestep.engine.run_dir import check_output_dir
    from sidestep.model.checkpoints import resolve_model

    warnings: list[str] = []
    if config.resume_from:  # first: a mistyped checkpoint is the problem to name
        problem = checkpointing.quick_problem(config.resume_from)
        if problem:
            raise checkpointing.CheckpointProblem(problem)
        refused_resume(config)
        # before the folder is claimed: a refusal there rewrote the run's files (same bytes,
        # new times); the trainer still checks the epoch a finished last epoch rounds up to
        done = checkpointing.trained_out(config.resume_from,
                                         checkpointing.saved_epoch(config.resume_from) or 0,
                                         config.epochs)
        if done:
            raise checkpointing.CheckpointProblem(done)
        warnings += resume_notes(config)
    if output_dir:
        check_output_dir(config.output_dir, config.resume_from)
    model = resolve_model(config.checkpoint_dir, config.model_variant, config.base_model)
    if not config.preprocess:  # with --preprocess the tensors are made first
        from sidestep.data.tensors import EpochBatches

        files = list_files(config.dataset_dir)
        if config.val_split > 0:  # a split that leaves nothing to train on
            from sidestep.data.tensors import DataError
            from sidestep.engine.validation import SplitError, split_files

            try:
                files, _ = split_files(files, config.val_split, config.seed)
            except SplitError as exc:
                raise DataError(str(exc)) from None
        batches = EpochBatches(len(files), config.batch_size, config.seed).batches_per_epoch
        warnings += config_warnings(config, total_steps(config, batches))
    if config.mode == "selective" and config.module_config:
        warnings += selection_notes(config, model)
    return warnings


def selection_notes(config, model) -> list[str]:
    """A selective run's module config, checked against the model and the targets; the notes
    on what it trains. A resumed run in its own folder trains the copy kept there."""
    from pathlib import Path

    from sidestep.engine.module_config import load_module_config, selected_modules
    from sidestep.engine.run_dir import MODULES_FILE

    source = Path(config.module_config)
    kept = Path(config.output_dir) / MODULES_FILE
    if config.resume_from and kept.is_file():
        source = kept
    _, notes = selected_modules(load_module_config(source), source, config,
                                model.entry.num_layers,
                                model.entry.name if source != kept else None)
    return notes


def total_steps(config, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run (one per --gradient-accumulation batches)."""
    return math.ceil(batches_per_epoch / config.gradient_accumulation) * config.epochs


def config_warnings(config, steps: int) -> list[str]:
    """Settings that work but defeat themselves over a run of ``steps`` steps (the trainer
    logs the same lines when it starts)."""
    out = []
    if config.warmup_steps >= steps:
        from sidestep.config.plural import counted

        out.append(f"warmup ({counted(config.warmup_steps, 'step')}) is as long as the whole "
                   f"run ({counted(steps, 'step')}): the learning rate never reaches its full "
                   "value")
    return out


def resume_notes(config) -> list[str]:
    """The settings a resumed run changes from its checkpoint's run, and what each changes."""
    from sidestep.config.resume import resume_changes
    from sidestep.engine import checkpointing

    return resume_changes(config.mode, checkpointing.saved_config(config.resume_from),
                          config.to_dict())


def refused_resume(config) -> None:
    """A resumed run with another adapter shape, batch size or optimizer than its checkpoint,
    or a mode whose adapter sits on other modules: the weights and optimizer state would not
    fit, or its step count and place in the epoch would mean other batches."""
    from sidestep.config.resume import resume_refusal
    from sidestep.engine import checkpointing

    refusal = resume_refusal(config.resume_from, checkpointing.saved_config(config.resume_from),
                             config.to_dict(), config.mode)
    if refusal:
        raise checkpointing.CheckpointProblem(refusal)
