"""``--resume-from`` continues a run with its own settings: the checkpoint's, under any flag
given again (each difference named). Before, the flags' defaults applied: a run started with
lr 3e-4 and 10 epochs went on at 1e-4 for 100, silently."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.cli import main
from sidestep.config.resume import (carried_settings, changed_on_resume, refused_on_resume,
                                     resume_refusal)
from test_run_folder import tree_hash


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
    # in its own folder it would overwrite checkpoint-epoch-2 and final/: refused, untouched
    code = main(["--plain", "-y", "fixed", "--resume-from", str(copy / "checkpoint-epoch-1")])
    assert code == 2 and "went on past it" in capsys.readouterr().err
    assert (copy / "final").is_dir() and sorted(p.name for p in copy.iterdir()) == \
        sorted(p.name for p in run_folder.iterdir())
    branch = tmp_path / "branch"
    code = main(["--plain", "-y", "fixed", "--resume-from", str(copy / "checkpoint-epoch-1"),
                 "--output-dir", str(branch)])
    err = capsys.readouterr().err
    assert code == 0, err
    name = "adapter_model.safetensors"
    before = load_file(run_folder / "final" / "adapter" / name)
    after = load_file(branch / "final" / "adapter" / name)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_what_a_resume_cannot_change():
    saved = {"adapter_type": "lora", "rank": 8, "alpha": 16, "dropout": 0.1, "batch_size": 1,
             "gradient_accumulation": 2, "optimizer_type": "adamw", "lokr_factor": 4,
             "target_modules": ["q_proj", "v_proj"]}
    same = {"adapter_type": "lora", "rank": 8, "alpha": 16.0, "dropout": 0.0, "batch_size": 1,
            "gradient_accumulation": 2, "optimizer_type": "adamw", "lokr_factor": 8,
            "target_modules": ("q_proj", "v_proj"), "epochs": 9, "learning_rate": 1.0}
    # the dropout, a LoKR factor in a LoRA run, the schedule's settings: nothing refused
    assert refused_on_resume(saved, same) == []
    changed = {**same, "rank": 16, "gradient_accumulation": 4,
               "target_modules": ("q_proj",), "optimizer_type": "prodigy"}
    assert refused_on_resume(saved, changed) == [
        "--rank 16 (the run used 8)", "--target-modules q_proj (the run used q_proj v_proj)",
        "--gradient-accumulation 4 (the run used 2)", "--optimizer-type prodigy (the run used "
        "adamw)"]
    assert refused_on_resume({}, changed) == []  # an older checkpoint without its record
    # the same modules in another order, the same module config written from elsewhere: kept
    assert refused_on_resume({**saved, "target_modules": ["v_proj", "q_proj"]}, same) == []
    assert refused_on_resume({"mode": "selective", "module_config": "/runs/est.json"},
                             {"module_config": "/runs/../runs/est.json"}) == []
    assert refused_on_resume({"mode": "selective", "module_config": "/runs/est.json"},
                             {"module_config": "/runs/other.json"}) == [
        "--module-config /runs/other.json (the run used /runs/est.json)"]
    # switches and unset lists in words, not Python's
    assert refused_on_resume({"adapter_type": "lokr", "lokr_decompose_both": False,
                              "attention_type": "both", "self_target_modules": None},
                             {"lokr_decompose_both": True, "self_target_modules": ("q_proj",)}) \
        == ["--self-target-modules q_proj (the run used none)",
            "--lokr-decompose-both on (the run used off)"]
    # a selective checkpoint fits no other mode's adapter (fixed and vanilla share theirs):
    # said as such, not as a flag to leave out
    assert resume_refusal("ck", {"mode": "selective", "rank": 8}, {"rank": 16}, "fixed") == (
        "ck: the checkpoint is from a `selective` run, whose adapter is on other modules than "
        "a `fixed` run's: resume it with `sidestep selective`, or start a new `fixed` run")
    assert resume_refusal("ck", {"mode": "vanilla"}, {}, "fixed") is None
    assert resume_refusal("ck", {"mode": "fixed", "adapter_type": "lora", "rank": 8}, {"rank": 16},
                          "fixed") == (
        "ck: a resumed run keeps its checkpoint's adapter shape, batch size, gradient "
        "accumulation and optimizer, but this one sets --rank 16 (the run used 8). Leave these "
        "out to continue the run as it was, or start a new run (without --resume-from) to "
        "train with them")


@pytest.mark.parametrize("flags, named", [
    (["--gradient-accumulation", "4"], "--gradient-accumulation 4 (the run used 2)"),
    (["--batch-size", "2"], "--batch-size 2 (the run used 1)"),
    (["-r", "16"], "--rank 16 (the run used 8)"),
])
def test_a_resume_that_changes_the_adapter_or_the_batches_is_refused(run_folder, tmp_path,
                                                                      capsys, flags, named):
    """With another batch size the checkpoint's step and place in its epoch count other
    batches (the learning rate jumped); another rank does not fit its weights. Refused before
    anything is written, the flag and the run's value named."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    before = tree_hash(copy)
    code = main(["--plain", "-y", "fixed", "--resume-from", str(copy / "checkpoint-epoch-1"),
                 *flags])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert named in err and "start a new run" in err, err
    assert "warning" not in err  # not first "resuming with ..." as if it applied
    assert tree_hash(copy) == before
    # --print-config shows no config that would be refused
    code = main(["--plain", "fixed", "--resume-from", str(copy / "checkpoint-epoch-1"), *flags,
                 "--print-config"])
    assert code == 2 and named in capsys.readouterr().err


