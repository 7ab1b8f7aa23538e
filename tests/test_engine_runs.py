"""End-to-end training on the demo model: LoRA, vanilla, LoKR; adapters load back."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import Recorder, train_config
from sidestep.engine.trainer import Trainer
from sidestep.model import load_acestep


def _probe_inputs(model_dir, seed=5):
    cfg = json.loads((model_dir / "config.json").read_text())
    g = torch.Generator().manual_seed(seed)
    c = cfg["audio_acoustic_hidden_dim"]
    return dict(hidden_states=torch.randn(1, 30, c, generator=g),
                timestep=torch.tensor([0.6]), timestep_r=torch.tensor([0.6]),
                encoder_hidden_states=torch.randn(1, 12, cfg["hidden_size"], generator=g),
                context_latents=torch.randn(1, 30, 2 * c, generator=g))


def _run(cfg):
    rec = Recorder()
    trainer = Trainer(cfg, [rec])
    result = trainer.run()
    return trainer, result, rec


def _losses(rec):
    return [e.loss for e in rec.of("step")]


def test_fixed_lora_learns_and_loads_with_peft(demo_root, tmp_path):
    from peft import PeftModel

    cfg = train_config(demo_root, demo_root / "tensors", tmp_path / "run", epochs=6,
                       rank=8, alpha=16, gradient_accumulation=4, learning_rate=1e-3,
                       save_every=3)
    trainer, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    losses = _losses(rec)
    assert len(losses) == 6 * 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05  # the loss falls
    # events.jsonl: every record typed, steps carry step/epoch/loss/lr, run_finished status
    lines = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    types = {x["type"] for x in lines}
    assert {"run_started", "step", "epoch_end", "checkpoint", "log", "run_finished"} <= types
    step = next(x for x in lines if x["type"] == "step")
    assert {"step", "epoch", "loss", "lr"} <= set(step)
    assert lines[-1]["type"] == "run_finished" and lines[-1]["status"] == "completed"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "completed" and run["config"]["rank"] == 8
    assert (tmp_path / "run" / "sidestep.log").read_text()
    assert list((tmp_path / "run" / "runs").glob("events.out.tfevents*"))
    # the final adapter loads with PEFT onto a fresh decoder and reproduces the trained model
    model_dir = demo_root / "checkpoints" / "acestep-v15-turbo"
    inputs = _probe_inputs(model_dir)
    trained = trainer.adapted.eval()
    with torch.no_grad():
        expected = trained(**inputs)[0]
    fresh = load_acestep(model_dir, parts=("decoder",)).decoder
    with torch.no_grad():
        base_out = fresh(**inputs)[0]
    peft_model = PeftModel.from_pretrained(fresh, str(tmp_path / "run" / "final" / "adapter"))
    peft_model.eval()
    with torch.no_grad():
        got = peft_model(**inputs)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert (base_out - expected).abs().max() > 1e-3  # the adapter did change the model
    cfg_json = json.loads((tmp_path / "run" / "final" / "adapter" /
                           "adapter_config.json").read_text())
    assert cfg_json["r"] == 8 and cfg_json["lora_alpha"] == 16


def test_vanilla_run_uses_discrete_timesteps(demo_root, small_tensors, tmp_path, monkeypatch):
    from sidestep.engine import objective

    seen = []
    real = objective.discrete_timesteps

    def spy(batch, schedule, device):
        t = real(batch, schedule, device)
        seen.extend(t.tolist())
        return t

    monkeypatch.setattr(objective, "discrete_timesteps", spy)
    monkeypatch.setattr(objective, "logit_normal_timesteps",
                        lambda *a: pytest.fail("vanilla must not use continuous timesteps"))
    monkeypatch.setattr(objective, "cfg_dropout",
                        lambda *a: pytest.fail("vanilla never drops conditions"))
    cfg = train_config(demo_root, small_tensors, tmp_path / "v", mode="vanilla",
                       model_variant="base", epochs=2)
    assert cfg.cfg_ratio == 0.0
    _trainer, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    schedule = objective.shifted_schedule(cfg.num_inference_steps, cfg.shift).tolist()
    assert seen and all(any(abs(t - s) < 1e-6 for s in schedule) for t in seen)


def test_fixed_base_model_uses_cfg_dropout(demo_root, small_tensors, tmp_path, monkeypatch):
    from sidestep.engine import objective

    ratios = []
    real = objective.cfg_dropout
    monkeypatch.setattr(objective, "cfg_dropout",
                        lambda e, n, r: ratios.append(r) or real(e, n, r))
    cfg = train_config(demo_root, small_tensors, tmp_path / "b", model_variant="base",
                       epochs=1)
    _t, result, _ = _run(cfg)
    assert result.status == "completed"
    assert ratios and set(ratios) == {0.15}


def test_lokr_learns_and_loads_with_lycoris(demo_root, tmp_path):
    from lycoris import create_lycoris_from_weights
    from safetensors import safe_open

    cfg = train_config(demo_root, demo_root / "tensors", tmp_path / "k", adapter_type="lokr",
                       epochs=4, lokr_linear_dim=8, lokr_linear_alpha=16, learning_rate=2e-3,
                       gradient_accumulation=4, lokr_factor=4)
    trainer, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    losses = _losses(rec)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    weights = tmp_path / "k" / "final" / "adapter" / "lokr_weights.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        meta = fh.metadata()
    lokr_cfg = json.loads(meta["lokr_config"])
    assert lokr_cfg["algo"] == "lokr" and lokr_cfg["linear_dim"] == 8
    assert lokr_cfg["factor"] == 4 and len(lokr_cfg["target_modules"]) == 32
    model_dir = demo_root / "checkpoints" / "acestep-v15-turbo"
    inputs = _probe_inputs(model_dir)
    trainer.adapted.eval()
    with torch.no_grad():
        expected = trainer.adapted(**inputs)[0]
    fresh = load_acestep(model_dir, parts=("decoder",)).decoder
    network, _ = create_lycoris_from_weights(1.0, str(weights), fresh)
    network.apply_to()
    network.load_state_dict(_, strict=False)
    with torch.no_grad():
        got = fresh(**inputs)[0]
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit", "adafactor", "prodigy"])
def test_every_optimizer_steps(demo_root, small_tensors, tmp_path, optimizer):
    lr = 1.0 if optimizer == "prodigy" else 1e-3
    cfg = train_config(demo_root, small_tensors, tmp_path / optimizer, optimizer_type=optimizer,
                       learning_rate=lr, epochs=1)
    trainer, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    assert len(rec.of("step")) == 3
    assert type(trainer.optimizer).__name__.lower().replace("fabric", "").startswith(
        {"adamw": "adamw", "adamw8bit": "adamw8bit", "adafactor": "adafactor",
         "prodigy": "prodigy"}[optimizer])
    before = {k: v.clone() for k, v in trainer.adapted.adapter_state().items()}
    assert any(float(v.abs().sum()) > 0 for v in before.values())


@pytest.mark.parametrize("scheduler", ["cosine", "cosine_restarts", "linear", "constant",
                                       "constant_with_warmup"])
def test_every_scheduler_steps(demo_root, small_tensors, tmp_path, scheduler):
    cfg = train_config(demo_root, small_tensors, tmp_path / scheduler, scheduler_type=scheduler,
                       epochs=2, warmup_steps=2, learning_rate=1e-3)
    _t, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    lrs = [e.lr for e in rec.of("step")]
    assert lrs[0] == pytest.approx(1e-4) and lrs[1] == pytest.approx(5.5e-4)
    assert lrs[2] == pytest.approx(1e-3)  # warmup 10% -> 100% over 2 steps


def test_min_snr_chunks_and_self_cross_targets(demo_root, small_tensors, tmp_path):
    cfg = train_config(demo_root, small_tensors, tmp_path / "m", loss_weighting="min_snr",
                       chunk_duration=1, epochs=1, attention_type="both",
                       self_target_modules=("q_proj", "v_proj"),
                       cross_target_modules=("o_proj",))
    trainer, result, rec = _run(cfg)
    assert result.status == "completed", result.error
    steps = rec.of("step")
    assert all(e.weighted_loss is not None and e.weighted_loss < e.loss for e in steps)
    names = trainer.adapted.spec.names
    assert all(n.split(".")[-1] in ("q_proj", "v_proj") for n in names if "self_attn" in n)
    assert all(n.endswith("o_proj") for n in names if "cross_attn" in n)
    assert len(names) == 4 * 3


def test_gradient_accumulation_flushes_remainder(demo_root, small_tensors, tmp_path):
    # 6 files, batch 1, accumulation 4 -> groups of 4 and 2 -> 2 steps per epoch
    cfg = train_config(demo_root, small_tensors, tmp_path / "acc", gradient_accumulation=4,
                       epochs=2)
    _t, result, rec = _run(cfg)
    assert result.status == "completed"
    assert [e.step for e in rec.of("step")] == [1, 2, 3, 4]
    started = rec.of("run_started")[0]
    assert started.steps_per_epoch == 2 and started.total_steps == 4


@pytest.mark.parametrize("omp_env", [None, "4"])
def test_cpu_runs_use_the_usable_cores_unless_the_user_set_threads(demo_root, small_tensors,
                                                                  tmp_path, monkeypatch, omp_env):
    """A headless CPU run trains on every usable core (sidestep/cpu_threads.py), for the run
    only, and a user's OMP_NUM_THREADS wins."""
    import sidestep.cpu_threads as cpu_threads

    if omp_env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_env)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 3)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    seen = []

    class ThreadProbe:
        def handle(self, event):
            if event.type == "step":
                seen.append(torch.get_num_threads())

        def close(self):
            pass

    try:
        cfg = train_config(demo_root, small_tensors, tmp_path / "threads", epochs=1)
        result = Trainer(cfg, [ThreadProbe()]).run()
        assert result.status == "completed" and seen
        assert set(seen) == ({3} if omp_env is None else {4})
        assert torch.get_num_threads() == 4  # given back when the run ends
    finally:
        torch.set_num_threads(before)


