"""#17: EMA of the adapter, held-out validation, best adapter and early stop."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import Recorder, train_config
from sidestep.engine.ema import AdapterEMA
from sidestep.engine.trainer import Trainer
from sidestep.engine.validation import BestTracker, split_files


def _weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_split_is_seeded_and_disjoint(tmp_path):
    files = [tmp_path / f"s{i:02d}.pt" for i in range(12)]
    train, val = split_files(files, 0.25, seed=42)
    assert len(val) == 3 and not set(train) & set(val) and set(train) | set(val) == set(files)
    assert split_files(files, 0.25, seed=42) == (train, val)
    assert split_files(files, 0.25, seed=7)[1] != val
    assert split_files(files, 0.0, seed=42) == (files, [])


def test_ema_update_and_apply():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = AdapterEMA([("w", p)], decay=0.999, device=torch.device("cpu"))
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # warm-up rate: min(0.999, 1/10) = 0.1 -> shadow = 0.9
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9))
    ema.update()  # min(0.999, 2/11)
    expected = 0.9 + (1 - 2 / 11) * (1.0 - 0.9)
    assert torch.allclose(ema.shadow[0], torch.full((3,), expected))
    with ema.applied():
        assert torch.allclose(p.detach(), torch.full((3,), expected))
    assert torch.equal(p.detach(), torch.ones(3))  # the trained weights are back


def test_tracker_start_and_patience():
    t = BestTracker(start=2, patience=2)
    assert t.observe(1, 5.0, 1.0) == (1.0, False)       # before --save-best-after
    assert t.observe(2, 5.0, 2.0) == (2.0, True)
    assert t.observe(3, 5.0, 2.0) == (2.0, False) and not t.should_stop
    assert t.observe(4, 5.0, 1.5) == (1.5, True) and t.since == 0
    t.observe(5, 5.0, 1.6)
    t.observe(6, 5.0, 1.7)
    assert t.should_stop and t.best_epoch == 4
    # without a split: the mean of the last five epochs' training loss
    m = BestTracker()
    for epoch, loss in enumerate([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], start=1):
        measure, _ = m.observe(epoch, loss, None)
    assert measure == pytest.approx((5 + 4 + 3 + 2 + 1) / 5)


@pytest.mark.slow
def test_ema_validation_best_and_samples(demo_root, tmp_path):
    """The issue's run: 3 turbo epochs, EMA, --val-split 0.25, a sample every epoch."""
    import soundfile as sf

    rec = Recorder()
    out = tmp_path / "run"
    kw = dict(epochs=3, ema_decay=0.9, val_split=0.25, save_every=3)
    cfg = train_config(demo_root, demo_root / "tensors", out, sample_every_n_epochs=1,
                       sample_duration=2.0, **kw)
    trainer = Trainer(cfg, sinks=[rec])
    result = trainer.run()
    assert result.status == "completed", result.error
    samples = rec.of("sample")
    assert [s.epoch for s in samples] == [1, 2, 3]
    for s in samples:
        info = sf.info(s.path)
        assert s.path == str(out / "samples" / f"epoch-{s.epoch}.wav")
        assert (info.samplerate, info.channels, info.frames) == (48000, 2, 96000)
        assert s.seed == 42 and s.steps == 8 and s.prompt == ""
    # rendering samples leaves training untouched: the same run without them ends identical
    plain = Trainer(train_config(demo_root, demo_root / "tensors", tmp_path / "plain", **kw))
    assert plain.run().status == "completed"
    a, b = _weights(out / "final" / "adapter"), _weights(tmp_path / "plain" / "final" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    held = {f.name for f in trainer.val_files}
    assert len(held) == 3 and not held & {f.name for f in trainer.dataset.files}
    ends = rec.of("epoch_end")
    assert [e.epoch for e in ends] == [1, 2, 3]
    assert all(e.val_loss is not None and math.isfinite(e.val_loss) for e in ends)
    # the final adapter is the EMA, not the last trained weights
    final = _weights(out / "final" / "adapter")
    with trainer.ema.applied():
        averaged = {k: v.clone() for k, v in trainer.adapted.adapter_state().items()}
    trained = trainer.adapted.adapter_state()
    assert final.keys() == averaged.keys()
    assert all(torch.equal(final[k], averaged[k]) for k in final)
    assert any(not torch.equal(final[k], trained[k]) for k in final)
    # best/ is the epoch with the lowest validation loss
    best_epoch = min(ends, key=lambda e: e.val_loss).epoch
    info = json.loads((out / "best" / "best.json").read_text())
    assert info["epoch"] == best_epoch and info["metric"] == "val_loss" and info["ema"]
    assert info["value"] == pytest.approx(min(e.val_loss for e in ends))
    assert (out / "best" / "adapter" / "adapter_model.safetensors").is_file()
    assert [e.best for e in ends].count(True) >= 1
    run = json.loads((out / "run.json").read_text())
    assert run["best_epoch"] == best_epoch and run["best_adapter"].endswith("best/adapter")
    # TensorBoard has the validation curve
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "runs"))
    acc.Reload()
    vals = [s.value for s in acc.Scalars("loss/val")]
    assert vals == pytest.approx([e.val_loss for e in ends])


