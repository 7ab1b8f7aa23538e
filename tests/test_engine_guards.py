"""Guards: NaN losses, out-of-memory, bad data files, broken and slow sinks."""

from __future__ import annotations

import json

import pickle
import threading
import time

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.data.tensors import DataError, list_files, validate
from sidestep.engine.trainer import MAX_NAN_STREAK, MAX_OOM_STREAK, Trainer


def _with_hook(cfg, hook, sinks=()):
    rec = Recorder()
    trainer = Trainer(cfg, [rec, *sinks])
    trainer.setup()
    trainer.adapted.register_forward_hook(hook)
    return trainer, rec


def test_a_few_nan_batches_are_skipped(demo_root, small_tensors, tmp_path):
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] in (2, 3):
            return (output[0] * float("nan"),) + tuple(output[1:])
        return output

    trainer, rec = _with_hook(train_config(demo_root, small_tensors, tmp_path / "n", epochs=1),
                              hook)
    result = trainer.run()
    assert result.status == "completed", result.error
    problems = rec.of("problem")
    assert [p.kind for p in problems] == ["nan", "nan"]
    assert all(p.files and p.files[0].endswith(".pt") for p in problems)
    assert all(e.loss == e.loss for e in rec.of("step"))  # no NaN reaches the metrics


def test_persistent_nan_stops_saves_and_fails(demo_root, small_tensors, tmp_path):
    def hook(module, args, output):
        return (output[0] * float("nan"),) + tuple(output[1:])

    trainer, rec = _with_hook(train_config(demo_root, small_tensors, tmp_path / "nan",
                                           epochs=3, gradient_accumulation=1), hook)
    result = trainer.run()
    assert result.status == "failed" and result.error_kind == "runtime"
    fatal = [p for p in rec.of("problem") if p.fatal]
    assert len(fatal) == 1 and fatal[0].kind == "nan" and fatal[0].files
    assert len([p for p in rec.of("problem") if p.kind == "nan"]) == MAX_NAN_STREAK + 1
    assert result.checkpoint_path and (tmp_path / "nan").exists()
    from sidestep.engine.checkpointing import read_state

    state = read_state(result.checkpoint_path)
    assert state["position"] == MAX_NAN_STREAK - 1  # resumes at the batch that failed last
    assert not rec.of("step")  # no optimizer step was taken on NaN gradients
    assert rec.of("run_finished")[0].status == "failed"


def test_oom_skips_then_recovers(demo_root, small_tensors, tmp_path):
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return output

    trainer, rec = _with_hook(train_config(demo_root, small_tensors, tmp_path / "o", epochs=1),
                              hook)
    result = trainer.run()
    assert result.status == "completed"
    oom = [p for p in rec.of("problem") if p.kind == "oom"]
    assert len(oom) == 1 and not oom[0].fatal and "batch" in oom[0].remedy


def test_repeated_oom_stops_with_a_remedy(demo_root, small_tensors, tmp_path):
    def hook(module, args, output):
        raise torch.OutOfMemoryError("CUDA out of memory")

    trainer, rec = _with_hook(train_config(demo_root, small_tensors, tmp_path / "oo"), hook)
    result = trainer.run()
    assert result.status == "failed" and result.error_kind == "runtime"
    assert "--batch-size" in result.error and "vram_8gb" in result.error
    assert len([p for p in rec.of("problem") if p.kind == "oom"]) == MAX_OOM_STREAK + 1
    assert result.checkpoint_path


def test_broken_sink_does_not_stop_training(demo_root, small_tensors, tmp_path):
    class Broken:
        def handle(self, event):
            raise RuntimeError("disk full")

        def close(self):
            pass

    rec = Recorder()
    result = Trainer(train_config(demo_root, small_tensors, tmp_path / "s", epochs=1),
                     [Broken(), rec]).run()
    assert result.status == "completed"
    assert any(p.kind == "sink" for p in rec.of("problem"))
    assert (tmp_path / "s" / "events.jsonl").read_text().count('"run_finished"') == 1


