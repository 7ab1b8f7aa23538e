"""`sidestep gpu`, `sidestep vram-estimate`, `--vram-profile` and the estimate in the training
summary, with NVML's answer faked (no GPU here)."""

from __future__ import annotations

import json

import pytest

from conftest import REFERENCE
from sidestep.cli import main
from sidestep.config.presets import PresetStore


def card(total_gib, free_gib):
    return lambda: [{"index": 0, "name": "Test GPU", "total_mib": total_gib * 1024.0,
                     "free_mib": free_gib * 1024.0, "other_processes_mib": 0.0}]


@pytest.fixture
def ckpt_root(tmp_path):
    """A checkpoint root whose turbo folder holds the real 2B config.json (no weights: the
    estimate reads the config alone)."""
    model = tmp_path / "checkpoints" / "acestep-v15-turbo"
    model.mkdir(parents=True)
    config = json.loads((REFERENCE / "config_turbo.json").read_text())["config"]
    (model / "config.json").write_text(json.dumps(config))
    return tmp_path / "checkpoints"


def run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def estimate_json(capsys, ckpt_root, *flags):
    code, out, err = run(capsys, ["--plain", "vram-estimate", "--checkpoint-dir", str(ckpt_root),
                                  "--dataset-dir", "d", "--output-dir", "o", "--json", *flags])
    assert code == 0, err
    return json.loads(out)


def test_vram_estimate_json(capsys, ckpt_root, monkeypatch):
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", lambda: [])
    small = estimate_json(capsys, ckpt_root, "--preset", "vram_8gb")
    assert small["model_config"] == "config.json" and small["free_mib"] is None
    assert 0 < small["peak_mib"] < 8 * 1024
    assert abs(sum(small["breakdown_mib"].values()) - small["peak_mib"]) < 1.0
    bigger = estimate_json(capsys, ckpt_root, "--preset", "vram_8gb", "--rank", "128")
    assert bigger["peak_mib"] > small["peak_mib"]
    assert bigger["adapter_params"] > small["adapter_params"]


def test_vram_estimate_verdict_against_free_memory(capsys, ckpt_root, monkeypatch):
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", card(24, 23))
    assert estimate_json(capsys, ckpt_root, "--preset", "vram_8gb")["verdict"] == "fits"
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", card(8, 1))
    assert estimate_json(capsys, ckpt_root, "--preset", "vram_8gb")["verdict"] == "will not fit"


def test_gpu_command(capsys, monkeypatch):
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", card(12, 11))
    code, out, _ = run(capsys, ["--plain", "gpu"])
    assert code == 0 and "Test GPU" in out and "--vram-profile 12gb" in out
    code, out, _ = run(capsys, ["--plain", "gpu", "--json"])
    assert json.loads(out)["suggested_profile"] == "12gb"
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", lambda: [])
    code, out, _ = run(capsys, ["--plain", "gpu"])
    assert code == 0 and "no GPU detected" in out


def test_vram_profile_flag_applies_the_tier_preset(capsys, monkeypatch):
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", card(12, 11))
    base = ["--plain", "fixed", "--checkpoint-dir", "a", "--dataset-dir", "b",
            "--output-dir", "c", "--print-config"]
    tier = PresetStore().load("vram_12gb").values
    code, out, err = run(capsys, base + ["--vram-profile", "auto"])
    assert code == 0, err
    cfg = json.loads(out)
    assert all(cfg[k] == (list(v) if isinstance(v, tuple) else v) for k, v in tier.items()
               if k in cfg)
    code, out, _ = run(capsys, base + ["--vram-profile", "auto", "--rank", "8"])
    assert json.loads(out)["rank"] == 8  # explicit flags win over the profile
    code, out, err = run(capsys, base + ["--vram-profile", "huge"])
    assert code == 2 and "--vram-profile" in err
    # every name it takes is offered (auto and none were left out of the refusal and the help)
    assert "use 8gb, 12gb, 16gb, 24gb, auto (from the detected GPU) or none" in err
    code, out, err = run(capsys, base + ["--vram-profile", "none"])
    assert code == 0 and json.loads(out)["rank"] == 64, err
    with pytest.raises(SystemExit):
        main(["fixed", "--help"])
    assert "24gb, auto (from the detected GPU) or none" in " ".join(capsys.readouterr().out.split())