def test_resume_with_ema_is_exact(demo_root, small_tensors, tmp_path):
    kw = dict(epochs=4, save_every=2, ema_decay=0.8, val_split=0.34, gradient_accumulation=2)
    rec_a = Recorder()
    a = Trainer(train_config(demo_root, small_tensors, tmp_path / "a", **kw), sinks=[rec_a])
    assert a.run().status == "completed"
    rec_b = Recorder()
    b = Trainer(train_config(demo_root, small_tensors, tmp_path / "b",
                             resume_from=str(tmp_path / "a" / "checkpoint-epoch-2"), **kw),
                sinks=[rec_b])
    assert b.run().status == "completed"
    for x, y in zip(a.ema.shadow, b.ema.shadow):
        assert torch.equal(x, y)
    assert a.ema.updates == b.ema.updates
    fa, fb = _weights(tmp_path / "a" / "final" / "adapter"), \
        _weights(tmp_path / "b" / "final" / "adapter")
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert [e.val_loss for e in rec_a.of("epoch_end")][2:] == \
        [e.val_loss for e in rec_b.of("epoch_end")]
    assert b.tracker.best_epoch == a.tracker.best_epoch
    # adapter files get the mode any new file gets (safetensors alone leaves 0600)
    from sidestep.config.atomic import _FILE_MODE

    for folder in ("final/adapter", "best/adapter", "checkpoint-epoch-2/adapter"):
        for f in (tmp_path / "a" / folder).iterdir():
            assert f.stat().st_mode & 0o777 == _FILE_MODE, f
    # resuming without --ema-decay says the EMA is dropped
    rec_c = Recorder()
    no_ema = {k: v for k, v in kw.items() if k != "ema_decay"}
    c = Trainer(train_config(demo_root, small_tensors, tmp_path / "c",
                             resume_from=str(tmp_path / "a" / "checkpoint-epoch-2"), epochs=3,
                             **{k: v for k, v in no_ema.items() if k != "epochs"}),
                sinks=[rec_c])
    assert c.run().status == "completed"
    assert any("--ema-decay 0.0 (the run used 0.8): this run keeps no EMA" in e.message
               for e in rec_c.of("log"))


def test_early_stop_when_validation_stops_improving(demo_root, small_tensors, tmp_path):
    # A learning rate this small leaves the outputs bit-identical: the validation loss of
    # every epoch equals the first, so nothing after epoch 1 is an improvement.
    rec = Recorder()
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, epochs=10, val_split=0.34,
                       early_stop_patience=2, learning_rate=1e-30, save_every=50)
    result = Trainer(cfg, sinks=[rec]).run()
    assert result.status == "completed" and result.epoch == 3
    assert "early stop" in result.reason and "validation loss" in result.reason
    assert [e.epoch for e in rec.of("epoch_end")] == [1, 2, 3]
    assert (out / "final" / "adapter").is_dir()
    assert (out / "checkpoint-epoch-3" / "COMPLETE").is_file()
    assert json.loads((out / "best" / "best.json").read_text())["epoch"] == 1
    logged = [e.message for e in rec.of("log")]
    assert any("early stop" in m for m in logged)


def test_split_that_leaves_no_training_files_is_refused(demo_root, small_tensors, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(small_tensors.glob("*.pt"))[0], one)
    out = tmp_path / "run"
    result = Trainer(train_config(demo_root, one, out, val_split=0.5)).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert "--val-split" in result.error and not out.exists()


def test_ema_shadow_leaves_a_full_gpu(monkeypatch):
    """The shadow stays on the GPU only with room to spare (a fake free-memory reading: no GPU
    here)."""
    from sidestep.engine.ema import shadow_device

    params = [torch.nn.Parameter(torch.zeros(1000, 1000))]  # a 4 MB shadow
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (1 << 30, 80 << 30))
    assert shadow_device(params, cuda).type == "cpu"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (40 << 30, 80 << 30))
    assert shadow_device(params, cuda) == cuda
    assert shadow_device(params, torch.device("cpu")).type == "cpu"
