"""Objective pieces and schedules against hand computations and the reference."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import REFERENCE
from sidestep.config.resolve import resolve
from sidestep.engine import objective
from sidestep.engine.optim import lr_factor

GOLDEN = json.loads((REFERENCE / "golden_training.json").read_text())


@pytest.mark.parametrize("shift", ["1.0", "2.0", "3.0"])
def test_shifted_schedule_matches_upstream(shift):
    ours = objective.shifted_schedule(8, float(shift)).tolist()
    theirs = GOLDEN["turbo_inference_schedule"]["SHIFT_TIMESTEPS"][shift]
    assert ours == pytest.approx(theirs, abs=1e-7)


def test_vanilla_defaults_give_the_turbo_shift3_schedule():
    cfg = resolve("vanilla", {"checkpoint_dir": "c", "dataset_dir": "d",
                              "output_dir": "o"}).config
    sched = objective.shifted_schedule(cfg.num_inference_steps, cfg.shift)
    assert sched.tolist() == pytest.approx(
        GOLDEN["timestep_sampling"]["discrete_turbo"]["TURBO_SHIFT3_TIMESTEPS"], abs=1e-7)
    torch.manual_seed(0)
    t = objective.discrete_timesteps(1000, sched, "cpu")
    assert set(torch.unique(t).tolist()) == set(sched.tolist())


def test_logit_normal_is_max_of_two_draws():
    torch.manual_seed(99)
    t = objective.logit_normal_timesteps(2, -0.4, 1.0, "cpu")
    # upstream drew the golden 'train' case's t with the same algorithm after manual_seed(99)
    golden = json.loads((REFERENCE / "tiny" / "golden_decoder.json").read_text())
    assert t.tolist() == pytest.approx(golden["cases"]["per_case_summary"]["train"]["t"],
                                       abs=1e-6)
    torch.manual_seed(1)
    many = objective.logit_normal_timesteps(20000, -0.4, 1.0, "cpu")
    # max of two logit-normals: median above the single-draw median sigmoid(-0.4)
    assert float(many.median()) > 1 / (1 + math.exp(0.4))


def test_flow_inputs_convention():
    x0 = torch.randn(2, 5, 3)
    t = torch.tensor([0.25, 1.0])
    torch.manual_seed(3)
    xt, v = objective.flow_inputs(x0, t)
    torch.manual_seed(3)
    x1 = torch.randn_like(x0)
    assert torch.allclose(xt[0], 0.25 * x1[0] + 0.75 * x0[0])
    assert torch.allclose(xt[1], x1[1])  # t = 1 is pure noise
    assert torch.allclose(v, x1 - x0)


def test_cfg_dropout_replaces_whole_samples():
    ehs = torch.ones(64, 7, 4)
    null = torch.full((1, 1, 4), -2.0)
    torch.manual_seed(0)
    out, dropped = objective.cfg_dropout(ehs, null, 0.5)
    assert 10 < int(dropped.sum()) < 54
    assert torch.all(out[dropped] == -2.0) and torch.all(out[~dropped] == 1.0)
    same, none = objective.cfg_dropout(ehs, null, 0.0)
    assert same is ehs and not none.any()


@pytest.mark.parametrize("t,gamma,expected", [
    (0.5, 5.0, 0.25),            # SNR 1 -> min(1, 5) * 0.25
    (0.1, 5.0, 5.0 * 0.01),      # SNR 81 -> clamped to gamma: 5 * 0.1^2
    (0.9, 5.0, (0.1 / 0.9) ** 2 * 0.81),  # SNR 0.0123 -> (1-t)^2 = 0.01
    (0.2, 100.0, 0.64),          # SNR 16 < gamma -> (1-t)^2
])
def test_min_snr_weights_by_hand(t, gamma, expected):
    w = objective.min_snr_weights(torch.tensor([t]), gamma)
    assert float(w) == pytest.approx(expected, rel=1e-6)


def test_variant_cfg_defaults():
    base = {"checkpoint_dir": "c", "dataset_dir": "d", "output_dir": "o"}
    turbo = resolve("fixed", base).config
    assert (turbo.cfg_ratio, turbo.shift, turbo.num_inference_steps) == (0.0, 3.0, 8)
    b = resolve("fixed", {**base, "model_variant": "base"}).config
    assert (b.cfg_ratio, b.shift, b.num_inference_steps) == (0.15, 1.0, 50)
    explicit = resolve("fixed", {**base, "cfg_ratio": 0.3}).config
    assert explicit.cfg_ratio == 0.3


@pytest.mark.parametrize("kind,step,expected", [
    ("constant", 0, 0.1), ("constant", 5, 0.55), ("constant", 10, 1.0), ("constant", 99, 1.0),
    ("constant_with_warmup", 5, 0.55),
    ("linear", 10, 1.0), ("linear", 60, 0.5), ("linear", 110, 0.0),
    ("cosine", 10, 1.0), ("cosine", 60, 0.01 + 0.99 * 0.5), ("cosine", 110, 0.01),
    ("cosine_restarts", 10, 1.0), ("cosine_restarts", 110, 0.01),
])
def test_lr_factor_by_hand(kind, step, expected):
    assert lr_factor(kind, step, warmup=10, total=110) == pytest.approx(expected, abs=1e-9)


def test_cosine_restarts_restart():
    total, warm = 310, 10
    vals = [lr_factor("cosine_restarts", s, warm, total) for s in range(warm, total)]
    # three cycles: the factor jumps back up twice
    jumps = sum(1 for a, b in zip(vals, vals[1:]) if b > a + 0.5)
    assert jumps == 2