def test_the_engine_refuses_them_too_before_writing(run_folder, demo_root, small_tensors,
                                                    tmp_path):
    """The app starts the engine without the CLI: the same refusal, as an input problem."""
    from sidestep.engine.trainer import Trainer

    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    before = tree_hash(copy)
    config = train_config(demo_root, small_tensors, copy, epochs=3, learning_rate=3e-4,
                          warmup_steps=3, rank=8, alpha=16, seed=7, gradient_accumulation=1,
                          resume_from=str(copy / "checkpoint-epoch-1"))
    result = Trainer(config, [Recorder()]).run()
    assert result.status == "failed" and result.error_kind == "input", result
    assert "--gradient-accumulation 1 (the run used 2)" in result.error
    assert tree_hash(copy) == before


def test_a_missing_checkpoint_is_the_error_named(tmp_path, capsys, in_tmp_cwd):
    """`--resume-from` alone with a mistyped folder said "--checkpoint-dir is required"."""
    code = main(["--plain", "fixed", "--resume-from", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--resume-from" in err and "nope: checkpoint folder not found" in err, err
    assert "--checkpoint-dir" not in err


def test_a_resume_with_another_rate_or_length_follows_the_new_schedule(run_folder,
                                                                       demo_root,
                                                                       small_tensors,
                                                                       tmp_path):
    """`--learning-rate` and `--epochs` given with --resume-from: said to apply, but the
    checkpoint's scheduler state brought back the first run's rate (steps went on at 3e-4),
    and the first step after it kept the old length's value. Each step's rate now equals an
    uninterrupted run's with the new settings."""
    from sidestep.engine.events import StepMetrics
    from sidestep.engine.trainer import Trainer

    settings = dict(epochs=4, learning_rate=1e-3, warmup_steps=3, rank=8, alpha=16, seed=7)
    fresh = Recorder()
    assert Trainer(train_config(demo_root, small_tensors, tmp_path / "fresh", **settings),
                   [fresh]).run().status == "completed"
    resumed = Recorder()  # from epoch 1, in a folder of its own (the run went on past it)
    result = Trainer(train_config(demo_root, small_tensors, tmp_path / "branch",
                                  resume_from=str(run_folder / "checkpoint-epoch-1"),
                                  **settings),
                     [resumed]).run()
    assert result.status == "completed", result.error
    rate = {e.step: e.lr for e in fresh.events if isinstance(e, StepMetrics)}
    after = [(e.step, e.lr) for e in resumed.events if isinstance(e, StepMetrics)]
    assert after and after[0][1] != 3e-4
    assert after == [(step, rate[step]) for step, _ in after]


def test_a_folder_written_another_way_is_not_a_changed_setting(tmp_path, monkeypatch):
    """--dataset-dir ./tensors on a resume warned 'resuming with --dataset-dir ./tensors (the
    run used /abs/tensors)': the same folder, recorded absolute by the run."""
    (tmp_path / "tensors").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    carried = {"dataset_dir": str(tmp_path / "tensors")}
    assert changed_on_resume(carried, {"dataset_dir": "./tensors"}) == []
    assert changed_on_resume(carried, {"dataset_dir": "tensors/"}) == []
    (line,) = changed_on_resume(carried, {"dataset_dir": "./other"})
    assert line.startswith("resuming with --dataset-dir ./other")


def test_a_run_without_checkpoints_says_how_to_be_able_to_continue(tmp_path):
    """It advised 'start from its adapter with a new run', which no flag does."""
    from sidestep.engine.checkpointing import quick_problem

    run = tmp_path / "run"
    (run / "final" / "adapter").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    problem = quick_problem(run)
    assert "saved no checkpoint" in problem and "--save-every" in problem
    assert "start from its adapter" not in problem


def test_what_a_changed_setting_does_to_the_resumed_run():
    """The data order, the held-out files and the EMA: said with the change, not only that the
    value differs (the trainer said some of them after the prompt, some not at all)."""
    carried = {"seed": 42, "val_split": 0.0, "ema_decay": 0.0,
               "target_modules": ("q_proj", "k_proj")}
    lines = changed_on_resume(carried, {"seed": 7, "val_split": 0.2, "ema_decay": 0.99,
                                        "target_modules": ["k_proj", "q_proj"]})
    assert lines == [
        "resuming with --seed 7 (the run used 42): the data order and random draws will "
        "differ from the original run",
        "resuming with --val-split 0.2 (the run used 0.0): other files are held out, so the "
        "data order and the validation loss will differ from the original run",
        "resuming with --ema-decay 0.99 (the run used 0.0): the EMA starts from the resumed "
        "weights"]  # the run's modules in another order, as a list: the same setting
    (line,) = changed_on_resume({"ema_decay": 0.999}, {"ema_decay": 0.0})
    assert line.endswith("this run keeps no EMA, so final/ and best/ come from the trained "
                         "weights")


def test_a_resume_says_what_it_changes_before_the_prompt_and_once(run_folder, tmp_path,
                                                                  capsys):
    """The changes came before the summary, and the trainer's notes on them (the data order
    will differ) after the prompt had been answered; with --yes they were said twice."""
    ckpt = run_folder / "checkpoint-epoch-1"
    argv = ["--resume-from", str(ckpt), "--output-dir", str(tmp_path / "b"), "--seed", "9",
            "--ema-decay", "0.9"]
    assert main(["--plain", "fixed", *argv]) != 0  # no terminal to confirm on
    err = capsys.readouterr().err
    seed = "resuming with --seed 9 (the run used 7): the data order and random draws"
    assert seed in err and err.index(seed) < err.index("no terminal to confirm on")
    assert "the EMA starts from the resumed weights" in err
    assert not (tmp_path / "b").exists()

    assert main(["--yes", "--plain", "fixed", *argv]) == 0
    shown = capsys.readouterr()
    assert (shown.out + shown.err).count(seed) == 1
    assert seed in (tmp_path / "b" / "sidestep.log").read_text()  # the run's own record


def test_an_ema_added_on_resume_starts_from_the_resumed_weights(run_folder, demo_root,
                                                                small_tensors, tmp_path):
    """The EMA was made before the checkpoint's adapter was loaded, so it began at the
    untrained adapter (its B matrices zero) while the log said it began at the resumed one."""
    from sidestep.engine.trainer import Trainer

    class AtStart:
        trainer = None
        seen: list = []

        def handle(self, event):
            if event.type == "run_started":
                t = self.trainer
                trained = [p for _, p in t.adapted.named_parameters() if p.requires_grad]
                self.seen = [torch.equal(s, p.detach().float()) for s, p in
                             zip(t.ema.shadow, trained, strict=True)]

        def close(self):
            pass

    sink = AtStart()
    config = train_config(demo_root, small_tensors, tmp_path / "b", epochs=2, learning_rate=3e-4,
                          warmup_steps=3, rank=8, alpha=16, seed=7, ema_decay=0.9,
                          resume_from=str(run_folder / "checkpoint-epoch-1"))
    sink.trainer = Trainer(config, [sink])
    assert sink.trainer.run().status == "completed"
    assert sink.seen and all(sink.seen)
