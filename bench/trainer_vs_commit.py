"""The real Trainer's step, this checkout against another (an earlier commit), interleaved.

    git worktree add /tmp/before <commit>
    uv run python bench/trainer_vs_commit.py --before /tmp/before --pairs 5

Each side runs ``bench/train_step.py --case NAME`` (this checkout's bench file) in its own
process; the "before" side imports ``sidestep`` from the other checkout (PYTHONPATH), so the
same venv, data and case run on both codes. The order alternates by pair. Prints per case the
median steps/s of each side, the median after/before speed ratio with its range, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(case: str, code: Path | None, steps: int) -> dict:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(HERE / "train_step.py"), "--case", case,
                           "--steps", str(steps)], capture_output=True, text=True, env=env,
                          cwd=str(code) if code is not None else None)
    if proc.returncode != 0:
        raise SystemExit(f"{case} ({code or 'this checkout'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--cases", nargs="+", default=["mid-t750", "mid-t3000"])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    before = args.before.resolve()
    for case in args.cases:
        ratios, rates, peaks = [], {"before": [], "after": []}, {"before": [], "after": []}
        for i in range(args.pairs):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            got = {side: one(case, before if side == "before" else None, args.steps)
                   for side in order}
            for side in order:
                rates[side].append(got[side]["steps_per_sec"])
                peaks[side].append(got[side]["peak_mib"])
            ratios.append(got["after"]["steps_per_sec"] / got["before"]["steps_per_sec"])
            print(f"  {case} pair {i + 1}: before {1 / got['before']['steps_per_sec']:.3f} s, "
                  f"after {1 / got['after']['steps_per_sec']:.3f} s/step", flush=True)
        med = {side: statistics.median(v) for side, v in rates.items()}
        print(f"{case}: s/step before {1 / med['before']:.3f}, after {1 / med['after']:.3f}; "
              f"speed after/before {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs); peak RSS MiB "
              f"before {statistics.median(peaks['before']):.0f}, "
              f"after {statistics.median(peaks['after']):.0f}", flush=True)


if __name__ == "__main__":
    main()
