"""One LoRA training step of the 2B model on CUDA: step time, tokens/s, achieved TFLOP/s, share
of the GPU's bf16 dense peak and peak memory.

    uv run python bench/cuda_step.py                  # flex sliding layers, T=750, LoRA r64
    uv run python bench/cuda_step.py --path dense     # the same with the dense band mask
    uv run python bench/cuda_step.py --frames 3000 --batch 2 --steps 30

Without CUDA it says so and exits 0.

The step is the Trainer's: the decoder of the 2B turbo config (tests/reference/config_turbo.json:
hidden 2048, 24 layers alternating sliding (window 128) and full attention, 16 query / 8 kv heads
of 128, MLP 6144, patch 2) in bf16 under bf16 autocast (Fabric's "bf16-mixed"), a PEFT LoRA
(alpha 2r, dropout 0.1) on q/k/v/o of self- and cross-attention, the flow-matching loss of
sidestep.engine.objective, fused AdamW and gradient clipping at 1.0; text (condition) length 200.
The weights are random (init_weights) and built on the GPU directly: bench/train_step.py writes a
checkpoint with sidestep.demo.write_dit and loads it, which for 2B means a ~8 GB fp32 build and
file on the CPU side for values that do not change the timing; load_acestep builds the same
modules and casts every tensor to the dtype, as here.

Model FLOPs per step (the count behind TFLOP/s; recompute under --checkpointing and the extra
QK^T of flash-style backward kernels are not counted). N = batch x ceil(frames / patch) latent
patches, M = batch x text tokens, P = in x out of one weight matrix:
- frozen base weights: forward 2·P·T over the T tokens the layer sees; backward 2·P·T for the
  gradient of its input where that input needs one (every projection and MLP on the N-patch
  stream, and proj_out), and no weight-gradient matmul. Layers whose input is data or frozen
  (proj_in, condition_embedder, the time embeddings, the base of cross-attention k/v over the
  condition, self-attention q/k/v of the first layer) have no backward: 2·P·T only.
- LoRA (A: in x r, B: r x out): forward 2·r·(in+out)·T, weight gradients 2·r·(in+out)·T,
  input gradients 2·r·out·T through B and 2·in·r·T through A (the latter only where the base's
  input needs one, as above): about 6·r·(in+out)·T.
- attention, per layer and head: QK^T and AV are 2·d·K each forward, K the number of (query,
  key) pairs attended; backward dS·K, dS^T·Q, P^T·dO and dO·V^T twice that: 12·d·K in all.
  Full layers K = N^2 (per sample), sliding layers the true band: sum over i of
  |{j : |i-j| <= window}| (the dense-mask path computes N^2 there, but it is counted the same,
  so the two paths compare on one scale), cross-attention K = N·M.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_2B = ROOT / "tests" / "reference" / "config_turbo.json"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity), matched in order on the device name: the
# PCIe and NVL boards clock lower than SXM.
PEAKS = [
    (("H100", "PCIe"), 756.0), (("H100", "NVL"), 835.0), (("H200", "NVL"), 835.0),
    (("H100",), 989.0), (("H200",), 989.0), (("A100",), 312.0), (("L40S",), 362.0),
    (("RTX 4090",), 165.0),
]


def peak_tflops(device_name: str) -> float | None:
    for parts, peak in PEAKS:
        if all(p in device_name for p in parts):
            return peak
    return None


def band_pairs(n: int, window: int) -> int:
    """(query, key) pairs with |i - j| <= window among n tokens."""
    return sum(min(i + window, n - 1) - max(i - window, 0) + 1 for i in range(n))


def step_flops(config, frames: int, text: int, batch: int, rank: int) -> dict[str, float]:
    """Model FLOPs of one training step (forward + backward), by part; see the module doc."""
    h, inter = config.hidden_size, config.intermediate_size
    heads, d = config.num_attention_heads, config.head_dim
    a, kv = heads * d, config.num_key_value_heads * d
    n_per = -(-frames // config.patch_size)
    n, m = batch * n_per, batch * text
    base_fwd = base_bwd = lora = attn = 0.0

    def frozen(p: int, tokens: int, input_grad: bool) -> None:
        nonlocal base_fwd, base_bwd
        base_fwd += 2 * p * tokens
        base_bwd += 2 * p * tokens if input_grad else 0

    def adapted(fan_in: int, fan_out: int, tokens: int, input_grad: bool) -> None:
        nonlocal lora
        frozen(fan_in * fan_out, tokens, input_grad)
        lora += 2 * rank * (fan_in + fan_out) * tokens * 2  # forward, weight gradients
        lora += 2 * rank * fan_out * tokens + (2 * fan_in * rank * tokens if input_grad else 0)

    for i in range(config.num_hidden_layers):
        # self-attention q/k/v: layer 0's input is built from data and frozen weights alone
        for fan_out in (a, kv, kv):
            adapted(h, fan_out, n, i > 0)
        adapted(a, h, n, True)  # self-attention o
        adapted(h, a, n, True)  # cross-attention q and o over the patches
        adapted(a, h, n, True)
        adapted(h, kv, m, False)  # cross-attention k and v over the condition
        adapted(h, kv, m, False)
        frozen(3 * h * inter, n, True)  # MLP gate, up, down
        window = config.window_for(i)
        pairs = band_pairs(n_per, window) if window is not None else n_per * n_per
        attn += 12 * d * heads * batch * (pairs + n_per * text)
    frozen(config.in_channels * config.patch_size * h, n, False)  # proj_in on data
    frozen(h * config.audio_acoustic_hidden_dim * config.patch_size, n, True)  # proj_out
    frozen(config.enc_hidden * h, m, False)  # condition_embedder
    frozen(2 * (256 * h + h * h + h * 6 * h), batch, False)  # time_embed and time_embed_r
    return {"linear forward": base_fwd, "linear input grads": base_bwd, "LoRA": lora,
            "attention": attn, "total": base_fwd + base_bwd + lora + attn}


def build_step(args, device: str = "cuda", cfg: dict | None = None):
    """(step function, config, trainable parameter count); ``device`` and ``cfg`` (default:
    the 2B config) let a CPU smoke run check the wiring on a tiny model."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from decoder_step import lora_train_step

    from sidestep.model import build_acestep, init_weights, layers

    layers.SLIDING_PATH = args.path
    cfg = cfg or json.loads(CONFIG_2B.read_text())["config"]
    torch.manual_seed(0)
    model = build_acestep(cfg, device=device, dtype=torch.bfloat16,
                          parts=("decoder", "null_condition_emb"))
    init_weights(model)
    model.reset_nonpersistent_buffers(device)
    model.decoder.gradient_checkpointing = args.checkpointing
    step, trainable = lora_train_step(model, args.rank, 0.1, args.batch, args.frames, args.text,
                                      device, autocast=torch.bfloat16)
    return step, model.config, trainable


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=750, help="latent frames (25 per second)")
    ap.add_argument("--rank", type=int, default=64, help="LoRA rank (alpha = 2 x rank)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed steps first (the first compiles FlexAttention)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--text", type=int, default=200, help="condition (text) tokens")
    ap.add_argument("--path", choices=("flex", "dense"), default="flex",
                    help="sliding-window layers: FlexAttention or the dense N x N band mask")
    ap.add_argument("--checkpointing", action="store_true",
                    help="gradient checkpointing (the Trainer's default; its recompute is not "
                         "counted in the FLOPs)")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("cuda_step: no CUDA device here; skipped (this benchmark needs an NVIDIA GPU)")
        return 0
    if args.path == "flex":
        from sidestep.model import layers

        if not layers.flex_available():
            print("cuda_step: FlexAttention or Triton is missing; use --path dense")
            return 1

    step, config, trainable = build_step(args)
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_mib = torch.cuda.max_memory_allocated() / 2**20

    flops = step_flops(config, args.frames, args.text, args.batch, args.rank)
    med = statistics.median(times)
    tokens = args.batch * -(-args.frames // config.patch_size)
    achieved = flops["total"] / med / 1e12
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    share = f"{100 * achieved / peak:.1f} % of {peak:.0f}" if peak else "n/a (unknown device)"
    parts = ", ".join(f"{k} {v / 1e12:.3f}" for k, v in flops.items() if k != "total")
    print(f"2B turbo (h{config.hidden_size}, {config.num_hidden_layers} layers, "
          f"{config.num_attention_heads}/{config.num_key_value_heads} heads x {config.head_dim}, "
          f"window {config.sliding_window}) on {name}, torch {torch.__version__}")
    print(f"T={args.frames} frames = {tokens} patches, batch {args.batch}, text {args.text}, "
          f"LoRA r{args.rank} q/k/v/o ({trainable:,} trainable), bf16, fused AdamW, "
          f"sliding path {args.path}, checkpointing {'on' if args.checkpointing else 'off'}")
    print(f"step        {med * 1e3:8.1f} ms  (median of {len(times)}; min "
          f"{min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}; {args.warmup} warm-up)")
    print(f"tokens/s    {tokens / med:8.0f}  latent patches per second")
    print(f"model FLOPs {flops['total'] / 1e12:8.3f} TFLOP/step  ({parts})")
    print(f"achieved    {achieved:8.1f} TFLOP/s  ({share} TFLOP/s bf16 dense peak)")
    print(f"peak memory {peak_mib:8.0f} MiB  (torch.cuda.max_memory_allocated, timed steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
