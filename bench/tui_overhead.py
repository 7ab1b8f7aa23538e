"""What the app costs: training throughput with the monitor attached vs headless, and the time
to the app's first frame.

    uv run python bench/tui_overhead.py [--demo-dir DIR] [--epochs N]

Both throughput cases train the demo (quick_test settings) in their own process; the ratio
(monitor / headless) has a goal of >= 0.98. First frame: the real launcher in a pseudo-terminal,
timed until the dashboard's header is drawn (goal <= 0.6 s).
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _config(demo: Path, out: Path, epochs: int):
    from sidestep.config.presets import PresetStore
    from sidestep.config.resolve import resolve

    preset = PresetStore().load("quick_test").values
    return resolve("fixed", {"checkpoint_dir": str(demo / "checkpoints"),
                             "dataset_dir": str(demo / "tensors"), "output_dir": str(out),
                             "num_workers": 0, "epochs": epochs, "save_every": 10_000},
                   preset).config


def _steady_rate(run_dir: Path) -> float:
    """Samples per second from the engine's own step timestamps (events.jsonl), after the
    first fifth of the run (skips warm-up). Batch 1 x accumulation 4 in quick_test."""
    steps = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    times = [e["time"] for e in steps if e["type"] == "step"]
    first = len(times) // 5
    return 4 * (len(times) - 1 - first) / (times[-1] - times[first])


def headless(demo: Path, epochs: int) -> float:
    from sidestep.engine.trainer import Trainer

    out = Path(tempfile.mkdtemp()) / "run"
    result = Trainer(_config(demo, out, epochs)).run()
    assert result.status == "completed", result.error
    return _steady_rate(out)


def with_monitor(demo: Path, epochs: int) -> float:
    import asyncio

    from sidestep.tui.app import SideStepApp

    out = Path(tempfile.mkdtemp()) / "run"

    async def main() -> None:
        app = SideStepApp(prewarm=False, install_signals=False)
        async with app.run_test(size=(100, 32)) as pilot:
            app.start_run(_config(demo, out, epochs))  # opens the monitor screen
            while app.runner.state is None or app.runner.state.finished is None:
                await pilot.pause(1.0)
            assert app.runner.state.status == "completed"

    asyncio.run(main())
    return _steady_rate(out)


def first_frame(runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "32",
               "SIDESTEP_CONFIG_DIR": tempfile.mkdtemp()}
        master, slave = pty.openpty()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "sidestep_tui.py")], stdin=slave,
                                stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        buf = b""
        elapsed = None
        while time.perf_counter() - t0 < 30:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    buf += os.read(master, 65536)
                except OSError:
                    break
                if b"Recent runs" in buf:  # the dashboard has been drawn
                    elapsed = time.perf_counter() - t0
                    break
        proc.kill()
        proc.wait()
        os.close(master)
        if elapsed is not None:
            times.append(elapsed)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-dir", type=Path)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--case", choices=["headless", "monitor"])
    args = ap.parse_args()
    demo = args.demo_dir
    if args.case:
        fn = headless if args.case == "headless" else with_monitor
        print(json.dumps({"rate": fn(demo, args.epochs)}))
        return
    if demo is None:
        from sidestep.config.paths import cache_dir
        from sidestep.model.fixtures import demo_complete, make_demo

        demo = cache_dir() / "demo"
        if not demo_complete(demo):
            print(f"making the demo assets in {demo} ...", flush=True)
            make_demo(demo)
    rates = {}
    for case in ("headless", "monitor"):
        proc = subprocess.run([sys.executable, __file__, "--case", case, "--demo-dir",
                               str(demo), "--epochs", str(args.epochs)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{case} failed:\n{proc.stderr[-2000:]}")
            return
        rates[case] = json.loads(proc.stdout.strip().splitlines()[-1])["rate"]
        print(f"{case:9s}: {rates[case]:6.2f} samples/s")
    print(f"ratio monitor/headless: {rates['monitor'] / rates['headless']:.3f} (goal >= 0.98)")
    frames = first_frame()
    if frames:
        print(f"first frame: median {statistics.median(frames):.2f} s over {len(frames)} runs "
              f"(goal <= 0.6 s, ratio {statistics.median(frames) / 0.6:.2f})")
    else:
        print("first frame: not seen within 30 s")


if __name__ == "__main__":
    main()
