"""How long the README's commands take to start, as a user types them.

    uv run python bench/cli_startup.py            # warm machine: `uv run` as the README says
    uv run python bench/cli_startup.py --cold     # also a fresh environment's first starts

Cases, each the median of ``--runs`` fresh processes:
- ``uv run sidestep --help``, the whole process;
- ``uv run sidestep-tui``, launch to the dashboard's first frame on a real pseudo-terminal;
- the same two without ``uv run`` (the venv's own scripts): the floor ``uv run`` adds to;
- with ``UV_COMPILE_BYTECODE=1``: what the setting we dropped costs (uv recompiled every
  dependency's bytecode on each ``uv run``, ~14,000 files).
With ``--cold``, a new environment is made in a temporary folder (``uv sync``, from uv's
cache) and the first and second starts of each command are timed: the first writes the
bytecode of what it imports (in the background where PYTHONDONTWRITEBYTECODE is set: see
sidestep/bytecode.py). The environment's PYTHONDONTWRITEBYTECODE is printed with the figures.
Goals: warm `uv run sidestep --help` < 1 s, first frame < 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tui_overhead import _in_pty  # noqa: E402  (a real terminal, read as one reads it)

UV = shutil.which("uv") or "uv"
BIN = Path(sys.executable).parent


def whole_process(argv: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, cwd=ROOT,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def first_frame(argv: list[str], env: dict | None = None,
                linger: float = 0.0) -> float | None:
    """Seconds to the dashboard's first frame; the app is left open ``linger`` s more."""
    with tempfile.TemporaryDirectory() as tmp:  # "Recent runs" is on the dashboard
        _, seen = _in_pty(argv, env={"SIDESTEP_CONFIG_DIR": tmp, **(env or {})},
                          until=b"Recent runs", timeout=120, linger=linger)
    return seen


def median_of(fn, runs: int) -> str:
    times = [t for t in (fn() for _ in range(runs)) if t is not None]
    if not times:
        return "not seen"
    med = statistics.median(times)
    return f"median {med * 1000:7.0f} ms  (min {min(times) * 1000:.0f}, goal < 1000 ms, " \
           f"ratio {med:.2f})"


def warm(runs: int) -> None:
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
    no_compile = {"UV_COMPILE_BYTECODE": "0"}
    compile_on = {"UV_COMPILE_BYTECODE": "1"}
    cases = {
        "uv run sidestep --help": lambda: whole_process(
            [UV, "run", "sidestep", "--help"], no_compile),
        "uv run sidestep-tui (first frame)": lambda: first_frame(
            [UV, "run", "sidestep-tui"], no_compile),
        "sidestep --help (venv script)": lambda: whole_process([str(BIN / "sidestep"),
                                                                "--help"]),
        "sidestep-tui (venv script, first frame)": lambda: first_frame(
            [str(BIN / "sidestep-tui")]),
        "uv run sidestep --help, compile on": lambda: whole_process(
            [UV, "run", "sidestep", "--help"], compile_on),
        "uv run sidestep-tui, compile on": lambda: first_frame(
            [UV, "run", "sidestep-tui"], compile_on),
    }
    for name, fn in cases.items():
        print(f"{name:42s} {median_of(fn, runs)}", flush=True)


def cold() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"UV_PROJECT_ENVIRONMENT": str(Path(tmp) / "venv"), "UV_COMPILE_BYTECODE": "0"}
        t0 = time.perf_counter()
        subprocess.run([UV, "sync", "--quiet"], cwd=ROOT, check=True,
                       env={**os.environ, **env})
        print(f"{'fresh environment: uv sync':42s} {time.perf_counter() - t0:7.1f} s")
        for label, linger in (("first", 60.0), ("second", 0.0)):
            # the first start stays open a minute, as a user's would: long enough to import
            # the engine and, without PYTHONDONTWRITEBYTECODE's leave, write its bytecode
            frame = first_frame([UV, "run", "sidestep-tui"], env, linger)
            shown = f"{frame * 1000:7.0f} ms" if frame is not None else "not seen"
            print(f"{f'fresh: uv run sidestep-tui, {label} frame':42s} {shown}", flush=True)
        for label in ("first", "second"):
            took = whole_process([UV, "run", "sidestep", "--help"], env)
            print(f"{f'fresh: uv run sidestep --help, {label}':42s} {took * 1000:7.0f} ms",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also time a fresh environment")
    args = ap.parse_args()
    warm(args.runs)
    if args.cold:
        cold()


if __name__ == "__main__":
    main()