def decoder_inputs() -> dict:
    """One fixed decoder call on the demo model's sizes, to compare two decoders."""
    g = torch.Generator().manual_seed(0)
    return {"hidden_states": torch.randn(1, 8, 64, generator=g),
            "timestep": torch.tensor([0.5]), "timestep_r": torch.tensor([0.5]),
            "attention_mask": torch.ones(1, 8),
            "encoder_hidden_states": torch.randn(1, 5, 128, generator=g),
            "encoder_attention_mask": torch.ones(1, 5),
            "context_latents": torch.randn(1, 8, 128, generator=g)}


def test_dora_trains_resumes_and_loads_with_peft(demo_root, small_tensors, tmp_path):
    """--adapter-type dora: PEFT's DoRA (a learned magnitude per output row); the saved folder
    loads with PeftModel.from_pretrained, as ACE-Step's loader does, and reproduces the trained
    decoder; resuming restores the magnitudes too."""
    import torch
    from peft import PeftModel

    from sidestep.model import load_acestep

    out = tmp_path / "d"
    cfg = train_config(demo_root, small_tensors, out, adapter_type="dora", epochs=1)
    trainer = Trainer(cfg, [Recorder()])
    result = trainer.run()
    assert result.status == "completed", result.error
    adapter = out / "final" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert sum("lora_magnitude_vector" in k for k in keys) == 32  # 4 layers x 8 projections

    model_dir = demo_root / "checkpoints" / "acestep-v15-turbo"
    fresh = load_acestep(model_dir, parts=("decoder",)).decoder.eval()
    loaded = PeftModel.from_pretrained(fresh, str(adapter)).eval()
    trained = trainer.adapted.net.eval()
    x = decoder_inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(**x)[0], trained(**x)[0], atol=1e-5)

    checkpoint = sorted(out.glob("checkpoint-*"))[-1]
    resumed = train_config(demo_root, small_tensors, out, adapter_type="dora", epochs=2,
                           resume_from=str(checkpoint))
    assert Trainer(resumed, [Recorder()]).run().status == "completed"


