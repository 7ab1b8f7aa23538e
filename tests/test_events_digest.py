"""events.jsonl read incrementally for History, the dashboard and `sidestep runs`: the same
answers as reading every event, only appended bytes read again, a torn last line waited for,
and a replaced or rewritten file read afresh."""

from __future__ import annotations

import os

from sidestep.engine.events import (EpochEnded, RunFinished, RunPaused, RunStarted, StepMetrics,
                                    read_events, to_json)
from sidestep.engine.events_digest import digest

STARTED = RunStarted(run_dir="r", config={}, device="cpu", precision="fp32", model="m",
                     adapter_type="lora", trainable_params=1, dataset_size=1,
                     steps_per_epoch=2, total_steps=4, total_epochs=2)


def lines(*events) -> bytes:
    return "".join(to_json(e) + "\n" for e in events).encode()


def brute(path):
    events = read_events(path)
    losses = [e.loss for e in events if isinstance(e, StepMetrics) and e.loss == e.loss]
    return (min(losses) if losses else None,
            max([e.epoch for e in events if isinstance(e, EpochEnded)] or [0]),
            max([e.step for e in events if isinstance(e, StepMetrics)] or [0]),
            [e for e in events if isinstance(e, RunFinished)])


def test_appends_are_read_once_and_match_a_full_read(tmp_path):
    path = tmp_path / "events.jsonl"
    first = lines(STARTED, StepMetrics(step=1, epoch=1, loss=0.9, lr=1e-4),
                  StepMetrics(step=2, epoch=1, loss=float("nan"), lr=1e-4),
                  EpochEnded(epoch=1, step=2, mean_loss=0.9, seconds=1.0))
    torn = to_json(StepMetrics(step=3, epoch=2, loss=0.4, lr=1e-4)).encode()
    path.write_bytes(first + torn[:20])
    d = digest(path)
    assert (d.best_loss, d.epochs_done, d.last_step) == (0.9, 1, 2)  # the torn line waits
    assert d.step_line.startswith('{"type": "step", "step": 2')

    with open(path, "ab") as fh:  # the engine appends: the rest of the line and more
        fh.write(torn[20:] + b"\n" + lines(RunPaused(step=3)))
    read_before = d._offset
    d = digest(path)
    assert d._offset - read_before == os.path.getsize(path) - len(first) - 20
    assert (d.best_loss, d.epochs_done, d.last_step) == (0.4, 1, 3)
    assert d.pause_line.startswith('{"type": "paused"')
    with open(path, "ab") as fh:
        fh.write(lines(STARTED, StepMetrics(step=4, epoch=2, loss=0.5, lr=1e-4),
                       EpochEnded(epoch=2, step=4, mean_loss=0.45, seconds=1.0),
                       RunFinished(status="completed", step=4, epoch=2)))
    d = digest(path)
    assert d.pause_line == ""  # a new run_started: the earlier pause is not this run's
    assert (d.best_loss, d.epochs_done, d.last_step, d.finished) == brute(path)
    assert d.finished[0].status == "completed"


def test_a_replaced_or_rewritten_file_is_read_afresh(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(STARTED, StepMetrics(step=7, epoch=1, loss=0.1, lr=1e-4)))
    assert digest(path).last_step == 7
    # rewritten in place, longer than before (same inode): not mistaken for an append
    path.write_bytes(lines(StepMetrics(step=1, epoch=1, loss=0.8, lr=1e-4), STARTED,
                           StepMetrics(step=2, epoch=1, loss=0.7, lr=1e-4)))
    assert (digest(path).last_step, digest(path).best_loss) == (2, 0.7)
    # replaced by another file (a new inode), shorter
    other = tmp_path / "other.jsonl"
    other.write_bytes(lines(StepMetrics(step=1, epoch=1, loss=0.3, lr=1e-4)))
    os.replace(other, path)
    assert (digest(path).last_step, digest(path).best_loss) == (1, 0.3)
    path.unlink()
    assert digest(path).last_step == 0 and digest(path).finished == []