def test_training_summary_warns_when_it_will_not_fit(capsys, ckpt_root, monkeypatch,
                                                     tmp_path):
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", card(8, 1))
    # the paths are checked before the summary: a weights file and a tensor file to find
    (ckpt_root / "acestep-v15-turbo" / "model.safetensors").write_bytes(b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "song.pt").write_bytes(b"")
    code, out, err = run(capsys, ["--plain", "fixed", "--checkpoint-dir", str(ckpt_root),
                                  "--dataset-dir", str(tmp_path / "d"), "--output-dir",
                                  str(tmp_path / "o"), "--rank", "64"])
    text = out + err
    assert "estimated peak VRAM" in text and "will not fit in 1.0 GiB free" in text
    assert "will probably not fit" in text
    assert code == 2 and "not started" in text  # no terminal to confirm on: nothing ran


def test_vram_estimate_without_a_model_named_or_with_a_wrong_folder(capsys, tmp_path,
                                                                    monkeypatch):
    """No --checkpoint-dir: the 2B architecture, with a warning saying so. A --checkpoint-dir
    that holds no model is a mistake: exit 2 naming the folder, no table."""
    monkeypatch.setattr("sidestep.config.profiles.detect_gpus", lambda: [])
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, ["--plain", "vram-estimate"])
    assert code == 0 and "total" in out
    assert "no --checkpoint-dir given; estimated for the 2B architecture" in err
    code, out, err = run(capsys, ["--plain", "vram-estimate", "--checkpoint-dir",
                                  str(tmp_path / "typo")])
    assert code == 2 and out == ""
    assert f"no ACE-Step config.json in {tmp_path / 'typo'}/acestep-v15-turbo" in err
    assert "Traceback" not in err


def test_the_estimates_help_lists_what_changes_the_figure(capsys):
    """It marked --checkpoint-dir, --dataset-dir and --output-dir "(required)" (none is) and
    listed --detach, --notify-command and the sample settings, which it never reads."""
    with pytest.raises(SystemExit):
        main(["vram-estimate", "--help"])
    shown = capsys.readouterr().out
    assert "(required)" not in shown and "--checkpoint-dir" in shown and "--rank" in shown
    for flag in ("--detach", "--notify-command", "--sample-every-n-epochs", "--output-dir"):
        assert flag not in shown, flag


def test_a_selective_command_line_is_estimated_and_the_dataset_is_not_read(capsys, ckpt_root,
                                                                            monkeypatch):
    """`vram-estimate --mode selective` was refused without --module-config and refused it
    as a flag of selective; --dataset-dir was taken and ignored without a word."""
    monkeypatch.setattr("sidestep.cli.vram_cmd.free_mib_for", lambda device: None)
    base = ["vram-estimate", "--checkpoint-dir", str(ckpt_root), "--json"]
    assert main(base) == 0
    fixed = json.loads(capsys.readouterr().out)["peak_mib"]
    for extra in ([], ["--module-config", "est.json"], ["--auto-estimate", "--top-k", "8"]):
        assert main(base + ["--mode", "selective", *extra]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["peak_mib"] == fixed
    assert main(["--plain", *base[:-1], "--mode", "selective", "--dataset-dir", "t"]) == 0
    shown = capsys.readouterr().out
    assert "its upper bound" in shown
    assert "--dataset-dir is not read: each sample is taken as 240 s" in shown


def test_a_preset_that_overrides_the_vram_profile_says_which_flags(capsys):
    """--preset quick_test --vram-profile 8gb trained with quick_test's plain AdamW, no encoder
    offload and whole songs (the preset wins, as the help says) without a word."""
    base = ["--plain", "fixed", "--checkpoint-dir", "a", "--dataset-dir", "b",
            "--output-dir", "c", "--print-config", "--vram-profile", "8gb"]
    code, out, err = run(capsys, base + ["--preset", "quick_test"])
    assert code == 0, err
    assert json.loads(out)["optimizer_type"] == "adamw"
    warning = [line for line in err.splitlines() if "overrides --vram-profile 8gb" in line]
    assert len(warning) == 1 and "--optimizer-type" in warning[0] \
        and "--offload-encoder" in warning[0] and "--rank" not in warning[0]  # same in both
    code, out, err = run(capsys, base + ["--preset", "quick_test", "--optimizer-type",
                                         "adamw8bit", "--offload-encoder"])
    named = err.split("overrides --vram-profile 8gb for ")[1].split(": the run")[0].split(", ")
    assert "--epochs" in named and "--optimizer-type" not in named \
        and "--offload-encoder" not in named  # given as flags: chosen
    code, out, err = run(capsys, base + ["--preset", "vram_8gb"])
    assert "overrides" not in err
