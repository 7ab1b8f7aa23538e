"""``build-dataset``, ``preprocess`` and ``make-demo``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from sidestep.cli.output import Out
from sidestep.config.plural import counted


def run_build_dataset(config, out: Out) -> int:
    from sidestep.data.dataset_json import DatasetError, build_dataset

    try:
        path, doc, warnings = build_dataset(config.input, tag=config.tag,
                                            tag_position=config.tag_position,
                                            genre_ratio=config.genre_ratio, name=config.name,
                                            output=config.output, replace=config.force)
    except DatasetError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    for msg in warnings:
        out.warn(msg)
    n = len(doc["samples"])
    vocal = sum(1 for s in doc["samples"] if not s["is_instrumental"])
    out.info(f"wrote {path}: {counted(n, 'song')} ({vocal} with lyrics, {n - vocal} "
             "instrumental)")
    return EXIT_OK


def run_preprocess(config, out: Out) -> int:
    from sidestep.cli.signals import CancelBetweenUnits
    from sidestep.data.preprocess import input_errors, preprocess_config

    t0 = time.monotonic()
    try:
        with CancelBetweenUnits("{name}: stopping after this song; finished files are kept and "
                                "a rerun encodes the rest{again}") as stop:
            def show(e) -> None:
                stop.show_notices(out)
                out.info(progress_line(e))

            result = preprocess_config(config, progress=show, cancel=stop.cancel.is_set,
                                       warn=out.warn)
    except input_errors() as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    for path, reason in result.failed:
        out.warn(f"failed: {path}: {reason}")
    done = len(result.written) + len(result.reused)
    if result.cancelled:
        half = (f", {result.half_done} more half-done (pass 1 kept)" if result.half_done
                else "")
        earlier = (f"; {counted(len(result.earlier), 'file')} from before, which this run was "
                   "to replace, are kept and still train" if result.earlier else "")
        message = (f"cancelled: {done} of {result.total} songs are done{half}, no partial "
                   f"files{earlier}; run the same command again to encode the rest")
        out.info(message)
        if stop.output_lost:  # stdout is gone: say it where it can be read
            out.warn(message.replace("cancelled:", "output closed, so stopped:"))
        return EXIT_STOPPED
    kept = f" (kept {len(result.reused)} finished earlier)" if result.reused else ""
    out.info(f"wrote {len(result.written)} tensor files{kept} and {result.manifest} in "
             f"{time.monotonic() - t0:.1f} s")
    return EXIT_OK if done else EXIT_FAILED


def progress_line(e) -> str:
    """One preprocessing event as a log line: ``[encode 3/12] song.wav (1:05 left)``."""
    from sidestep.engine.describe import fmt_duration

    if e.phase in ("encode", "condition"):
        left = f" ({fmt_duration(e.eta_s)} left)" if e.eta_s is not None else ""
        return f"[{e.phase} {e.done + 1}/{e.total}] {e.file}{left}"
    return f"[{e.phase}] {e.message}"


def run_check_dataset(args: argparse.Namespace, out: Out) -> int:
    from sidestep.data.check import ERROR, WARNING, check_dataset

    widths: dict[str, int] = {}
    root = getattr(args, "checkpoint_dir", None)
    if root:
        import json

        from sidestep.config.resolve import CHECKPOINT_DIR_FIX, not_a_folder
        from sidestep.model.checkpoints import DiscoveryError, resolve_model
        from sidestep.model.config import AceStepConfig

        problem = not_a_folder(root, CHECKPOINT_DIR_FIX)
        if problem:
            out.error(f"--checkpoint-dir: {problem}")
            return EXIT_BAD_INPUT
        try:
            model = resolve_model(root, getattr(args, "model_variant", "turbo"))
            path = model.path / "config.json"
            cfg = AceStepConfig.from_dict(json.loads(path.read_text(encoding="utf-8")),
                                          str(path))
        except (DiscoveryError, OSError, ValueError) as exc:
            out.error(f"--checkpoint-dir: {exc}")
            return EXIT_BAD_INPUT
        widths = {"latent_width": cfg.audio_acoustic_hidden_dim, "cond_width": cfg.enc_hidden}
    chunk = getattr(args, "chunk_duration", None)
    report = check_dataset(args.folder, chunk_duration=chunk, **widths)
    if args.json:
        out.json(report.to_json())
    else:
        short = inside_names(report.folder)
        for p in report.problems:  # the findings are the output: stdout, like a linter's
            out.info(f"{p.severity if p.severity != 'info' else 'note'}: [{p.kind}] "
                     f"{short(p.message)}")
        counts = {s: sum(p.severity == s for p in report.problems) for s in (ERROR, WARNING)}
        verdict = "usable" if report.usable else "NOT usable until the errors are fixed"
        out.info(f"{report.folder}: {len(report.audio)} audio files, {len(report.tensors)} "
                 f".pt files; {counted(counts[ERROR], 'error')}, "
                 f"{counted(counts[WARNING], 'warning')}: {verdict}")
    return EXIT_OK if report.usable else EXIT_BAD_INPUT


def inside_names(folder: Path):
    """Text -> the same text with paths inside ``folder`` written relative to it (the report
    names the folder once; absolute paths made each line hard to read). --json keeps them."""
    import re

    prefixes = {str(folder), str(Path(folder).absolute()), str(Path(folder).resolve())}
    pattern = re.compile("|".join(rf"(?<![\w./\\-]){re.escape(p.rstrip(os.sep) + os.sep)}"
                                  for p in sorted(prefixes, key=len, reverse=True)))
    return lambda text: pattern.sub("", text)


def run_make_demo(args: argparse.Namespace, out: Out) -> int:
    from sidestep.data.paths import output_dir_problem
    from sidestep.data.preprocess import PreprocessError
    from sidestep.demo import foreign_tensors, make_demo

    root = Path(args.dir)
    if args.clips < 1:
        out.error("--clips must be at least 1")
        return EXIT_BAD_INPUT
    problem = output_dir_problem(root, "make-demo:")  # a file in the way, no permission
    if problem:
        out.error(problem)
        return EXIT_BAD_INPUT
    if root.exists() and any(root.iterdir()) and not args.force:
        out.error(f"{root} is not empty; pick a new folder or pass --force")
        return EXIT_BAD_INPUT
    foreign = foreign_tensors(root)
    if foreign:
        names = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        out.error(f"make-demo: {root / 'tensors'} holds .pt files that are not the demo's "
                  f"({names}); the demo's songs would be mixed with them. Pick a new folder, "
                  "or move those files away")
        return EXIT_BAD_INPUT
    undo = _undo_for(root)
    t0 = time.monotonic()
    try:
        make_demo(root, seed=args.seed, clips=args.clips,
                  progress=lambda msg: out.info(f"[{time.monotonic() - t0:5.1f}s] {msg}"))
    except BaseException as exc:
        undo()  # a failed or interrupted demo leaves nothing behind
        if not isinstance(exc, (OSError, PreprocessError)):
            raise
        kept = ("nothing was kept" if undo.removes_all else
                f"the files it wrote beside what was in {root} are still there")
        if isinstance(exc, PreprocessError):  # a refusal: its message says what to do
            out.error(f"make-demo: {exc}; {kept}")
            return EXIT_BAD_INPUT
        where = getattr(exc, "filename", None) or root
        reason = getattr(exc, "strerror", None) or exc
        out.error(f"make-demo: cannot write {where} ({reason}); {kept}. Choose a folder you "
                  "can write to, with some free space")
        return EXIT_BAD_INPUT
    out.info(f"demo written to {root}: checkpoints/ audio/ tensors/")
    # a short run: the default 100 epochs and 100 warmup steps are for real datasets
    out.info(f"next, try: sidestep fixed --checkpoint-dir {root / 'checkpoints'} "
             f"--dataset-dir {root / 'tensors'} --output-dir {root / 'run'} --epochs 2 "
             "--warmup-steps 0")
    return EXIT_OK


def _undo_for(root: Path):
    """What removes everything make-demo is about to write: the folders it creates, or the
    contents of the empty folder it was given (with --force into a non-empty one: nothing,
    since what was there cannot be told from what was written)."""
    import shutil

    top = None  # the outermost folder that does not exist yet
    path = Path(os.path.abspath(root))
    while not os.path.lexists(path) and path != path.parent:
        top, path = path, path.parent
    before = set(root.iterdir()) if top is None and root.is_dir() else None

    def undo() -> None:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        elif before == set():
            for child in list(root.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    undo.removes_all = top is not None or before == set()
    return undo
