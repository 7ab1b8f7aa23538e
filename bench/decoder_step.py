"""Decoder forward+backward time.

    uv run python bench/decoder_step.py            # CPU: mid-size config (hidden 512, 4 layers)
    uv run python bench/decoder_step.py --cuda     # also: 2B config, bf16, LoRA r64, T=750

Prints milliseconds per step and, for the mid-size case, the ratio to a plain matmul-bound
estimate so runs on different machines can be compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sidestep.model import build_acestep, init_weights

MID = {
    "model_type": "acestep", "hidden_size": 512, "intermediate_size": 1536,
    "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
    "sliding_window": 128, "text_hidden_dim": 1024, "timbre_hidden_dim": 64,
    "num_lyric_encoder_hidden_layers": 1, "num_timbre_encoder_hidden_layers": 1,
}
REF_2B = Path(__file__).resolve().parent.parent / "tests" / "reference" / "config_turbo.json"


def inputs(config, batch: int, frames: int, cond: int, device, dtype):
    g = torch.Generator().manual_seed(0)
    c = config.audio_acoustic_hidden_dim

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    return dict(hidden_states=r(batch, frames, c), timestep=torch.rand(batch, generator=g).to(device),
                timestep_r=None, encoder_hidden_states=r(batch, cond, config.enc_hidden),
                context_latents=r(batch, frames, 2 * c)), r(batch, frames, c)


def lora_train_step(model, rank: int, dropout: float, batch: int, frames: int, text: int,
                    device, autocast: torch.dtype | None = None):
    """(step function, trainable parameter count) for ``model`` (decoder and null condition):
    a PEFT LoRA on q/k/v/o of both attentions (alpha = 2 x rank), the flow-matching loss of
    sidestep.engine.objective on fp32 inputs (as preprocessed tensors are), AdamW and gradient
    clipping at 1.0; the forward under ``autocast`` when given. The step benches share it."""
    from contextlib import nullcontext

    from sidestep.config.schema import PROJECTIONS
    from sidestep.engine import objective
    from sidestep.engine.adapters import AdapterSpec, attach, target_names
    from sidestep.engine.optim import build_optimizer

    config = model.config
    device = torch.device(device)
    names = target_names(config.num_hidden_layers, "both", list(PROJECTIONS))
    adapted = attach(model.decoder, model.null_condition_emb,
                     AdapterSpec(kind="lora", names=tuple(names), rank=rank, alpha=2 * rank,
                                 dropout=dropout))
    adapted.train()
    params = adapted.adapter_parameters()
    optimizer = build_optimizer("adamw", params, 1e-4, 0.01, device.type)
    kw, _ = inputs(config, batch, frames, text, device, torch.float32)
    data = {"target_latents": kw["hidden_states"],
            "attention_mask": torch.ones(batch, frames, device=device),
            "encoder_hidden_states": kw["encoder_hidden_states"],
            "encoder_attention_mask": torch.ones(batch, text, dtype=torch.bool, device=device),
            "context_latents": kw["context_latents"]}
    schedule = objective.shifted_schedule(8, 3.0)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast) if autocast else nullcontext():
            _, loss = objective.batch_loss(
                adapted, adapted.null_condition_emb, data, mode="fixed", cfg_ratio=0.0,
                loss_weighting="none", snr_gamma=5.0, schedule=schedule, mu=config.timestep_mu,
                sigma=config.timestep_sigma, device=device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


def time_steps(decoder, kw, target, steps: int, sync) -> list[float]:
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = decoder(**kw)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target.float())
        loss.backward()
        sync()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    return times


def bench_mid(steps: int, checkpointing: bool) -> None:
    model = build_acestep(MID, device="cpu", parts=("decoder",))
    init_weights(model)
    model.reset_nonpersistent_buffers("cpu")
    dec = model.decoder.train()
    dec.gradient_checkpointing = checkpointing
    kw, target = inputs(model.config, 1, 750, 769, "cpu", torch.float32)
    times = time_steps(dec, kw, target, steps, lambda: None)
    n_params = sum(p.numel() for p in dec.parameters())
    tokens = 375  # patched sequence
    flops = 6 * n_params * tokens  # forward+backward, weights only
    med = statistics.median(times)
    print(f"cpu mid-size (h512, 4 layers, T=750, ckpt={checkpointing}): "
          f"{med * 1000:8.1f} ms/step  ({flops / med / 1e9:.1f} GFLOP/s on weight matmuls)")


def bench_2b_lora(steps: int) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = json.loads(REF_2B.read_text())["config"]
    model = build_acestep(cfg, device="cuda", dtype=torch.bfloat16, parts=("decoder",))
    init_weights(model)
    model.reset_nonpersistent_buffers("cuda")
    dec = model.decoder
    dec.requires_grad_(False)
    dec.gradient_checkpointing = True
    peft_dec = get_peft_model(dec, LoraConfig(r=64, lora_alpha=128,
                                              target_modules=["q_proj", "k_proj", "v_proj",
                                                              "o_proj"]))
    peft_dec.train()
    kw, target = inputs(model.config, 1, 750, 769, "cuda", torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    times = time_steps(peft_dec, kw, target, steps, torch.cuda.synchronize)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"cuda 2B LoRA r64 bf16 T=750 ckpt: {statistics.median(times) * 1000:8.1f} ms/step, "
          f"peak {peak:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    bench_mid(args.steps, checkpointing=False)
    bench_mid(args.steps, checkpointing=True)
    if args.cuda:
        if not torch.cuda.is_available():
            print("cuda: not available, skipped")
        else:
            bench_2b_lora(args.steps)


if __name__ == "__main__":
    main()
