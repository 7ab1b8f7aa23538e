"""Time `sidestep --help` and `--print-config` in fresh processes (goal: well under a second).

    uv run python bench/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 7
CASES = {
    "sidestep --help": [sys.executable, "-m", "sidestep", "--help"],
    "fixed --print-config": [sys.executable, "-m", "sidestep", "fixed", "--checkpoint-dir", "a",
                             "--dataset-dir", "b", "--output-dir", "c", "--print-config"],
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
}


def main() -> None:
    for name, argv in CASES.items():
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{name:28s} median {med * 1000:7.1f} ms  (goal < 1000 ms, ratio {med / 1.0:.2f})")


if __name__ == "__main__":
    main()
