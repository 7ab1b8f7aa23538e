"""Our training step against the same model with dense-mask attention on the sliding layers.

    uv run python bench/step_vs_dense.py               # 5 interleaved pairs per config
    uv run python bench/step_vs_dense.py --quick       # 1 pair, 2 timed steps: a smoke run
    uv run python bench/step_vs_dense.py --profile ours --frames 3000   # torch.profiler table

The step is the real one: the decoder loaded from a checkpoint folder (sidestep.demo.write_dit at
the mid size of bench/train_step.py), a PEFT LoRA r16 on q/k/v/o of both attentions, the
flow-matching loss of sidestep.engine.objective, AdamW and gradient clipping at 1.0, fp32 on the
CPU with every core (--threads), freed memory kept as the Trainer does. "dense" is the same
code with the sliding layers forced onto the N x N band mask (sidestep.model.layers.SLIDING_PATH).
Each side runs in its own fresh process, so ru_maxrss is that side's own peak; the order
alternates from pair to pair. The checkpoint is written once, by this process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import CASES  # noqa: E402  (the mid-size model this repo benches)

FRAMES = (750, 3000)
TEXT_TOKENS = 200
SIDES = ("ours", "dense")


def write_checkpoint(root: Path) -> Path:
    from sidestep.demo import write_dit

    folder = root / "acestep-v15-turbo"
    write_dit(folder, {"is_turbo": True, **CASES["mid"]["overrides"]}, seed=0)
    return folder


def build_step(side: str, folder: Path, frames: int, rank: int, dropout: float):
    """(step function, number of trainable parameters) for one side."""
    import torch
    from decoder_step import lora_train_step

    from sidestep.cpu_malloc import keep_freed_memory
    from sidestep.model import layers, load_acestep

    keep_freed_memory()  # as the Trainer does on CPU
    layers.SLIDING_PATH = "auto" if side == "ours" else "dense"
    model = load_acestep(folder, device="cpu", dtype=torch.float32,
                         parts=("decoder", "null_condition_emb"))
    torch.manual_seed(0)
    return lora_train_step(model, rank, dropout, 1, frames, TEXT_TOKENS, "cpu")


def worker(args: argparse.Namespace) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    step, trainable = build_step(args.worker, Path(args.checkpoint), args.frames[0], args.rank,
                                 args.dropout)
    times = []
    for i in range(args.steps + 1):  # one warm-up step
        t0 = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "peak_mib": peak, "trainable": trainable}


def profile(args: argparse.Namespace, folder: Path) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads)
    step, _ = build_step(args.profile, folder, args.frames[0], args.rank, args.dropout)
    step()  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    print(f"{args.profile} T={args.frames[0]}, 2 steps, {torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def run_side(side: str, frames: int, folder: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--checkpoint", str(folder),
           "--frames", str(frames), "--steps", str(args.steps), "--rank", str(args.rank),
           "--dropout", str(args.dropout), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} T={frames} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-" \
           f"{max(values):.{digits}f})"


def compare(folder: Path, args: argparse.Namespace) -> None:
    print(f"mid config (h512, i1536, 4 layers sliding/full, 8/4 heads, window 128), batch 1, "
          f"text {TEXT_TOKENS}, LoRA r{args.rank} q/k/v/o, AdamW, clip 1.0, fp32 CPU, "
          f"{args.threads} threads; {args.pairs} pairs x {args.steps} steps "
          f"(median (min-max) over pairs of each process's median step)", flush=True)
    for frames in args.frames:
        res: dict[str, list[dict]] = {s: [] for s in SIDES}
        for i in range(args.pairs):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                res[side].append(run_side(side, frames, folder, args))
        step = {s: [statistics.median(r["times"]) for r in res[s]] for s in SIDES}
        ratio = [d / o for o, d in zip(step["ours"], step["dense"])]
        peak = {s: [r["peak_mib"] for r in res[s]] for s in SIDES}
        print(f"T={frames} ({-(-frames // 2)} patches): step s ours {spread(step['ours'], 3)}, "
              f"dense {spread(step['dense'], 3)}; dense/ours {spread(ratio, 2)}; peak RSS MiB "
              f"ours {spread(peak['ours'], 0)}, dense {spread(peak['dense'], 0)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per process")
    ap.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch intra-op threads (default: every core)")
    ap.add_argument("--quick", action="store_true", help="1 pair, 2 timed steps")
    ap.add_argument("--profile", choices=SIDES, help="print a torch.profiler table instead")
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.pairs, args.steps = 1, 2
    with tempfile.TemporaryDirectory(prefix="sidestep-bench-dense-") as tmp:
        folder = write_checkpoint(Path(tmp))
        if args.profile:
            profile(args, folder)
        else:
            compare(folder, args)


if __name__ == "__main__":
    main()
