"""``--resume-from`` continues a run with its own settings: the checkpoint's, under any flag
given again (each difference named). Before, the flags' defaults applied: a run started with
lr 3e-4 and 10 epochs went on at 1e-4 for 100, silently."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.cli import main
from sidestep.config.resume import carried_settings, changed_on_resume


@pytest.fixture(scope="module")
def run_folder(demo_root, small_tensors, tmp_path_factory):
    """A finished two-epoch run with settings far from the defaults."""
    from sidestep.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("resume_settings") / "run"
    config = train_config(demo_root, small_tensors, out, epochs=2, learning_rate=3e-4,
                          warmup_steps=3, rank=8, alpha=16, seed=7)
    result = Trainer(config, [Recorder()]).run()
    assert result.status == "completed", result.error
    return out


def test_what_is_carried():
    saved = {"adapter_type": "lora", "rank": 8, "lokr_factor": 4, "output_dir": "/old",
             "resume_from": "/old/checkpoint-epoch-1", "detach": True, "preprocess": True,
             "learning_rate": 3e-4, "target_modules": ["q_proj", "v_proj"], "epochs": "x"}
    carried = carried_settings("fixed", saved)
    # a setting of another adapter type, this attempt's own, and a value that no longer parses
    # are left out; lists come back as the schema's tuples
    assert carried == {"adapter_type": "lora", "rank": 8, "learning_rate": 3e-4,
                       "target_modules": ("q_proj", "v_proj")}
    lines = changed_on_resume(carried, {"rank": 8, "learning_rate": 1e-3, "seed": 1})
    assert lines == ["resuming with --learning-rate 0.001 (the run used 0.0003): the "
                     "learning-rate schedule is recomputed, so the run no longer follows its "
                     "first course"]


def _print_config(argv, capsys) -> tuple[int, dict, str]:
    import json

    code = main(["--plain", "fixed", *argv, "--print-config"])
    shown = capsys.readouterr()
    assert "Traceback" not in shown.err
    return code, (json.loads(shown.out) if code == 0 else {}), shown.err


def test_resume_from_alone_takes_the_runs_settings(run_folder, capsys):
    ckpt = run_folder / "checkpoint-epoch-1"
    code, config, err = _print_config(["--resume-from", str(ckpt)], capsys)
    assert code == 0, err
    assert (config["learning_rate"], config["warmup_steps"], config["rank"], config["alpha"],
            config["seed"], config["epochs"]) == (3e-4, 3, 8, 16, 7, 2)
    assert config["output_dir"] == str(run_folder)
    assert "warning" not in err

    code, config, err = _print_config(["--resume-from", str(ckpt), "--epochs", "3", "-r", "8",
                                       "--learning-rate", "1e-3"], capsys)
    assert code == 0 and (config["epochs"], config["learning_rate"]) == (3, 1e-3)
    assert "resuming with --epochs 3 (the run used 2)" in err
    assert "resuming with --learning-rate 0.001 (the run used 0.0003)" in err
    assert "--rank" not in err  # given again with the run's value: nothing to say


def test_a_resumed_run_ends_where_the_uninterrupted_one_did(run_folder, tmp_path, capsys):
    """`sidestep fixed --resume-from <run>/checkpoint-epoch-1`, nothing else: epoch 2 is trained
    again with the run's settings, and the adapter equals the one the run made."""
    from safetensors.torch import load_file

    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    shutil.rmtree(copy / "final")
    code = main(["--plain", "-y", "fixed", "--resume-from", str(copy / "checkpoint-epoch-1")])
    err = capsys.readouterr().err
    assert code == 0, err
    name = "adapter_model.safetensors"
    before = load_file(run_folder / "final" / "adapter" / name)
    after = load_file(copy / "final" / "adapter" / name)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
