"""Gradient-sensitivity estimate and selective training (issue #15): the estimate's JSON,
its determinism, layer granularity; selective adapters cover exactly the chosen modules (LoRA
and LoKR, from a file or --auto-estimate), and a resumed run keeps the modules it trained."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import Recorder, train_config
from sidestep.cli import main
from sidestep.config.resolve import resolve
from sidestep.engine.estimate import estimate, projection_names, write_result
from sidestep.engine.module_config import load_module_config
from sidestep.engine.trainer import Trainer

NAME = re.compile(r"^layers\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)_proj$")


def est_config(demo_root, dataset, **kw):
    values = dict(checkpoint_dir=str(demo_root / "checkpoints"), dataset_dir=str(dataset),
                  num_workers=0, estimate_batches=3, top_k=5, device="cpu")
    values.update(kw)
    return resolve("estimate", values).config


@pytest.fixture(scope="module")
def module_file(demo_root, small_tensors, tmp_path_factory):
    result = estimate(est_config(demo_root, small_tensors))
    return write_result(result, tmp_path_factory.mktemp("est") / "est.json")


def adapter_modules(folder: Path) -> set[str]:
    lora = folder / "adapter_model.safetensors"
    if lora.is_file():
        with safe_open(str(lora), "pt") as f:
            return {k.split(".lora_")[0].removeprefix("base_model.model.") for k in f.keys()}
    with safe_open(str(folder / "lokr_weights.safetensors"), "pt") as f:
        names = {k.split(".")[0] for k in f.keys()}
    return {n.removeprefix("lycoris_").replace("_", ".").replace("self.attn", "self_attn")
            .replace("cross.attn", "cross_attn").replace(".proj", "_proj") for n in names}


def test_estimate_json_and_determinism(demo_root, small_tensors, module_file):
    doc = json.loads(module_file.read_text())
    assert doc["version"] == 1 and doc["granularity"] == "module" and doc["top_k"] == 5
    assert doc["model"] == "acestep-v15-turbo" and doc["batches"] == 3
    assert doc["dataset"] == str(small_tensors)
    everything = [m["name"] for m in doc["all"]]
    assert sorted(everything) == sorted(projection_names(4))  # the demo has 4 layers
    assert all(NAME.match(n) for n in everything)
    scores = [m["score"] for m in doc["all"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0 and scores[-1] > 0
    assert doc["modules"] == doc["all"][:5]
    again = estimate(est_config(demo_root, small_tensors))
    assert again.to_json() == doc  # the same seed gives the same file
    other = estimate(est_config(demo_root, small_tensors, seed=7))
    assert other.ranking != again.ranking
    load_module_config(module_file)  # and selective reads it


def test_layer_granularity(demo_root, small_tensors):
    result = estimate(est_config(demo_root, small_tensors, granularity="layer", top_k=2))
    assert sorted(n for n, _ in result.ranking) == [f"layers.{i}" for i in range(4)]
    assert len(result.to_json()["modules"]) == 2
    # a K above the number ranked selects them all, and the file says how many it holds
    result = estimate(est_config(demo_root, small_tensors, granularity="layer", top_k=99))
    assert result.top_k == 4 and result.to_json()["top_k"] == 4
    assert len(result.to_json()["modules"]) == 4


@pytest.mark.parametrize("adapter", ["lora", "lokr"])
def test_selective_trains_exactly_the_chosen_modules(demo_root, small_tensors, module_file,
                                                     tmp_path, adapter):
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, mode="selective", epochs=1,
                       module_config=str(module_file), adapter_type=adapter)
    result = Trainer(cfg, [Recorder()]).run()
    assert result.status == "completed", result.error
    chosen = {m["name"] for m in json.loads(module_file.read_text())["modules"]}
    assert adapter_modules(out / "final" / "adapter") == chosen
    assert json.loads((out / "module_config.json").read_text()) == json.loads(
        module_file.read_text())  # the run keeps what it used


def test_layer_config_and_resume_keeps_the_recorded_modules(demo_root, small_tensors,
                                                            tmp_path):
    layer_file = tmp_path / "layers.json"
    layer_file.write_text(json.dumps({"version": 1, "granularity": "layer", "top_k": 1,
                                      "modules": [{"name": "layers.2", "score": 1.0}]}))
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, mode="selective", epochs=1,
                       module_config=str(layer_file))
    assert Trainer(cfg, [Recorder()]).run().status == "completed"
    layer2 = {n for n in projection_names(4) if n.startswith("layers.2.")}
    assert adapter_modules(out / "final" / "adapter") == layer2

    # The user edits the file afterwards; resuming the run still trains layer 2.
    layer_file.write_text(json.dumps({"version": 1, "granularity": "layer", "top_k": 1,
                                      "modules": [{"name": "layers.0", "score": 1.0}]}))
    checkpoint = sorted(out.glob("checkpoint-*"))[-1]
    resumed = train_config(demo_root, small_tensors, out, mode="selective", epochs=2,
                           module_config=str(layer_file), resume_from=str(checkpoint))
    assert Trainer(resumed, [Recorder()]).run().status == "completed"
    assert adapter_modules(out / "final" / "adapter") == layer2


def test_selective_trains_the_listed_modules_within_the_targets(demo_root, small_tensors,
                                                                 tmp_path):
    """Spec: selective takes every flag of fixed. `--attention-type self` was taken and not
    used (a cross-attention config trained cross-attention, the summary said "self"); it now
    narrows the listed modules, and a config left with none is refused before training."""
    layer_file = tmp_path / "layers.json"
    layer_file.write_text(json.dumps({"version": 1, "granularity": "layer", "top_k": 1,
                                      "model": "acestep-v15-base",
                                      "modules": [{"name": "layers.2", "score": 1.0}]}))
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, mode="selective", epochs=1,
                       module_config=str(layer_file), attention_type="self",
                       target_modules=("q_proj", "v_proj"))
    seen = Recorder()
    assert Trainer(cfg, [seen]).run().status == "completed"
    warned = [e.message for e in seen.events
              if getattr(e, "type", "") == "log" and e.level == "warning"]
    # made on another model (it was taken without a word), and narrowed to the targets
    assert any("ranks the modules of acestep-v15-base; this run trains acestep-v15-turbo"
               in m for m in warned), warned
    assert any("selective: 2 of the 8 modules in" in m for m in warned), warned
    assert adapter_modules(out / "final" / "adapter") == {
        "layers.2.self_attn.q_proj", "layers.2.self_attn.v_proj"}

    cross = tmp_path / "cross.json"
    cross.write_text(json.dumps({"version": 1, "granularity": "module", "top_k": 2,
                                 "modules": [{"name": "layers.1.cross_attn.v_proj", "score": 2},
                                             {"name": "layers.3.cross_attn.o_proj",
                                              "score": 1}]}))
    refused = tmp_path / "refused"
    result = Trainer(train_config(demo_root, small_tensors, refused, mode="selective", epochs=1,
                                  module_config=str(cross), attention_type="self"),
                     [Recorder()]).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert "none of its 2 modules is among the targets (--attention-type self" in result.error
    assert not list(refused.glob("checkpoint-*"))


def test_auto_estimate(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, mode="selective", epochs=1,
                       auto_estimate=True, estimate_batches=2, top_k=3)
    assert Trainer(cfg, [Recorder()]).run().status == "completed"
    recorded = json.loads((out / "module_config.json").read_text())
    assert recorded["batches"] == 2 and len(recorded["modules"]) == 3
    assert adapter_modules(out / "final" / "adapter") == {m["name"]
                                                          for m in recorded["modules"]}


def test_cli_estimate_and_refusals(demo_root, small_tensors, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["--plain", "estimate", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--dataset-dir", str(small_tensors), "--num-workers", "0",
            "--estimate-batches", "2", "--top-k", "4"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "Top 4 of 32" in out and "wrote estimate-turbo-module.json" in out
    assert main(base) == 0  # never over an earlier file
    assert Path("estimate-turbo-module-2.json").is_file()
    (tmp_path / "a_folder").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*base, "--output", "a_folder"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # an explicit --output over an existing file: refused (before the slow part) unless --force
    earlier = Path("estimate-turbo-module.json").read_bytes()
    assert main([*base, "--output", "estimate-turbo-module.json"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*base, "--output", "no-such/e.json"]) == 2  # and no folder is made for it
    assert "no-such does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert Path("estimate-turbo-module.json").read_bytes() == earlier
    assert main([*base, "--output", "estimate-turbo-module.json", "--force", "--seed", "7"]) == 0
    assert Path("estimate-turbo-module.json").read_bytes() != earlier

    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "granularity": "module", "modules": [{"name": "x"}]}')
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    code = main(["--plain", "-y", "selective", "--checkpoint-dir",
                 str(demo_root / "checkpoints"), "--dataset-dir", str(small_tensors),
                 "--output-dir", str(tmp_path / "sel"), "--module-config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.json" in err and "Traceback" not in err
    assert not (tmp_path / "sel").exists()
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest


def test_estimate_piped_into_head_says_why_it_stopped(demo_root, small_tensors, tmp_path):
    """`sidestep estimate ... | head -2`: it stops at the next batch with exit 130, writes
    nothing, and says so on stderr (it ended silently)."""
    import subprocess
    import sys

    argv = [str(Path(sys.executable).parent / "sidestep"), "--plain", "estimate",
            "--checkpoint-dir", str(demo_root / "checkpoints"), "--dataset-dir",
            str(small_tensors), "--num-workers", "0", "--estimate-batches", "6",
            "--output", str(tmp_path / "e.json")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    proc.stdout.readline()
    proc.stdout.close()  # the reader went away, as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 130
    assert "output closed, so stopped after" in err and "Traceback" not in err
    assert not (tmp_path / "e.json").exists()


def test_selective_says_what_its_module_config_trains_before_the_prompt(demo_root,
                                                                      small_tensors, tmp_path,
                                                                      capsys):
    """The notes on a module config (made on another model, narrowed to the targets) came from
    the trainer after the prompt was answered, and a config left with no modules was refused
    only then: both are known before the summary."""
    layer_file = tmp_path / "layers.json"
    layer_file.write_text(json.dumps({"version": 1, "granularity": "layer", "top_k": 1,
                                      "model": "acestep-v15-base",
                                      "modules": [{"name": "layers.2", "score": 1.0}]}))
    base = ["--plain", "selective", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--dataset-dir", str(small_tensors), "--output-dir", str(tmp_path / "run"),
            "--attention-type", "self"]
    assert main([*base, "--module-config", str(layer_file)]) == 2  # no terminal to confirm on
    err = capsys.readouterr().err
    asked = err.index("no terminal to confirm on")
    for note in ("ranks the modules of acestep-v15-base; this run trains acestep-v15-turbo",
                 "selective: 4 of the 8 modules in"):
        assert note in err and err.index(note) < asked, err

    cross = tmp_path / "cross.json"
    cross.write_text(json.dumps({"version": 1, "granularity": "module", "top_k": 1,
                                 "modules": [{"name": "layers.1.cross_attn.v_proj",
                                              "score": 2}]}))
    assert main([*base, "--module-config", str(cross)]) == 2
    shown = capsys.readouterr()
    assert "none of its 1 modules is among the targets" in shown.err
    assert "Side-Step training" not in shown.out and not (tmp_path / "run").exists()
