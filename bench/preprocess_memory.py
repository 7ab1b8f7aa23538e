"""Peak memory of the VAE encode in preprocessing: 30 s vs 5 min of audio, tiled as
preprocessing runs it, next to the whole-song encode it replaced.

    uv run python bench/preprocess_memory.py [--demo-dir DIR]

Each case runs in a fresh process (peak RSS is a process-wide high-water mark). It loads the
demo VAE, then encodes stereo 48 kHz noise of the given length through ``vae_encode``, and
prints the peak RSS above the process's state after loading (so imports and weights are not
counted) together with the audio buffer's own size, which any encode must hold. Goal: the tiled
encode's peak grows with the song only by the audio and latents themselves, not by activations.
The whole-song encode of 5 min is not run (its first layer alone holds 128 x 14.4 M floats =
7.4 GB on the demo VAE); its size is extrapolated from 30 s. Takes ~15 min on 2 CPU cores: the
demo VAE is narrow but runs its first layers at the full 48 kHz.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import torch
from sidestep.data.preprocess import CPU_TILE_SECONDS, load_vae, vae_encode
root, seconds, tiled = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "tiled"
vae = load_vae(root + "/checkpoints/vae", "cpu", torch.float32)
with torch.no_grad():  # warm the allocator and kernels on a short clip
    vae_encode(vae, torch.zeros(2, 48000), None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
audio = torch.randn(2, int(48000 * seconds)).mul_(0.1)
t0 = time.perf_counter()
lat = vae_encode(vae, audio, None, CPU_TILE_SECONDS if tiled else 10 * seconds)
took = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": (peak - base) / 1024, "audio_mib": audio.numel() * 4 / 2**20,
                  "frames": lat.shape[0], "seconds": took}))
"""


def case(root: Path, seconds: float, tiled: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(seconds),
                           "tiled" if tiled else "whole"], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"case {seconds}s tiled={tiled} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-dir", type=Path, default=None,
                    help="an existing `sidestep make-demo` folder (default: build one)")
    args = ap.parse_args()
    root = args.demo_dir
    if root is None:
        import tempfile

        from sidestep.demo import make_demo

        root = Path(tempfile.mkdtemp(prefix="sidestep-bench-")) / "demo"
        make_demo(root, clips=2)
    rows = [("tiled", 30, case(root, 30, True)), ("tiled", 300, case(root, 300, True)),
            ("whole", 30, case(root, 30, False))]
    print(f"{'encode':<7}{'audio':>8}{'peak above load':>18}{'audio buffer':>15}"
          f"{'frames':>8}{'time':>8}")
    for kind, secs, r in rows:
        print(f"{kind:<7}{secs:>7}s{r['peak_mib']:>15.0f} MiB{r['audio_mib']:>11.0f} MiB"
              f"{r['frames']:>8}{r['seconds']:>7.1f}s")
    t30, t300, w30 = rows[0][2], rows[1][2], rows[2][2]
    grow = t300["peak_mib"] - t30["peak_mib"]
    buffers = t300["audio_mib"] - t30["audio_mib"]
    print(f"tiled: 5 min / 30 s peak = {t300['peak_mib'] / t30['peak_mib']:.2f}x; growth "
          f"{grow:.0f} MiB vs {buffers:.0f} MiB of audio buffers (ratio {grow / buffers:.2f}; "
          "<= ~1 means activations did not grow)")
    print(f"whole-song encode of 30 s: {w30['peak_mib']:.0f} MiB = "
          f"{w30['peak_mib'] / t30['peak_mib']:.1f}x the tiled peak; of 5 min it would need "
          f"~{w30['peak_mib'] * 10 / 1024:.1f} GiB")


if __name__ == "__main__":
    main()