def test_slow_sink_does_not_stall_training(demo_root, small_tensors, tmp_path):
    release = threading.Event()

    class Stuck:
        def handle(self, event):
            if event.type == "step":
                release.wait(300)

        def close(self):
            pass

    cfg = train_config(demo_root, small_tensors, tmp_path / "slow", epochs=2)
    trainer = Trainer(cfg, [Stuck()])
    runner = threading.Thread(target=trainer.run)
    runner.start()
    deadline = time.monotonic() + 240
    while trainer.progress.epoch < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # every step is done while the sink is still stuck on the first one
    assert trainer.progress.epoch == 2 and not release.is_set()
    release.set()
    runner.join(120)
    assert not runner.is_alive()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_data_files_are_named(demo_root, tmp_path):
    good = sorted((demo_root / "tensors").glob("*.pt"))[0]
    record = torch.load(good, weights_only=True)

    def write(name, obj):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    cases = {
        "missing_key.pt": ({k: v for k, v in record.items() if k != "context_latents"},
                           "missing context_latents"),
        "nan.pt": ({**record, "target_latents": record["target_latents"] * float("nan")},
                   "NaN"),
        "shape.pt": ({**record, "target_latents": record["target_latents"][:, :10]},
                     "target_latents has shape"),
        "cond.pt": ({**record, "encoder_hidden_states": torch.zeros(5, 7),
                     "encoder_attention_mask": torch.ones(5)}, "different model size"),
        "ctx.pt": ({**record, "context_latents": record["context_latents"][:-1]},
                   "context_latents has shape"),
        "intlat.pt": ({**record, "target_latents": record["target_latents"].long()},
                      "floating-point"),
        "list.pt": ([1, 2, 3], "expected a dict"),
    }
    for name, (obj, needle) in cases.items():
        path = write(name, obj)
        with pytest.raises(DataError) as exc:
            validate([path], 64, 128)
        assert name in str(exc.value) and needle in str(exc.value), str(exc.value)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(DataError, match="evil.pt.*cannot be loaded safely"):
        validate([evil], 64, 128)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(DataError, match="trunc.pt"):
        validate([truncated], 64, 128)
    with pytest.raises(DataError, match="no .pt files"):
        list_files(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)
    with pytest.raises(DataError, match="not found"):
        list_files(tmp_path / "nope")


def test_one_bad_file_fails_the_run_before_training(demo_root, small_tensors, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_tensors, data)
    torch.save({"target_latents": torch.zeros(3, 64)}, data / "broken_song.pt")
    rec = Recorder()
    result = Trainer(train_config(demo_root, data, tmp_path / "run"), [rec]).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert "broken_song.pt" in result.error
    assert not rec.of("step")


def test_manifest_entries_are_found_after_a_move(demo_root, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(demo_root / "tensors", moved)
    files = list_files(moved)  # the manifest lists the old absolute paths
    assert len(files) == 12 and all(f.parent == moved or f.exists() for f in files)


def test_a_folder_that_stops_taking_writes_fails_with_the_file_and_the_resume(
        demo_root, small_tensors, tmp_path, monkeypatch):
    """The run folder turns read-only (or the disk fills) after the first checkpoint: the run
    fails naming the file, why, and the checkpoint to resume from, not a bare
    'PermissionError: [Errno 1] ...'."""
    from sidestep.engine import checkpointing

    real, calls = checkpointing.save, []

    def save(run_dir, name, *args, **kw):
        calls.append(name)
        if len(calls) > 1:
            raise PermissionError(1, "Operation not permitted", str(run_dir / f".{name}.tmp"))
        return real(run_dir, name, *args, **kw)

    monkeypatch.setattr(checkpointing, "save", save)
    out = tmp_path / "run"
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=3)).run()
    assert result.status == "failed"
    first = out / calls[0]
    assert result.error == (f"cannot read or write {out / ('.' + calls[1] + '.tmp')}: "
                            f"Operation not permitted; fix that (free space, permissions), "
                            f"then resume from {first}")
    # the result and run.json say where it resumes, as for a stopped run, and the log how
    assert result.checkpoint_path == str(first)
    assert f"resume with: sidestep fixed --resume-from {first}" in \
        (out / "sidestep.log").read_text()
    assert json.loads((out / "run.json").read_text())["checkpoint_path"] == str(first)


def test_a_run_that_fails_mid_way_names_its_newest_checkpoint(demo_root, small_tensors,
                                                              tmp_path, monkeypatch):
    """Any error after a checkpoint (here one raised by the optimizer at step 5): run.json's
    checkpoint_path was null, so History and the log had no resume for it."""
    import torch

    real_step, steps = torch.optim.AdamW.step, []

    def step(self, *args, **kw):
        steps.append(1)
        if len(steps) == 5:
            raise RuntimeError("the device fell off the bus")
        return real_step(self, *args, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    out = tmp_path / "run"
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=4)).run()
    assert result.status == "failed" and "fell off the bus" in result.error
    saved = sorted(out.glob("checkpoint-*"))
    assert saved and result.checkpoint_path == str(saved[-1])
    assert json.loads((out / "run.json").read_text())["checkpoint_path"] == str(saved[-1])
    assert f"resume with: sidestep fixed --resume-from {saved[-1]}" in \
        (out / "sidestep.log").read_text()


def test_a_lycoris_notice_is_said_with_our_flags():
    """LyCORIS's 'lora_dim 64 is too large for dim=128 and factor=-1' names its own argument;
    the user set --lokr-linear-dim."""
    from sidestep.engine.sinks import in_our_words

    said = in_our_words("LyCORIS", "lora_dim 64 is too large for dim=128 and factor=-1, using "
                                   "full matrix mode.")
    assert said.startswith("--lokr-linear-dim 64 is large for a 128-wide layer "
                           "(--lokr-factor -1): LyCORIS trains")
    assert "lora_dim" not in said
    assert in_our_words("other", "lora_dim 64 is too large") == "lora_dim 64 is too large"
