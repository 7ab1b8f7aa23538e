"""The run folder: ``run.json`` (config, versions, status), and reading runs back for history."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidestep.config.atomic import write_json

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "sidestep.log"
FINAL_ADAPTER = Path("final") / "adapter"


class RunDirError(ValueError):
    pass


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    import importlib.metadata as md

    for name in ("sidestep", "torch", "peft", "lycoris-lora", "lightning", "transformers",
                 "diffusers", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def read_run(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run(run_dir: Path, data: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RUN_FILE, data)


def check_output_dir(run_dir: Path, resume_from: str | None) -> None:
    """Refuse to start a fresh run on top of another run's files (nothing is overwritten)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder; choose another --output-dir")
    if resume_from:
        return
    existing = read_run(run_dir)
    has_adapter = (run_dir / FINAL_ADAPTER).exists()
    has_ckpt = any(run_dir.glob("checkpoint-*")) if run_dir.is_dir() else False
    if existing or has_adapter or has_ckpt:
        status = (existing or {}).get("status", "unknown")
        raise RunDirError(f"{run_dir}: already holds a run (status: {status}); choose a new "
                          "--output-dir, or continue it with --resume-from <its checkpoint>")


@dataclass(frozen=True)
class RunSummary:
    path: Path
    status: str
    mode: str
    adapter_type: str
    model: str
    epochs_done: int
    epochs_total: int
    last_step: int
    best_loss: float | None
    adapter_path: str | None
    started_at: float | None
    finished_at: float | None
    latest_checkpoint: Path | None

    @property
    def name(self) -> str:
        return self.path.name


def summarize(run_dir: Path) -> RunSummary | None:
    """History view of one run from ``run.json`` and ``events.jsonl`` (None if not a run)."""
    from sidestep.engine.checkpointing import list_checkpoints
    from sidestep.engine.events import EpochEnded, RunFinished, StepMetrics, read_events

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    events_path = run_dir / EVENTS_FILE
    if info is None and not events_path.is_file():
        return None
    info = info or {}
    events = read_events(events_path)
    losses = [e.loss for e in events if isinstance(e, StepMetrics) and e.loss == e.loss]
    epochs = [e.epoch for e in events if isinstance(e, EpochEnded)]
    steps = [e.step for e in events if isinstance(e, StepMetrics)]
    finished = [e for e in events if isinstance(e, RunFinished)]
    status = info.get("status") or (finished[-1].status if finished else "unknown")
    if status == "running" and finished:
        status = finished[-1].status
    cfg = info.get("config") or {}
    adapter = info.get("adapter_path")
    if not adapter and (run_dir / FINAL_ADAPTER).is_dir():
        adapter = str(run_dir / FINAL_ADAPTER)
    ckpts = list_checkpoints(run_dir) if run_dir.is_dir() else []
    return RunSummary(
        path=run_dir, status=status, mode=str(cfg.get("mode", "fixed")),
        adapter_type=str(cfg.get("adapter_type", "?")), model=str(cfg.get("model_variant", "?")),
        epochs_done=max(epochs) if epochs else 0, epochs_total=int(cfg.get("epochs") or 0),
        last_step=max(steps) if steps else 0, best_loss=min(losses) if losses else None,
        adapter_path=adapter, started_at=info.get("started_at"),
        finished_at=info.get("finished_at"), latest_checkpoint=ckpts[-1] if ckpts else None)


def find_runs(roots: list[Path], depth: int = 2) -> list[RunSummary]:
    """Runs under ``roots`` (a run is a folder with run.json or events.jsonl), newest first."""
    seen: set[Path] = set()
    out: list[RunSummary] = []

    def visit(folder: Path, level: int) -> None:
        try:
            resolved = folder.resolve()
        except OSError:
            return
        if resolved in seen or not folder.is_dir():
            return
        seen.add(resolved)
        if (folder / RUN_FILE).is_file() or (folder / EVENTS_FILE).is_file():
            summary = summarize(folder)
            if summary:
                out.append(summary)
            return
        if level >= depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir()
                              and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            visit(child, level + 1)

    for root in roots:
        visit(Path(root), 0)
    out.sort(key=lambda s: s.started_at or 0.0, reverse=True)
    return out


def now() -> float:
    return time.time()
