"""`sidestep check-adapter` and `sidestep export` on a PEFT folder whose adapter_config.json is
malformed or disagrees with its weights: a one-line refusal (exit 2) that names the file and
the field, nothing written; --model-variant given without --checkpoint-dir; check-adapter's
last line when the file is sound but a runtime will not play it as trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import trained_run, tree_hash
from sidestep.cli import main


@pytest.fixture(scope="module")
def lora_run(demo_root, small_tensors, tmp_path_factory):
    return trained_run(demo_root, small_tensors, tmp_path_factory.mktemp("cfg_checks") / "lora")


def adapter_copy(lora_run: Path, dest: Path, change) -> Path:
    """The run's final adapter with adapter_config.json passed through ``change``."""
    shutil.copytree(lora_run / "final" / "adapter", dest)
    path = dest / "adapter_config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return dest


def _set(**kw):
    return lambda c: {**c, **kw}


BAD = {
    "array": (lambda c: [1], "JSON object"),
    "null": (lambda c: None, "JSON object"),
    "alpha_text": (_set(lora_alpha="big"), "lora_alpha"),
    "alpha_inf": (_set(lora_alpha=float("inf")), "lora_alpha"),
    "r_zero": (_set(r=0), "r is 0"),
    "r_float": (_set(r=4.5), "r is 4.5"),
    "rank_pattern_text": (_set(rank_pattern="x"), "rank_pattern"),
    "rank_pattern_value": (_set(rank_pattern={"q_proj": -1}), "rank_pattern"),
    "rank_pattern_regex": (_set(rank_pattern={"q_proj(": 4}), "rank_pattern"),
    "alpha_pattern_value": (_set(alpha_pattern={"q_proj": None}), "alpha_pattern"),
    "target_modules_int": (_set(target_modules=5), "target_modules"),
    "target_modules_regex": (_set(target_modules="(q_proj"), "target_modules"),
    "rslora_text": (_set(use_rslora="yes"), "use_rslora"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_config_is_a_one_line_refusal(lora_run, tmp_path, capsys, case):
    change, field = BAD[case]
    src = adapter_copy(lora_run, tmp_path / "adapter", change)
    (tmp_path / "out").mkdir()
    before = tree_hash(tmp_path)
    for args in (["check-adapter", str(src)], ["check-adapter", str(src), "--json"],
                 ["export", str(src), "--format", "comfyui", "--output",
                  str(tmp_path / "out" / "x.safetensors")],
                 ["export", str(src), "--format", "peft", "--output",
                  str(tmp_path / "out" / "peft")]):
        code = main(["--plain", *args])
        captured = capsys.readouterr()
        lines = (captured.out + captured.err).strip().splitlines()
        assert code == 2, (args, lines)
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        assert "adapter_config.json" in lines[0] and field in lines[0], lines[0]
        assert "missing beside it" not in lines[0]
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize("case", sorted(BAD))
def test_reading_a_saved_adapter_makes_the_same_checks(lora_run, tmp_path, case):
    """read_adapter_dir (what --resume-from loads) took a list config with an AttributeError
    and r: 0 without a word; it now checks as export does."""
    from sidestep.engine.adapters import AdapterError, read_adapter_dir

    change, field = BAD[case]
    src = adapter_copy(lora_run, tmp_path / "adapter", change)
    with pytest.raises(AdapterError) as exc:
        read_adapter_dir(src)
    assert str(exc.value).startswith(f"{src / 'adapter_config.json'}: ") and \
        field in str(exc.value), exc.value


def test_resuming_from_a_checkpoint_with_a_malformed_config_is_refused(lora_run, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    (ckpt,) = run.glob("checkpoint-*")
    cfg = ckpt / "adapter" / "adapter_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "r": 0}))
    before = tree_hash(tmp_path)
    code = main(["--plain", "-y", "fixed", "--resume-from", str(ckpt), "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{cfg}: r is 0" in err and "Traceback" not in err, err
    assert tree_hash(tmp_path) == before


def test_export_refuses_a_config_rank_that_is_not_the_weights(lora_run, tmp_path, capsys):
    """r = 2 beside rank-4 weights: check-adapter's [rank-mismatch]; export would write
    alpha / 2 as the scale of rank-4 weights (twice the trained strength)."""
    src = adapter_copy(lora_run, tmp_path / "adapter", _set(r=2))
    (tmp_path / "out").mkdir()
    before = tree_hash(tmp_path)
    assert main(["--plain", "check-adapter", str(src)]) == 1
    finding = next(line for line in capsys.readouterr().out.splitlines()
                   if "[rank-mismatch]" in line)
    words = finding.split("] ", 1)[1].split(": ")[0]  # "32 modules' rank differs from ..."
    for fmt, name in (("comfyui", "x.safetensors"), ("acestep-cpp", "y.safetensors"),
                      ("peft", "peft")):
        code = main(["--plain", "export", str(src), "--format", fmt, "--output",
                     str(tmp_path / "out" / name)])
        captured = capsys.readouterr()
        lines = (captured.out + captured.err).strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
        assert "[rank-mismatch]" in lines[0] and words in lines[0], lines[0]
        assert "(rank 4, config 2)" in lines[0] and "adapter_config.json" in lines[0]
    assert tree_hash(tmp_path) == before


def test_model_variant_needs_a_checkpoint_dir(lora_run, demo_root, tmp_path, capsys):
    """Without --checkpoint-dir the run's own model decides; a --model-variant given alone
    would be ignored, so it is refused."""
    (tmp_path / "out").mkdir()
    before = tree_hash(tmp_path), tree_hash(lora_run)
    for args in (["check-adapter", str(lora_run), "--model-variant", "base"],
                 ["export", str(lora_run), "--format", "comfyui", "--model-variant", "base",
                  "--output", str(tmp_path / "out" / "x.safetensors")]):
        code = main(["--plain", *args])
        captured = capsys.readouterr()
        lines = (captured.out + captured.err).strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
        assert "--model-variant" in lines[0] and "--checkpoint-dir" in lines[0], lines[0]
    assert (tree_hash(tmp_path), tree_hash(lora_run)) == before
    # with --checkpoint-dir it picks the model checked against
    ckpt = str(demo_root / "checkpoints")
    assert main(["--plain", "check-adapter", str(lora_run), "--checkpoint-dir", ckpt,
                 "--model-variant", "base", "--json"]) == 0
    assert "acestep-v15-base" in json.loads(capsys.readouterr().out)["decoder"]


def test_summary_names_runtimes_that_do_not_load_or_drop(lora_run, tmp_path, capsys):
    """A clean single file still exits 0, but the last line says which runtimes will not load
    it (ACE-Step and PEFT want the folder) rather than "no problems found"."""
    out = tmp_path / "x.safetensors"
    assert main(["--plain", "export", str(lora_run), "--format", "comfyui", "--output",
                 str(out)]) == 0
    capsys.readouterr()
    assert main(["--plain", "check-adapter", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # no nested parentheses: it read "(checked against ... naming (shapes not checked))"
    assert lines[0].endswith("decoder modules; checked against the standard ACE-Step 1.5 "
                             "decoder names, shapes not checked"), lines[0]
    last = lines[-1]
    assert "no problems found" not in last
    assert "ACE-Step 1.5 loader" in last and "PEFT / diffusers" in last, last
    # the PEFT folder: every runtime loads it; ComfyUI at half strength (no .alpha keys)
    assert main(["--plain", "check-adapter", str(lora_run)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "ComfyUI" in last and "0.5x" in last and "not load" not in last, last


def test_a_file_that_is_not_an_adapter_says_what_to_give(lora_run, capsys):
    """A checkpoint's training_state.pt was "not a readable .safetensors file (Error while
    deserializing header: header too large)": the safetensors reader's words, no way on."""
    state = next(lora_run.glob("checkpoint-*")) / "training_state.pt"
    assert main(["--plain", "check-adapter", str(state)]) == 2
    err = capsys.readouterr().err
    assert "training_state.pt: not an adapter file (adapters are .safetensors files)" in err
    assert "a run folder, a checkpoint folder" in err and "header" not in err
