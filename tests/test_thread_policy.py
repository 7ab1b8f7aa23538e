"""The CPU thread policy (sidestep/cpu_threads.py): its decisions, and that the trainer applies
it for the run only, headless or with the app in the process."""

from __future__ import annotations

import pytest
import torch

from conftest import train_config
from sidestep import cpu_threads
from sidestep.cpu_threads import APP_LEAVES_A_CORE_FROM, training_threads


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
def test_headless_runs_use_every_core(cores):
    assert training_threads(cores, with_app=False) == cores


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 16, APP_LEAVES_A_CORE_FROM - 1])
def test_with_the_app_most_machines_still_use_every_core(cores):
    """On 2 cores leaving one to the app made the run 1.5x slower, for a UI that needs ~2 % of
    a core (bench/thread_policy.py)."""
    assert training_threads(cores, with_app=True) == cores


@pytest.mark.parametrize("cores", [APP_LEAVES_A_CORE_FROM, 32, 64])
def test_with_the_app_large_machines_leave_it_a_core(cores):
    assert training_threads(cores, with_app=True) == cores - 1


def test_never_below_one_thread():
    assert training_threads(0, with_app=True) == training_threads(0, with_app=False) == 1


class ThreadProbe:
    """torch's intra-op threads at each step, read on the training thread."""

    def __init__(self):
        self.seen: list[int] = []

    def handle(self, event):
        if event.type == "step":
            self.seen.append(torch.get_num_threads())

    def close(self):
        pass


@pytest.fixture
def four_threads_three_cores(monkeypatch):
    """torch at 4 threads (its default, say) on a process allowed 3 cores; the app leaves a
    core from 3 up, so the two policies differ here."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 3)
    monkeypatch.setattr(cpu_threads, "APP_LEAVES_A_CORE_FROM", 3)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("with_app, expected", [(False, 3), (True, 2)])
def test_the_trainer_applies_the_policy_and_restores(demo_root, small_tensors, tmp_path,
                                                     four_threads_three_cores, with_app,
                                                     expected):
    from sidestep.engine.trainer import Trainer

    probe = ThreadProbe()
    cfg = train_config(demo_root, small_tensors, tmp_path / "run", epochs=1)
    result = Trainer(cfg, [probe], with_app=with_app).run()
    assert result.status == "completed", result.error
    assert probe.seen and set(probe.seen) == {expected}
    assert torch.get_num_threads() == 4  # given back when the run ends


def test_the_app_runner_tells_the_trainer(demo_root, small_tensors, tmp_path):
    from sidestep.engine.control import Control
    from sidestep.tui.runner import default_engine

    cfg = train_config(demo_root, small_tensors, tmp_path / "run", epochs=1)
    assert default_engine(cfg, [], Control()).with_app is True


@pytest.mark.parametrize("with_app, expected", [(False, 3), (True, 2)])
def test_the_estimate_applies_the_policy_and_restores(demo_root, small_tensors,
                                                      four_threads_three_cores, with_app,
                                                      expected):
    from sidestep.config.resolve import resolve
    from sidestep.engine.estimate import estimate

    cfg = resolve("estimate", dict(checkpoint_dir=str(demo_root / "checkpoints"),
                                   dataset_dir=str(small_tensors), num_workers=0,
                                   estimate_batches=2, top_k=3, device="cpu")).config
    seen = []
    result = estimate(cfg, with_app=with_app,
                      progress=lambda e: seen.append(torch.get_num_threads())
                      if e.phase == "batch" else None)
    assert result.batches == 2 and set(seen) == {expected}
    assert torch.get_num_threads() == 4
