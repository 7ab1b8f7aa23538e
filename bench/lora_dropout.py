"""LoRA dropout on the CPU: torch's F.dropout against sidestep.engine.dropout.LoraDropout.

    uv run python bench/lora_dropout.py            # every core, the mid config's shapes

Forward and backward of one dropout on the LoRA inputs of the mid config (bench/train_step.py:
375 patches at T=750, 1500 at T=3000, hidden 512; the text of 200 tokens for cross-attention
k/v), alternating the two sides, freed memory kept as the Trainer does. Prints microseconds per
call (median of rounds) and the ratio torch/ours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--p", type=float, default=0.1)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from sidestep.cpu_malloc import keep_freed_memory
    from sidestep.engine.dropout import LoraDropout

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    ours = LoraDropout(args.p).train()
    print(f"LoRA dropout p={args.p}, fp32 CPU, {args.threads} threads, forward + backward, "
          f"median of {args.rounds} rounds x {args.calls} calls")
    for rows in (200, 375, 1500):
        x = torch.randn(1, rows, 512, requires_grad=True)
        sides = {"torch": lambda: F.dropout(x, args.p, True).sum().backward(),
                 "ours": lambda: ours(x).sum().backward()}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():
            per_call(fn, 5)  # warm-up
        for r in range(args.rounds):
            for name in (sides if r % 2 == 0 else reversed(list(sides))):
                times[name].append(per_call(sides[name], args.calls))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"  {rows:5d} x 512: torch {med['torch']:7.0f} us, ours {med['ours']:7.0f} us, "
              f"torch/ours {med['torch'] / med['ours']:.2f}")


if __name__ == "__main__":
    main()
