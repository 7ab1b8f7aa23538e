"""What the gradient-sensitivity estimate costs: time per estimate batch against a training
step of the same batch on the same model, and peak memory of each.

    uv run python bench/estimate_cost.py                 # CPU: demo and mid-size configs
    uv run python bench/estimate_cost.py --device cuda   # the same on a GPU

Goal: about one training step per batch (the ratio estimate/step near 1, not more): both run
the same forward and backward; the estimate skips the optimizer but takes gradients of the full
attention weights instead of the adapter's, reading and freeing each as it is made. Each
measurement runs in its own process (so peak memory is its own), on the synthetic checkpoints
and tensors of ``bench/train_step.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import CASES, write_case  # noqa: E402  (the training side)


def estimate_case(name: str, device: str, batches: int) -> dict:
    import resource

    import torch

    from sidestep.config.resolve import resolve
    from sidestep.engine.estimate import estimate

    checkpoints, data, _config = write_case(name)
    cfg = resolve("estimate", dict(checkpoint_dir=str(checkpoints),
                                   dataset_dir=str(data), num_workers=0,
                                   estimate_batches=batches + 2, device=device)).config
    stamps: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    estimate(cfg, progress=lambda e: stamps.append(time.perf_counter())
             if e.phase == "batch" else None)
    warm = stamps[2:]  # skip two warm-up batches, as the step bench does
    rate = (len(warm) - 1) / (warm[-1] - warm[0])
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "batches_per_sec": rate, "peak_mib": peak}


def child(kind: str, name: str, device: str, n: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, 'bench'); import estimate_cost as b; "
            f"print(json.dumps(b.{'estimate_case' if kind == 'estimate' else 'run_case'}"
            f"({name!r}, {device!r}, {n})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    args = ap.parse_args()
    print(f"{'case':<6}{'step/s':>9}{'batch/s':>9}{'estimate/step':>15}"
          f"{'step peak':>12}{'est. peak':>12}")
    for name in args.cases:
        step = child("step", name, args.device, args.steps)
        est = child("estimate", name, args.device, args.steps)
        ratio = step["steps_per_sec"] / est["batches_per_sec"]
        print(f"{name:<6}{step['steps_per_sec']:>9.2f}{est['batches_per_sec']:>9.2f}"
              f"{ratio:>14.2f}x{step['peak_mib']:>8.0f} MiB{est['peak_mib']:>8.0f} MiB")
    print("estimate/step: time of one estimate batch in training steps (goal: about 1)")


if __name__ == "__main__":
    main()
