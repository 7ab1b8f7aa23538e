"""`--print-config` resolves through the schema exactly as training will."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sidestep.cli import main

BASE = ["--plain", "fixed", "--checkpoint-dir", "a", "--dataset-dir", "b", "--output-dir", "c"]


def run_json(capsys, argv):
    code = main(argv + ["--print-config"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def test_turbo_defaults(capsys):
    cfg, _ = run_json(capsys, BASE)
    assert cfg["model_variant"] == "turbo" and cfg["model_family"] == "turbo"
    assert cfg["shift"] == 3.0 and cfg["num_inference_steps"] == 8
    assert cfg["cfg_ratio"] == 0.0
    assert cfg["mode"] == "fixed"
    assert cfg["checkpoint_dir"] == "a" and cfg["output_dir"] == "c"


@pytest.mark.parametrize("variant", ["base", "sft", "xl-base", "acestep-v15-sft"])
def test_base_defaults(capsys, variant):
    cfg, _ = run_json(capsys, BASE + ["--model-variant", variant])
    assert cfg["shift"] == 1.0 and cfg["num_inference_steps"] == 50
    assert cfg["cfg_ratio"] == 0.15


def test_explicit_cfg_on_turbo_is_kept(capsys):
    cfg, _ = run_json(capsys, BASE + ["--cfg-ratio", "0.2"])
    assert cfg["cfg_ratio"] == 0.2


def test_prodigy_forces_constant_scheduler_and_warns_about_lr(capsys):
    cfg, err = run_json(capsys, BASE + ["--optimizer-type", "prodigy"])
    assert cfg["scheduler_type"] == "constant"
    assert "learning rate of 1.0" in err
    cfg, err = run_json(capsys, BASE + ["--optimizer-type", "prodigy", "--lr", "1.0",
                                        "--scheduler-type", "cosine"])
    assert cfg["scheduler_type"] == "constant"
    assert "replaced by 'constant'" in err and "learning rate of 1.0" not in err


def test_preset_then_explicit_flags_win(capsys, in_tmp_cwd):
    cfg, _ = run_json(capsys, BASE + ["--preset", "quick_test"])
    assert (cfg["rank"], cfg["alpha"], cfg["epochs"]) == (16, 32, 10)
    cfg, _ = run_json(capsys, BASE + ["--preset", "quick_test", "--rank", "8", "--epochs", "3"])
    assert (cfg["rank"], cfg["alpha"], cfg["epochs"]) == (8, 32, 3)


def test_builtin_presets_follow_the_model_variant(capsys):
    cfg, _ = run_json(capsys, BASE + ["--preset", "recommended", "--model-variant", "base"])
    assert cfg["shift"] == 1.0 and cfg["cfg_ratio"] == 0.15


def test_fine_tune_family_from_config_json(capsys, tmp_path):
    (tmp_path / "my-tune").mkdir()
    (tmp_path / "my-tune" / "config.json").write_text(json.dumps(
        {"model_type": "acestep", "is_turbo": True}))
    argv = ["--plain", "fixed", "--checkpoint-dir", str(tmp_path), "--dataset-dir", "b",
            "--output-dir", "c", "--model-variant", "my-tune"]
    cfg, _ = run_json(capsys, argv)
    assert cfg["model_family"] == "turbo" and cfg["shift"] == 3.0
    cfg, _ = run_json(capsys, argv + ["--base-model", "base"])
    assert cfg["model_family"] == "base" and cfg["cfg_ratio"] == 0.15


def test_unknown_fine_tune_warns(capsys, tmp_path):
    (tmp_path / "someone-elses-tune").mkdir()  # there, but no config.json to tell the family
    argv = ["--plain", "fixed", "--checkpoint-dir", str(tmp_path), "--dataset-dir", "b",
            "--output-dir", "c", "--model-variant", "someone-elses-tune"]
    cfg, err = run_json(capsys, argv)
    assert cfg["model_family"] is None and "--base-model" in err


@pytest.mark.parametrize("extra,field", [
    (["--rank", "0"], "--rank"),
    (["--epochs", "0"], "--epochs"),
    (["--gradient-accumulation", "0"], "--gradient-accumulation"),
    (["--alpha", "-2"], "--alpha"),
    (["--dropout", "1.5"], "--dropout"),
    (["--cfg-ratio", "2"], "--cfg-ratio"),
    (["--optimizer-type", "sgd"], "--optimizer-type"),
    (["--rank", "lots"], "--rank"),
    (["--target-modules", "q_proj", "gate_proj"], "--target-modules"),
])
def test_out_of_range_is_a_usage_error(capsys, extra, field):
    with pytest.raises(SystemExit) as exc:
        main(BASE + extra + ["--print-config"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # the error line and where the rest is, not argparse's 58 lines of usage first
    assert field in err and "usage:" not in err and len(err.splitlines()) == 2, err


@pytest.mark.parametrize("extra,needle", [
    (["--lokr-factor", "4"], "LoKR settings need --adapter-type lokr"),
    (["--lokr-use-tucker"], "LoKR settings need --adapter-type lokr"),
    (["--attention-type", "self", "--cross-target-modules", "q_proj"],
     "only applies with --attention-type both"),
    (["--model-variant", "../../etc"], "--model-variant"),
    (["--model-variant", "base", "--base-model", "turbo"],
     "--base-model: is for fine-tunes; 'base' is the official base model"),
])
def test_cross_field_errors(capsys, extra, needle):
    assert main(BASE + extra + ["--print-config"]) == 2
    assert needle in capsys.readouterr().err


def test_lokr_flags_with_lokr_adapter(capsys):
    cfg, err = run_json(capsys, BASE + ["--adapter-type", "lokr", "--lokr-factor", "4",
                                        "--lokr-use-tucker", "--rank", "8"])
    assert cfg["lokr_factor"] == 4 and cfg["lokr_use_tucker"] is True
    assert "ignored with --adapter-type lokr" in err


def test_short_chunks_warn(capsys):
    cfg, err = run_json(capsys, BASE + ["--chunk-duration", "30"])
    assert cfg["chunk_duration"] == 30 and "below 60 s" in err
    _cfg, err = run_json(capsys, BASE + ["--chunk-duration", "60"])
    assert "below 60" not in err


def test_missing_required_paths_named(capsys):
    assert main(["--plain", "fixed", "--print-config"]) == 2
    err = capsys.readouterr().err
    for flag in ("--checkpoint-dir", "--dataset-dir", "--output-dir"):
        assert f"{flag}: is required" in err


def test_vanilla_has_no_cfg_dropout(capsys):
    argv = BASE.copy()
    argv[1] = "vanilla"
    cfg, _ = run_json(capsys, argv + ["--model-variant", "base"])
    assert cfg["mode"] == "vanilla" and "cfg_ratio" not in cfg


def test_selective_needs_module_config(capsys):
    argv = BASE.copy()
    argv[1] = "selective"
    assert main(argv + ["--print-config"]) == 2
    assert "--module-config" in capsys.readouterr().err
    cfg, _ = run_json(capsys, argv + ["--auto-estimate", "--top-k", "8"])
    assert cfg["top_k"] == 8 and cfg["auto_estimate"] is True


def test_other_commands_print_config(capsys):
    cfg, _ = run_json(capsys, ["build-dataset", "-i", "songs", "--tag", "zz"])
    assert cfg == {"output": "songs/dataset.json", "force": False, "input": "songs", "tag": "zz",
                   "tag_position": "prepend",
                   "genre_ratio": 0, "name": "local_dataset"}
    assert main(["compare-configs", "--configs", "one.json", "--print-config"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_a_missing_input_file_exits_2_with_one_line(capsys):
    # every subcommand is implemented now; a bad input is still one line, no traceback
    code = main(["compare-configs", "--configs", "a.json", "b.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a.json: file not found" in err
    assert len(err.splitlines()) == 1


def test_python_m_sidestep_runs():
    res = subprocess.run([sys.executable, "-m", "sidestep", "--plain", "fixed",
                          "--checkpoint-dir", "a", "--dataset-dir", "b", "--output-dir", "c",
                          "--model-variant", "base", "--print-config"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["shift"] == 1.0


def test_cli_import_is_light():
    code = ("import sys, sidestep, sidestep.cli, sidestep.cli.parser, sidestep.cli.commands;"
            "from sidestep.cli.parser import build_parser; build_parser();"
            "heavy=[m for m in ('torch','textual','rich','lightning','lightning_fabric','peft','transformers')"
            " if m in sys.modules]; print(','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_a_rank_far_from_alpha_warns_with_the_usual_alpha(capsys):
    """alpha defaults to 128 (for rank 64): a rank changed alone scales the update by alpha /
    rank = 32 at rank 4. That warns, naming the usual alpha; both set on purpose, or a sane
    ratio, does not."""
    cfg, err = run_json(capsys, BASE + ["-r", "4"])
    assert cfg["alpha"] == 128  # the spec's default stays; the warning says what to pass
    assert "alpha 128 with rank 4 scales the adapter by 32 (alpha / rank); the usual is 2: " \
           "--alpha 8" in err
    for flags in (["-r", "4", "--alpha", "128"], ["-r", "32"], ["-r", "16", "--alpha", "32"],
                  ["--adapter-type", "lokr"]):
        _, err = run_json(capsys, BASE + flags)
        assert "alpha / rank" not in err, flags


def test_the_output_that_estimate_and_build_dataset_would_write_is_shown(capsys, tmp_path,
                                                                          monkeypatch):
    """Without --output they choose the file when they run; --print-config says which (it
    showed null)."""
    monkeypatch.chdir(tmp_path)
    cfg, _ = run_json(capsys, ["build-dataset", "-i", str(tmp_path / "songs")])
    assert cfg["output"] == str(tmp_path / "songs" / "dataset.json")
    (tmp_path / "estimate-turbo-module.json").write_text("{}")  # taken: the next free name
    cfg, _ = run_json(capsys, ["estimate", "--checkpoint-dir", "a", "--dataset-dir", "b"])
    assert cfg["output"] == "estimate-turbo-module-2.json"
    cfg, _ = run_json(capsys, ["build-dataset", "-i", "s", "--output", "x.json"])
    assert cfg["output"] == "x.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["estimate-turbo-module.json"]


def test_preprocessing_flags_without_preprocess_are_said_to_do_nothing(capsys):
    """--audio-dir and --tensor-output without --preprocess were taken without a word: the
    run trained on --dataset-dir as it was, and the songs were never encoded."""
    _, err = run_json(capsys, BASE + ["--audio-dir", "songs", "--tensor-output", "t",
                                      "--normalize", "peak"])
    for flag in ("--audio-dir", "--tensor-output", "--normalize"):
        assert f"warning: {flag}: is used only with --preprocess" in err, err
    _, err = run_json(capsys, ["--plain", "fixed", "--checkpoint-dir", "a", "--output-dir", "c",
                               "--preprocess", "--audio-dir", "songs", "--tensor-output", "t"])
    assert "warning" not in err  # and --dataset-dir is not required then


def test_required_unless_is_said_in_the_help_where_it_applies(capsys):
    def help_of(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert "(required, except with --preprocess)" in help_of("fixed")
    assert "except with --preprocess" not in help_of("estimate")  # it has no --preprocess