def test_loha_trains_resumes_and_loads_with_lycoris(demo_root, small_tensors, tmp_path,
                                                     capsys):
    """--adapter-type loha: LyCORIS' Hadamard product; the file LyCORIS itself loads back
    reproduces the trained decoder; resume works; export says plainly it cannot yet."""
    from lycoris import create_lycoris_from_weights
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sidestep.cli import main
    from sidestep.config import vram

    out = tmp_path / "h"
    cfg = train_config(demo_root, small_tensors, out, adapter_type="loha", epochs=1,
                       loha_linear_dim=4, loha_linear_alpha=4)
    trainer = Trainer(cfg, [Recorder()])
    result = trainer.run()
    assert result.status == "completed", result.error
    weights = out / "final" / "adapter" / "loha_weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert json.loads(meta["loha_config"])["algo"] == "loha"
    assert sum(k.endswith(".hada_w1_a") for k in keys) == 32
    state = load_file(str(weights))
    assert vram.adapter_param_count(cfg, json.loads(
        (demo_root / "checkpoints" / "acestep-v15-turbo" / "config.json").read_text())) == \
        sum(v.numel() for k, v in state.items() if "hada" in k)

    fresh = load_acestep(demo_root / "checkpoints" / "acestep-v15-turbo",
                         parts=("decoder",)).decoder.eval()
    network, _ = create_lycoris_from_weights(1.0, str(weights), fresh)
    network.apply_to()
    network.load_state_dict(state, strict=False)
    x = decoder_inputs()
    with torch.no_grad():
        assert torch.allclose(fresh(**x)[0], trainer.adapted.net.eval()(**x)[0], atol=1e-5)

    checkpoint = sorted(out.glob("checkpoint-*"))[-1]
    resumed = train_config(demo_root, small_tensors, out, adapter_type="loha", epochs=2,
                           loha_linear_dim=4, loha_linear_alpha=4, resume_from=str(checkpoint))
    assert Trainer(resumed, [Recorder()]).run().status == "completed"
    # acestep.cpp reads no LoHA keys: refused, naming the format that works
    assert main(["--plain", "export", str(out), "--format", "acestep-cpp",
                 "--output", str(tmp_path / "h.safetensors")]) == 2
    assert "--format comfyui" in capsys.readouterr().err
    assert not (tmp_path / "h.safetensors").exists()
