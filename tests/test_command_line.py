"""A resolved config written back as a command line resolves to the same config (the app starts
detached runs this way)."""

from __future__ import annotations

import pytest

from conftest import train_config
from sidestep.cli.parser import build_parser, explicit_values
from sidestep.config import schema
from sidestep.config.command_line import command_args
from sidestep.config.resolve import resolve


@pytest.mark.parametrize("mode,extra", [
    ("fixed", dict(ema_decay=0.9, val_split=0.25, sample_prompt="warm piano, 90 bpm",
                   target_modules=("q_proj", "v_proj"), gradient_checkpointing=False,
                   chunk_duration=30, detach=True)),
    ("vanilla", dict(adapter_type="lokr", lokr_linear_dim=4, lokr_linear_alpha=8)),
])
def test_round_trip(demo_root, small_tensors, tmp_path, mode, extra):
    cfg = train_config(demo_root, small_tensors, tmp_path / "run", mode=mode, **extra)
    args = command_args(mode, cfg.to_dict())
    assert args[0] == mode and "--detach" not in args
    ns = build_parser().parse_args(args)
    again = resolve(mode, explicit_values(ns, schema.settings_for(mode))).config
    assert again.replace(detach=cfg.detach) == cfg
