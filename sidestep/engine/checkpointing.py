"""Crash-safe checkpoints.

A checkpoint is written into a hidden temporary sibling, every file fsynced, the folder renamed
into place, and only then the ``COMPLETE`` marker written (and fsynced). A process killed at any
moment leaves either the previous complete checkpoint or a folder without ``COMPLETE`` that
``--resume-from`` refuses. Layout::

    checkpoint-epoch-N/  (or checkpoint-step-S/)
        adapter/             inference-ready adapter (same format as final/adapter)
        training_state.pt    optimizer, scheduler, RNG states, step, epoch, position
        COMPLETE
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from sidestep.config.atomic import fsync_dir

MARKER = "COMPLETE"
STATE_FILE = "training_state.pt"
ADAPTER_DIR = "adapter"
STATE_VERSION = 1


class CheckpointProblem(ValueError):
    pass


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(path)
    fsync_dir(folder)


def rng_snapshot() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, name: str, adapted, optimizer, scheduler, *, step: int, epoch: int,
         position: int, rng: dict[str, Any], config: dict[str, Any],
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/name`` atomically; returns its path."""
    import torch

    final = run_dir / name
    tmp = run_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        adapted.save(tmp / ADAPTER_DIR)
        state = {
            "version": STATE_VERSION,
            "adapter_type": adapted.kind,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "step": step,
            "epoch": epoch,
            "position": position,
            "config": config,
            "saved_at": time.time(),
        }
        state.update(extra or {})
        torch.save(state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        if final.exists():
            # A previous save of the same name (complete or not) is replaced only now,
            # after the new one is fully on disk.
            trash = run_dir / f".{name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(run_dir)
        with open(final / MARKER, "w") as fh:
            fh.write(f"{step}\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / STATE_FILE).is_file() and \
        (folder / ADAPTER_DIR).is_dir()


def quick_problem(folder: Path | str) -> str | None:
    """Why ``folder`` cannot be resumed from, judged from its files alone (no torch)."""
    folder = Path(folder)
    if not folder.is_dir():
        return (f"{folder}: checkpoint folder not found" if not folder.exists() else
                f"{folder} is a file, not a folder; give a checkpoint folder "
                "(<run>/checkpoint-step-N)")
    if not (folder / MARKER).is_file():
        return _not_a_checkpoint(folder)
    if not (folder / STATE_FILE).is_file() or not (folder / ADAPTER_DIR).is_dir():
        return f"{folder}: {STATE_FILE} or {ADAPTER_DIR}/ is missing; not a Side-Step checkpoint"
    return None


def _not_a_checkpoint(folder: Path) -> str:
    """Why a folder without the marker cannot be resumed, and what to give instead."""
    if folder.name == ADAPTER_DIR and (folder.parent / MARKER).is_file():
        return (f"{folder}: is the adapter inside a checkpoint; resume from the checkpoint "
                f"itself, {folder.parent}")
    run = folder if any(folder.glob("checkpoint-*")) or (folder / "run.json").is_file() \
        else folder.parent
    if run != folder and not (run / "run.json").is_file() and not any(run.glob("checkpoint-*")):
        # neither it nor its parent is a run (a folder of songs or tensors, say)
        return (f"{folder}: not a checkpoint; give one of a run's checkpoint folders "
                "(<run>/checkpoint-epoch-N or checkpoint-step-S, holding a COMPLETE file)")
    newest = list_checkpoints(run) if run.is_dir() else []
    instead = (f"resume from its newest checkpoint, {newest[-1]}" if newest else
               "that run saved no checkpoint to resume from (one is saved every --save-every "
               "epochs, and a stop saves one); train it again with --save-every at most its "
               "--epochs to be able to continue it")
    if run == folder:
        return f"{folder}: is a run folder, not one of its checkpoints; {instead}"
    if (folder / STATE_FILE).is_file():
        return (f"{folder}: incomplete checkpoint (no {MARKER} marker; the save was "
                f"interrupted); {instead}")
    if (folder / "adapter_config.json").is_file() or (folder / ADAPTER_DIR).is_dir():
        return (f"{folder}: holds an adapter, not a training checkpoint (no optimizer or "
                f"position to continue from); {instead}")
    return f"{folder}: not a Side-Step checkpoint; {instead}"


def read_state(folder: Path) -> dict[str, Any]:
    """Training state of a complete checkpoint, or ``CheckpointProblem`` saying why not."""
    state = _load_state(folder)
    for key in ("adapter_type", "optimizer", "scheduler", "rng", "step", "epoch", "position"):
        if key not in state:
            raise CheckpointProblem(f"{Path(folder) / STATE_FILE}: '{key}' is missing")
    return state


def saved_config(folder: Path | str) -> dict[str, Any]:
    """The recorded settings of the run a complete checkpoint comes from ({} for a checkpoint
    older than that record), or ``CheckpointProblem``. The state file is memory-mapped, so
    the optimizer's tensors are not read for it."""
    config = _load_state(folder, mmap=True).get("config")
    return dict(config) if isinstance(config, dict) else {}


def saved_epoch(folder: Path | str) -> int | None:
    """The epoch count in a complete checkpoint's state (memory-mapped, as saved_config)."""
    epoch = _load_state(folder, mmap=True).get("epoch")
    return int(epoch) if isinstance(epoch, int) else None


def trained_out(folder: Path | str, epoch: int, epochs: int) -> str | None:
    """Why resuming at ``epoch`` with ``epochs`` has nothing left to train, or None."""
    if epoch < epochs:
        return None
    from sidestep.config.plural import counted

    return (f"{folder}: that run has already trained {counted(epoch, 'epoch')} (--epochs "
            f"{epochs}); raise --epochs above {epoch} to train it further")


def _load_state(folder: Path | str, mmap: bool = False) -> dict[str, Any]:
    import torch

    folder = Path(folder)
    problem = quick_problem(folder)
    if problem:
        raise CheckpointProblem(problem)
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True,
                           mmap=mmap)
    except Exception as exc:
        raise CheckpointProblem(f"{folder / STATE_FILE}: cannot be loaded ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointProblem(f"{folder / STATE_FILE}: not a Side-Step training state")
    return state


def marked_step(folder: Path) -> int:
    """The step a complete checkpoint's marker records (0 when it cannot say)."""
    try:
        return int((Path(folder) / MARKER).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    found = [(marked_step(p), p.stat().st_mtime, p) for p in Path(run_dir).glob("checkpoint-*")
             if p.is_dir() and is_complete(p)]
    return [p for *_, p in sorted(found)]


def clean_partials(run_dir: Path) -> list[Path]:
    """Tidy what a killed save left behind: half-written temp folders are removed; a replaced
    checkpoint whose successor never landed is put back."""
    removed = []
    partials = [*Path(run_dir).glob(".checkpoint-*"), *Path(run_dir).glob(".best.*")]
    for p in sorted(partials):
        if not p.is_dir():
            continue
        if ".old-" in p.name:
            final = p.parent / p.name[1:].split(".old-")[0]
            if not final.exists():
                p.rename(final)
                continue
        if ".tmp-" in p.name or ".old-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


BEST_INFO = "best.json"


def save_best(folder: Path, adapted, info: dict[str, Any]) -> Path:
    """Replace ``folder`` (``best/``) with ``adapter/`` + ``best.json`` atomically: a crash keeps
    the previous best whole. Returns the adapter folder."""
    import json

    parent = folder.parent
    tmp = parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        adapted.save(tmp / ADAPTER_DIR)
        (tmp / BEST_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        trash = None
        if folder.exists():
            trash = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(trash)
        os.replace(tmp, folder)
        fsync_dir(parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / ADAPTER_DIR
