"""Every flag of spec 003 exists on its subcommand with the spec's default (table-driven)."""

from __future__ import annotations

import argparse

import pytest

from sidestep.cli.parser import build_parser
from sidestep.config import schema
from sidestep.config.resolve import resolve

REQ = "<required>"
# (flag, default) per spec 003, transcribed from its tables. Variant-dependent defaults are
# checked separately; here shift/steps are the turbo values and cfg-ratio the base value, as
# the spec's own table lists them.
FIXED = [
    ("--checkpoint-dir", REQ), ("--model-variant", "turbo"), ("--base-model", None),
    ("--device", "auto"), ("--precision", "auto"),
    ("--dataset-dir", REQ), ("--num-workers", 4), ("--pin-memory", True),
    ("--prefetch-factor", 2), ("--persistent-workers", True),
    ("--lr", 1e-4), ("--learning-rate", 1e-4), ("--batch-size", 1),
    ("--gradient-accumulation", 4), ("--epochs", 100), ("--warmup-steps", 100),
    ("--weight-decay", 0.01), ("--max-grad-norm", 1.0), ("--seed", 42),
    ("--chunk-duration", None), ("--shift", 3.0), ("--num-inference-steps", 8),
    ("--optimizer-type", "adamw"), ("--scheduler-type", "cosine"),
    ("--gradient-checkpointing", True), ("--offload-encoder", False),
    ("--adapter-type", "lora"),
    ("--rank", 64), ("-r", 64), ("--alpha", 128), ("--dropout", 0.1),
    ("--target-modules", ("q_proj", "k_proj", "v_proj", "o_proj")), ("--bias", "none"),
    ("--attention-type", "both"), ("--self-target-modules", None),
    ("--cross-target-modules", None),
    ("--lokr-linear-dim", 64), ("--lokr-linear-alpha", 128), ("--lokr-factor", -1),
    ("--lokr-decompose-both", False), ("--lokr-use-tucker", False),
    ("--lokr-use-scalar", False), ("--lokr-weight-decompose", False),
    ("--output-dir", REQ), ("--save-every", 10), ("--resume-from", None),
    ("--log-dir", None), ("--log-every", 10), ("--log-heavy-every", 50),
    ("--sample-every-n-epochs", 0),
    ("--preprocess", False), ("--audio-dir", None), ("--dataset-json", None),
    ("--tensor-output", None), ("--max-duration", 0), ("--normalize", "none"),
    ("--cfg-ratio", 0.15), ("--loss-weighting", "none"), ("--snr-gamma", 5.0),
]
SELECTIVE = FIXED + [
    ("--module-config", None), ("--auto-estimate", False), ("--estimate-batches", None),
    ("--top-k", 16), ("--granularity", "module"),
]
ESTIMATE = [
    ("--checkpoint-dir", REQ), ("--model-variant", "turbo"), ("--base-model", None),
    ("--device", "auto"), ("--precision", "auto"), ("--dataset-dir", REQ),
    ("--batch-size", 1), ("--num-workers", 4), ("--seed", 42), ("--estimate-batches", None),
    ("--top-k", 16), ("--granularity", "module"), ("--output", None),
]
COMPARE = [("--configs", REQ)]
BUILD = [
    ("--input", REQ), ("-i", REQ), ("--tag", ""), ("--tag-position", "prepend"),
    ("--genre-ratio", 0), ("--name", "local_dataset"), ("--output", None),
]
WINDOWS = {"--num-workers": 0, "--prefetch-factor": 0, "--persistent-workers": False}
CASES = ([("fixed", f, d) for f, d in FIXED] + [("selective", f, d) for f, d in SELECTIVE]
         + [("estimate", f, d) for f, d in ESTIMATE]
         + [("compare-configs", f, d) for f, d in COMPARE]
         + [("build-dataset", f, d) for f, d in BUILD])


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _action(command: str, flag: str) -> argparse.Action:
    for action in _subparser(command)._actions:
        if flag in action.option_strings:
            return action
    raise AssertionError(f"`{command}` has no flag {flag}")


def _setting_default(command: str, dest: str, *, family="base", windows=False):
    return schema.BY_NAME[dest].default_for(windows=windows, family=family)


@pytest.mark.parametrize("command,flag,default", CASES,
                         ids=[f"{c}{f}" for c, f, _ in CASES])
def test_flag_exists_with_spec_default(command, flag, default):
    action = _action(command, flag)
    setting = schema.BY_NAME[action.dest]
    if default == REQ:
        assert setting.required
        return
    expected = default
    if setting.variant_defaults:  # the spec's table lists turbo shift/steps and base cfg
        family = "base" if setting.name == "cfg_ratio" else "turbo"
        assert _setting_default(command, setting.name, family=family) == expected
    else:
        assert setting.default == expected, (flag, setting.default)
    if flag in WINDOWS:
        assert _setting_default(command, setting.name, windows=True) == WINDOWS[flag]


@pytest.mark.parametrize("flag", ["--pin-memory", "--gradient-checkpointing",
                                  "--offload-encoder", "--lokr-use-tucker", "--preprocess"])
def test_booleans_have_no_form(flag):
    action = _action("fixed", flag)
    assert "--no-" + flag[2:] in action.option_strings


def test_vanilla_takes_fixed_flags_except_cfg_dropout():
    for flag, _ in FIXED:
        if flag == "--cfg-ratio":
            with pytest.raises(AssertionError):
                _action("vanilla", flag)
        else:
            _action("vanilla", flag)


def test_resolved_defaults_match_the_table_on_every_platform():
    """The parser default path (nothing typed) gives the spec's values through ``resolve``."""
    req = {"checkpoint_dir": "c", "dataset_dir": "d", "output_dir": "o"}
    for windows in (False, True):
        cfg = resolve("fixed", req, windows=windows).config
        for flag, default in FIXED:
            dest = _action("fixed", flag).dest
            if default == REQ or dest in ("cfg_ratio", "log_dir"):
                continue
            expected = WINDOWS.get(flag, default) if windows else default
            assert getattr(cfg, dest) == expected, (flag, windows)
        assert cfg.cfg_ratio == 0.0  # turbo: CFG dropout off
        assert cfg.log_dir == "o/runs"
