"""Peak memory of a training run with and without audio samples (issue #17).

    uv run python bench/sample_memory.py [--demo-dir DIR] [--epochs N] [--duration S]

Each case is its own process training the demo model headless (the same config, EMA and a
validation split on); "samples" renders a sample every epoch, "samples+prompt" also encodes a
--sample-prompt (text and condition encoders loaded for each render and released). Printed:
peak RSS of each process (and peak CUDA memory on a GPU), and its ratio to the plain run. The
renders load the VAE (and encoders) only for the sample, so the peak may rise by those models
once (the CPU allocator keeps freed memory for reuse) but must not grow with the number of
samples: the RSS at each epoch's end levels off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from sidestep.config.resolve import resolve
from sidestep.engine.trainer import Trainer

args = json.loads(sys.argv[1])
rss = []

class Probe:
    def handle(self, e):
        if e.type == "epoch_end" or e.type == "sample":
            rss.append((e.type, e.epoch, _rss()))
    def close(self):
        pass

def _rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

cfg = resolve("fixed", args["values"]).config
t0 = time.monotonic()
result = Trainer(cfg, sinks=[Probe()]).run()
peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
print(json.dumps({"status": result.status, "seconds": time.monotonic() - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_cuda_mib": peak_cuda, "rss": rss}))
"""


def run_case(demo: Path, out: Path, epochs: int, extra: dict) -> dict:
    values = dict(checkpoint_dir=str(demo / "checkpoints"), dataset_dir=str(demo / "tensors"),
                  output_dir=str(out), num_workers=0, epochs=epochs, save_every=epochs,
                  learning_rate=1e-3, warmup_steps=2, rank=4, alpha=8, device="auto",
                  ema_decay=0.99, val_split=0.25, **extra)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"values": values})],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-dir", type=Path)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo_dir
        if demo is None:
            from sidestep.demo import make_demo

            demo = make_demo(Path(tmp) / "demo", seed=0, clips=12)
        cases = {
            "plain": {},
            "samples": {"sample_every_n_epochs": 1, "sample_duration": args.duration},
            "samples+prompt": {"sample_every_n_epochs": 1, "sample_duration": args.duration,
                               "sample_prompt": "warm lo-fi piano, vinyl crackle"},
        }
        base = None
        print(f"{'case':16} {'peak RSS MiB':>12} {'ratio':>6} {'CUDA MiB':>9} "
              f"{'seconds':>8}  RSS MiB at each epoch's end")
        for name, extra in cases.items():
            r = run_case(demo, Path(tmp) / name, args.epochs, extra)
            ends = [v for kind, _, v in r["rss"] if kind == "epoch_end"]
            base = base or r["peak_rss_mib"]
            cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
            print(f"{name:16} {r['peak_rss_mib']:12.0f} {r['peak_rss_mib'] / base:6.2f} "
                  f"{cuda:>9} {r['seconds']:8.1f}  " + " ".join(f"{v:.0f}" for v in ends))


if __name__ == "__main__":
    main()
