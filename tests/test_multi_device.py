"""Data parallel (issue #19): ranks launched by Lightning Fabric, on the CPU with gloo here.

The slow tests run two processes on the tiny demo model; the GPU test needs two CUDA devices.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.engine.control import Control
from sidestep.engine.trainer import Trainer

# Equal-length 25-frame windows (1 s), no LoRA dropout: one process with batch 2 and two ranks
# with batch 1 see the same tensors and, with per-song draws, the same noise.
SAME = dict(epochs=1, gradient_accumulation=1, chunk_duration=1, dropout=0.0)


def _adapter(run_dir):
    from sidestep.engine.adapters import read_adapter_dir

    kind, weights, _ = read_adapter_dir(run_dir / "final" / "adapter")
    return kind, weights


def test_each_rank_takes_its_share_of_the_global_batches():
    from sidestep.data.tensors import EpochBatches

    one = EpochBatches(7, 4, seed=3)
    ranks = [EpochBatches(7, 2, seed=3, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == one.batches_per_epoch == 2
    for epoch in range(3):
        merged = [a + b for a, b in zip(*(r.batches(epoch) for r in ranks))]
        assert merged[0] == one.batches(epoch)[0]
        # the short last batch (3 songs) is split 2 + 1: nothing lost, nothing doubled
        assert merged[1] == one.batches(epoch)[1]
    # fewer songs than ranks in the last batch: the empty share repeats its first song
    tiny = [EpochBatches(3, 1, seed=0, rank=r, world=2).batches(0) for r in range(2)]
    assert tiny[1][1] == tiny[0][1]


@pytest.mark.parametrize("devices, device, message", [
    ("0", "cpu", "is not a device count"),
    ("two", "cpu", "is not a device count"),
    ("2", "cuda:1", "use --device cuda"),
])
def test_bad_devices_name_the_flag(demo_root, small_tensors, tmp_path, devices, device, message):
    from sidestep.config.resolve import ConfigError

    with pytest.raises(ConfigError) as err:
        train_config(demo_root, small_tensors, tmp_path, devices=devices, device=device)
    assert "--devices" in str(err.value) and message in str(err.value)


def test_more_cpu_ranks_than_cores_is_refused_before_anything_starts(demo_root, small_tensors,
                                                                   tmp_path):
    from sidestep.cpu_threads import usable_cores

    many = str(usable_cores() + 1)
    result = Trainer(train_config(demo_root, small_tensors, tmp_path / "o", devices=many)).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert f"--devices {many}" in result.error and "cores" in result.error
    assert not (tmp_path / "o").exists()


def test_num_nodes_without_torchrun_is_an_input_error(demo_root, small_tensors, tmp_path,
                                                      monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    result = Trainer(train_config(demo_root, small_tensors, tmp_path / "o", num_nodes=2)).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert "--num-nodes 2" in result.error and "torchrun" in result.error
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_ranks_train_like_one_process_with_twice_the_batch(demo_root, small_tensors,
                                                               tmp_path):
    rec = Recorder()
    two = train_config(demo_root, small_tensors, tmp_path / "two", devices="2", batch_size=1,
                       **SAME)
    result = Trainer(two, [rec]).run()
    assert result.status == "completed", result.error
    started = rec.of("run_started")
    assert len(started) == 1 and started[0].world_size == 2
    assert started[0].steps_per_epoch == 3  # 6 songs, 2 per global batch
    assert len(rec.of("step")) == 3 and len(rec.of("run_finished")) == 1
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "completed"
    kind, weights = _adapter(tmp_path / "two")
    assert kind == "lora" and not any("module." in k for k in weights)
    names = sorted(p.name for p in (tmp_path / "two" / "final" / "adapter").iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(names)
    assert len(list(tmp_path.glob("two/checkpoint-*"))) == 1  # rank 0 alone wrote it

    one = train_config(demo_root, small_tensors, tmp_path / "one", devices="1",
                       strategy="ddp", batch_size=2, **SAME)
    assert Trainer(one).run().status == "completed"
    _, expected = _adapter(tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "one" / "final" / "adapter").iterdir()) == names
    assert expected.keys() == weights.keys()
    # The gradients agree to float32 rounding (a mean of two means vs one mean of two); AdamW's
    # early steps are sign-like, so an element whose gradient is near zero may move by a
    # fraction of the learning rate (1e-3) more or less: a tenth of a step is the bound.
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=0, atol=1e-4)
    # and the training really moved the adapter
    assert any(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)


class StopAt:
    def __init__(self, control, n):
        self.control, self.n = control, n

    def handle(self, event):
        if event.type == "step" and event.step >= self.n:
            self.control.request_stop("test")

    def close(self):
        pass


@pytest.mark.slow
def test_two_ranks_stop_and_resume_exactly(demo_root, small_tensors, tmp_path):
    kw = dict(devices="2", epochs=2, gradient_accumulation=2, dropout=0.1, save_every=5)
    assert Trainer(train_config(demo_root, small_tensors, tmp_path / "a", **kw)).run() \
        .status == "completed"
    _, expected = _adapter(tmp_path / "a")

    control = Control()
    stopped = Trainer(train_config(demo_root, small_tensors, tmp_path / "b", **kw),
                      [StopAt(control, 1)], control).run()
    assert stopped.status == "stopped" and stopped.checkpoint_path, stopped.error
    state = torch.load(os.path.join(stopped.checkpoint_path, "training_state.pt"),
                       weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    result = Trainer(train_config(demo_root, small_tensors, tmp_path / "b",
                                  resume_from=stopped.checkpoint_path, **kw)).run()
    assert result.status == "completed", result.error
    _, weights = _adapter(tmp_path / "b")
    for key in expected:
        assert torch.equal(weights[key], expected[key]), key


class SaveNowThenKillRank1:
    """From the launching process, as the app's "save now" does, after step 1; once that
    checkpoint is on disk, the second training process (spawned after rank 0) is killed the
    way the out-of-memory killer would."""

    def __init__(self, control):
        self.control, self.killed_at = control, None

    def handle(self, event):
        import multiprocessing

        if event.type == "step" and event.step == 1:
            self.control.save_now()
        if event.type == "checkpoint" and event.kind == "step" and self.killed_at is None:
            ranks = sorted(p.pid for p in multiprocessing.active_children())
            os.kill(ranks[-1], signal.SIGKILL)
            self.killed_at = time.monotonic()

    def close(self):
        pass


@pytest.mark.slow
def test_save_now_reaches_the_ranks_and_a_killed_rank_ends_the_run_clearly(
        demo_root, small_tensors, tmp_path):
    """(Pausing two ranks from the app: test_tui.py.)"""
    control, rec = Control(), Recorder()
    killer = SaveNowThenKillRank1(control)
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, devices="2", epochs=50, save_every=100)
    result = Trainer(cfg, [killer, rec], control).run()
    # save now: one checkpoint (where rank 0 got the word: events and commands cross
    # processes while the ranks train on), complete, written once, with both ranks' state
    saved = [e for e in rec.of("checkpoint") if e.kind != "best"]
    assert len(saved) == 1 and saved[0].kind == "step" and saved[0].step >= 1, saved
    assert (Path(saved[0].path) / "COMPLETE").is_file()
    state = torch.load(os.path.join(saved[0].path, "training_state.pt"), weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # the killed rank: a prompt end (not the group's 10-minute timeout) that names the cause
    # and where to resume, recorded in the run folder although rank 0 could not write it
    assert killer.killed_at is not None
    assert time.monotonic() - killer.killed_at < 60
    assert result.status == "failed" and result.error_kind == "runtime"
    assert result.error.startswith("training process 1 of 2 was killed (SIGKILL)"), result.error
    assert result.checkpoint_path == saved[0].path
    assert "sidestep-ranks-" in result.error  # where the dead process's own output went
    assert f"resume from its last checkpoint, {saved[0].path}" in result.error
    assert rec.of("run_finished") == [result]  # one end, the clear one
    info = json.loads((out / "run.json").read_text())
    assert (info["status"], info["error"]) == ("failed", result.error)
    assert info["last_step"] == result.step >= saved[0].step
    ends = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
            if '"run_finished"' in line]
    assert [e["error"] for e in ends] == [result.error]


def test_rank_failures_read_as_sentences():
    from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

    from sidestep.engine.distributed import _rank_failure

    raised = ProcessRaisedException(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call "
        "last):\n  File ...\nRuntimeError: rank 1: CUDA out of memory. Tried to allocate 2 GiB\n",
        1, 4242)
    assert _rank_failure(raised, 4) == (1, "training process 1 of 4 failed: CUDA out of memory. "
                                           "Tried to allocate 2 GiB")
    exited = ProcessExitedException("process 3 terminated with exit code 7", 3, 4243, 7)
    assert _rank_failure(exited, 4) == (3, "training process 3 of 4 exited with code 7")
    killed = ProcessExitedException("process 0 terminated with signal SIGSEGV", 0, 4244, -11,
                                    "SIGSEGV")
    assert _rank_failure(killed, 2) == (0, "training process 0 of 2 was killed (SIGSEGV)")
    assert _rank_failure(RuntimeError("boom"), 2) == (None, "a training process failed: boom")


@pytest.mark.slow
def test_torchrun_ranks_join_one_run_and_rank_0_alone_prints(demo_root, small_tensors,
                                                            tmp_path):
    """The README's torchrun command, one machine, two CPU processes: they join one process
    group (no launching), write one run folder and adapter, and only rank 0 prints."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "sidestep", "--yes", "--plain", "fixed", "--checkpoint-dir",
           str(demo_root / "checkpoints"), "--dataset-dir", str(small_tensors), "--output-dir",
           str(out), "--device", "cpu", "--devices", "2", "--num-workers", "0", "--epochs", "1",
           "--rank", "4", "--alpha", "8"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE", "RANK")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert (info["status"], info["world_size"]) == ("completed", 2)
    assert (out / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert "rank 0 of 2 (gloo backend)" in (out / "sidestep.log").read_text()
    assert proc.stdout.count("Side-Step training") == 1 and proc.stdout.count("done in") == 1
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigterm_saves_one_complete_checkpoint(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sidestep", "--yes", "fixed", "--checkpoint-dir",
           str(demo_root / "checkpoints"), "--dataset-dir", str(small_tensors), "--output-dir",
           str(out), "--device", "cpu", "--devices", "2", "--num-workers", "0", "--epochs",
           "50", "--save-every", "100", "--rank", "4", "--alpha", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if events.is_file() and '"type": "step"' in events.read_text():
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    checkpoints = [p for p in out.glob("checkpoint-*") if (p / "COMPLETE").is_file()]
    assert len(checkpoints) == 1, err.decode()[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped" and info["world_size"] == 2


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_two_gpus_nccl_smoke(demo_root, small_tensors, tmp_path):
    rec = Recorder()
    cfg = train_config(demo_root, small_tensors, tmp_path / "g", device="cuda", devices="2",
                       epochs=1)
    result = Trainer(cfg, [rec]).run()
    assert result.status == "completed", result.error
    assert rec.of("run_started")[0].world_size == 2
    assert any("nccl" in e.message for e in rec.of("log"))
