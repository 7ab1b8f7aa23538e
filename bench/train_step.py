"""Training throughput and peak memory of the real engine (Trainer), per configuration.

    uv run python bench/train_step.py                 # CPU: demo model and mid-size config
    uv run python bench/train_step.py --device cuda   # the same on a GPU (bf16)

Each case runs in its own process (so peak memory is the case's own) on synthetic preprocessed
tensors: a tiny checkpoint of that size is written to a temp folder first. Prints steps/s,
samples/s and peak memory (max RSS on CPU, max allocated on CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "demo": {"overrides": {}, "frames": 50, "rank": 16, "files": 8},
    "mid": {"overrides": {"hidden_size": 512, "intermediate_size": 1536,
                          "num_hidden_layers": 4, "num_attention_heads": 8,
                          "num_key_value_heads": 4, "head_dim": 64, "sliding_window": 128,
                          "layer_types": ["sliding_attention", "full_attention"] * 2},
            "frames": 750, "rank": 16, "files": 4},
}
# The configuration of issue #20's comparison with the reference: mid size, text length 200, at
# T=750 and T=3000 latent frames.
for _frames in (750, 3000):
    CASES[f"mid-t{_frames}"] = {**CASES["mid"], "frames": _frames, "text": 200, "files": 2}


def write_case(name: str) -> tuple[Path, Path, object]:
    """A tiny checkpoint of the case's size and synthetic preprocessed tensors, in a temp
    folder: (checkpoints root, tensors folder, model config)."""
    import torch

    from sidestep.demo import write_dit

    case = CASES[name]
    root = Path(tempfile.mkdtemp(prefix=f"sidestep-bench-{name}-"))
    config = write_dit(root / "checkpoints" / "acestep-v15-turbo",
                       {"is_turbo": True, **case["overrides"]}, seed=0)
    data = root / "tensors"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    t, c = case["frames"], config.audio_acoustic_hidden_dim
    text = case.get("text", 769)
    for i in range(case["files"]):
        torch.save({"target_latents": torch.randn(t, c, generator=g),
                    "attention_mask": torch.ones(t),
                    "encoder_hidden_states": torch.randn(text, config.enc_hidden, generator=g),
                    "encoder_attention_mask": torch.ones(text, dtype=torch.bool),
                    "context_latents": torch.randn(t, 2 * c, generator=g)}, data / f"{i}.pt")
    return root / "checkpoints", data, config


def run_case(name: str, device: str, steps: int) -> dict:
    import resource

    import torch

    from sidestep.config.resolve import resolve
    from sidestep.engine.sinks import CallbackSink
    from sidestep.engine.trainer import Trainer

    case = CASES[name]
    checkpoints, data, config = write_case(name)
    root = checkpoints.parent
    t = case["frames"]
    per_epoch = case["files"]
    epochs = max(2, -(-(steps + 2) // per_epoch))
    cfg = resolve("fixed", dict(
        checkpoint_dir=str(root / "checkpoints"), dataset_dir=str(data),
        output_dir=str(root / "out"), num_workers=0, epochs=epochs, rank=case["rank"],
        alpha=2 * case["rank"], gradient_accumulation=1, warmup_steps=1, save_every=10_000,
        device=device, log_heavy_every=10_000)).config
    stamps: list[float] = []
    trainer = Trainer(cfg, [CallbackSink(lambda e: stamps.append(time.perf_counter())
                                         if e.type == "step" else None)], write_files=False)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = trainer.run()
    assert result.status == "completed", result.error
    warm = stamps[2:]  # skip two warm-up steps
    rate = (len(warm) - 1) / (warm[-1] - warm[0])
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        where = "max allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        where = "max RSS"
    return {"case": name, "steps_per_sec": rate, "samples_per_sec": rate, "peak_mib": peak,
            "peak_kind": where, "frames": t, "trainable": trainer.trainable}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--case", choices=list(CASES))
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.steps)))
        return
    for name in CASES:
        proc = subprocess.run([sys.executable, __file__, "--case", name, "--device",
                               args.device, "--steps", str(args.steps)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{args.device} {name:5s} (T={r['frames']}, LoRA r16, {r['trainable']:,} trainable)"
              f": {r['steps_per_sec']:6.2f} steps/s, {r['samples_per_sec']:6.2f} samples/s, "
              f"peak {r['peak_mib']:8.0f} MiB ({r['peak_kind']})")


if __name__ == "__main__":
    main()
