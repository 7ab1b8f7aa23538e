"""Checkpoints and exact resume: epoch checkpoints, stop-and-save mid-epoch, resume of a resume."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.engine.control import Control
from sidestep.engine.trainer import Trainer


def _final_state(trainer):
    return {k: v.detach().clone().cpu() for k, v in trainer.adapted.adapter_state().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class StopAt:
    """Asks the engine to stop once it has reported step ``n`` (asynchronously, like a user)."""

    def __init__(self, control, n):
        self.control, self.n = control, n

    def handle(self, event):
        if event.type == "step" and event.step >= self.n:
            self.control.request_stop("test")

    def close(self):
        pass


@pytest.mark.parametrize("adapter", ["lora", "lokr"])
def test_resume_is_exact(demo_root, small_tensors, tmp_path, adapter):
    kw = dict(adapter_type=adapter, epochs=4, save_every=2, gradient_accumulation=4,
              dropout=0.1) if adapter == "lora" else dict(adapter_type=adapter, epochs=4,
                                                          save_every=2, gradient_accumulation=4)
    # uninterrupted reference run
    seen = Recorder()
    ref = Trainer(train_config(demo_root, small_tensors, tmp_path / "a", **kw), [seen])
    ref_result = ref.run()
    assert ref_result.status == "completed"
    expected = _final_state(ref)
    ckpt2 = tmp_path / "a" / "checkpoint-epoch-2"
    assert (ckpt2 / "COMPLETE").is_file()

    # resumed from epoch 2 to epoch 4
    b = Trainer(train_config(demo_root, small_tensors, tmp_path / "b",
                             resume_from=str(ckpt2), **kw))
    result = b.run()
    assert result.status == "completed", result.error
    _assert_identical(expected, _final_state(b))

    # a resume of a resume: stop mid-run (mid-epoch, mid-accumulation), then resume that
    control = Control()
    c = Trainer(train_config(demo_root, small_tensors, tmp_path / "c",
                             resume_from=str(ckpt2), **kw), [StopAt(control, 5)], control)
    stopped = c.run()
    assert stopped.status == "stopped" and stopped.checkpoint_path
    assert "checkpoint-step-" in stopped.checkpoint_path
    # the run's log alone says how it went and where to go on (the terminal may be gone)
    record = (tmp_path / "c" / "sidestep.log").read_text()
    assert f"saved step checkpoint: {stopped.checkpoint_path}" in record
    assert f"run stopped at step {stopped.step} ({stopped.epoch} epochs done)" in record
    assert f"resume with: sidestep fixed --resume-from {stopped.checkpoint_path}" in record
    assert "epoch 3 ended at step" not in record and "(epoch 3): loss" in record
    # ... and those lines are the file's: the console and the app have the events
    assert not [e for e in seen.of("log") if "checkpoint:" in e.message or "run " in e.message]
    assert "epoch 2 ended at step" in (tmp_path / "a" / "sidestep.log").read_text()
    resumed = Recorder()
    d = Trainer(train_config(demo_root, small_tensors, tmp_path / "c",
                             resume_from=stopped.checkpoint_path, **kw), [resumed])
    result = d.run()
    assert result.status == "completed", result.error
    _assert_identical(expected, _final_state(d))
    # the epoch stopped in, and those after, have the uninterrupted run's means (the steps
    # before the stop count), and the best step loss is the whole run's
    means = {e.epoch: e.mean_loss for e in seen.of("epoch_end")}
    after = {e.epoch: e.mean_loss for e in resumed.of("epoch_end")}
    assert after and after == {k: means[k] for k in after}
    assert result.best_loss == ref_result.best_loss


def test_save_now_and_pause(demo_root, small_tensors, tmp_path):
    control = Control()
    rec = Recorder()
    seen = threading.Event()

    class Driver:
        def handle(self, event):
            if event.type == "step" and event.step == 1:
                control.pause()
            if event.type == "log" and event.message == "paused":
                seen.set()  # the engine is really waiting now

        def close(self):
            pass

    cfg = train_config(demo_root, small_tensors, tmp_path / "p", epochs=2, save_every=5)
    trainer = Trainer(cfg, [rec, Driver()], control)
    runner = threading.Thread(target=trainer.run)
    runner.start()
    assert seen.wait(120)
    control.save_now()
    time.sleep(4)  # paused: not counted as training time
    control.resume()
    runner.join(300)
    assert not runner.is_alive()
    # the paused epoch's time and the rates leave the pause out (they said 18 s for 1 s epochs)
    started, first = rec.of("run_started")[0], rec.of("epoch_end")[0]
    assert first.seconds < (first.time - started.time) - 3
    kinds = [(e.kind, e.step) for e in rec.of("checkpoint")]
    assert any(k == "step" for k, _ in kinds) and kinds[-1][0] == "final"
    assert [e.message for e in rec.of("log") if e.message in ("paused", "resumed")] == \
        ["paused", "resumed"]
    assert rec.of("run_finished")[-1].status == "completed"


def test_resume_refuses_mismatches(demo_root, small_tensors, tmp_path):
    run = Trainer(train_config(demo_root, small_tensors, tmp_path / "a", epochs=1))
    assert run.run().status == "completed"
    good = tmp_path / "a" / "checkpoint-epoch-1"

    def attempt(**kw):
        return Trainer(train_config(demo_root, small_tensors, tmp_path / "x", epochs=2,
                                    resume_from=str(good), **kw)).run()

    res = attempt(rank=8, alpha=16)
    assert res.status == "failed" and res.error_kind == "input"
    # each named, with the run's value, before the checkpoint is loaded
    assert "--rank 8 (the run used 4)" in res.error and "--alpha 16 (the run used 8)" \
        in res.error
    res = attempt(adapter_type="lokr")
    assert res.status == "failed" and "--adapter-type lokr (the run used lora)" in res.error
    res = attempt(attention_type="self")
    assert res.status == "failed" and "--attention-type self (the run used both)" in res.error
    # an incomplete checkpoint (no COMPLETE marker) is refused
    (good / "COMPLETE").unlink()
    res = attempt()
    assert res.status == "failed" and "incomplete checkpoint" in res.error


def test_output_dir_of_another_run_is_not_overwritten(demo_root, small_tensors, tmp_path):
    out = tmp_path / "same"
    assert Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run().status == \
        "completed"
    before = (out / "final" / "adapter" / "adapter_model.safetensors").read_bytes()
    res = Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run()
    assert res.status == "failed" and res.error_kind == "input"
    assert "already holds a run" in res.error
    assert (out / "final" / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_a_stop_right_after_an_epoch_checkpoint_points_at_it(demo_root, small_tensors,
                                                             tmp_path):
    """Stopped at the first micro-batch after checkpoint-epoch-1 was written, the run wrote
    checkpoint-step-N beside it with the same state. It points at the epoch's instead, and a
    resume from there ends as the uninterrupted run did."""

    class StopAfterEpochSave:
        def __init__(self, control):
            self.control = control

        def handle(self, event):
            if event.type == "checkpoint" and event.kind == "epoch":
                self.control.request_stop("test")

        def close(self):
            pass

    whole = Trainer(train_config(demo_root, small_tensors, tmp_path / "whole", epochs=2))
    assert whole.run().status == "completed"
    control = Control()
    out = tmp_path / "run"
    stopped = Trainer(train_config(demo_root, small_tensors, out, epochs=2),
                      [StopAfterEpochSave(control)], control).run()
    assert stopped.status == "stopped"
    assert stopped.checkpoint_path == str(out / "checkpoint-epoch-1")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-epoch-1"]
    # the log says so, not "saved epoch checkpoint" a second time
    record = (out / "sidestep.log").read_text()
    assert record.count("saved epoch checkpoint") == 1
    assert f"{out / 'checkpoint-epoch-1'} already holds step {stopped.step}: nothing new to " \
        "save" in record
    resumed = Trainer(train_config(demo_root, small_tensors, out, epochs=2,
                                   resume_from=str(out / "checkpoint-epoch-1")))
    assert resumed.run().status == "completed"
    _assert_identical(_final_state(whole), _final_state(resumed))


def test_a_finished_run_keeps_its_last_epoch_to_go_on_from(demo_root, small_tensors, tmp_path):
    """3 epochs with --save-every 2 kept checkpoint-epoch-2 only: training it further meant
    retraining epoch 3, and run.json named no checkpoint for `runs` and History's resume."""
    import json

    out = tmp_path / "a"
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=3, save_every=2)).run()
    assert result.status == "completed"
    last = out / "checkpoint-epoch-3"
    assert (last / "COMPLETE").is_file() and (out / "checkpoint-epoch-2" / "COMPLETE").is_file()
    assert result.checkpoint_path == str(last)
    assert json.loads((out / "run.json").read_text())["checkpoint_path"] == str(last)
    more = Trainer(train_config(demo_root, small_tensors, tmp_path / "b", epochs=4,
                                save_every=2, resume_from=str(last))).run()
    assert more.status == "completed" and more.epoch == 4 and more.step == result.step * 4 // 3
