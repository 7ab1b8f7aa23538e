"""What the app costs: training throughput with the monitor attached vs headless, and the time
to the app's first frame.

    uv run python bench/tui_overhead.py [--demo-dir DIR] [--epochs N] [--repeat K]

Both throughput cases train the demo (quick_test settings) in their own process, alternated
``--repeat`` times (medians; this machine's speed drifts between runs); the ratio
(monitor / headless) has a goal of >= 0.98. A third case runs one training in the app and
switches between the monitor and a blank screen every few seconds, which cancels the drift.
First frame: the real launcher in a pseudo-terminal, timed until the dashboard is drawn
(goal <= 0.6 s), next to a bare Textual app's on the same machine.
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


def _step_times(run_dir: Path) -> tuple[list[float], int]:
    """The engine's own step timestamps (events.jsonl) and samples per optimizer step."""
    from sidestep.engine.events import RunStarted, StepMetrics, read_events

    events = read_events(run_dir / "events.jsonl")
    cfg = next(e.config for e in events if isinstance(e, RunStarted))
    return ([e.time for e in events if isinstance(e, StepMetrics)],
            cfg["batch_size"] * cfg["gradient_accumulation"])


def _steady_rate(run_dir: Path) -> float:
    """Samples per second after the first fifth of the run (skips warm-up)."""
    times, per_step = _step_times(run_dir)
    first = len(times) // 5
    return per_step * (len(times) - 1 - first) / (times[-1] - times[first])


def headless(demo: Path, epochs: int) -> float:
    from sidestep.engine.trainer import Trainer

    out = Path(tempfile.mkdtemp()) / "run"
    result = Trainer(_config(demo, out, epochs)).run()
    assert result.status == "completed", result.error
    return _steady_rate(out)


def with_monitor(demo: Path, epochs: int) -> tuple[float, float]:
    """(samples/s, the UI thread's CPU share of one core while training ran)."""
    import asyncio

    from sidestep.tui.app import SideStepApp

    out = Path(tempfile.mkdtemp()) / "run"
    share = []

    async def main() -> None:
        app = SideStepApp(prewarm=False, install_signals=False)
        async with app.run_test(size=(100, 32)) as pilot:
            app.start_run(_config(demo, out, epochs))  # opens the monitor screen
            while app.runner.state.step < 2:
                await pilot.pause(0.2)
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            while app.runner.state.finished is None:
                await pilot.pause(1.0)
            share.append((time.thread_time() - cpu0) / (time.perf_counter() - wall0))
            assert app.runner.state.status == "completed"

    asyncio.run(main())
    return _steady_rate(out), share[0]


def interleaved(demo: Path, epochs: int, window: float = 4.0) -> dict[str, float]:
    """One run in one app process; the monitor and a blank screen take turns every ``window``
    seconds. Drift in the machine's speed (other tenants) hits both phases alike, so their
    ratio is steadier than comparing separate processes."""
    import asyncio

    from textual.screen import Screen
    from textual.widgets import Static

    from sidestep.tui.app import SideStepApp

    class Blank(Screen):
        def compose(self):
            yield Static("training; the monitor is hidden")

    out = Path(tempfile.mkdtemp()) / "run"
    phases: list[tuple[str, float, float]] = []

    async def main() -> None:
        app = SideStepApp(prewarm=False, install_signals=False)
        async with app.run_test(size=(100, 32)) as pilot:
            app.start_run(_config(demo, out, epochs))
            while app.runner.state.step < 2:
                await pilot.pause(0.2)
            kind = "monitor"
            while app.runner.state.finished is None:
                start = time.time()
                await pilot.pause(window)
                phases.append((kind, start, time.time()))
                if kind == "monitor":
                    app.push_screen(Blank())
                    kind = "blank"
                else:
                    app.pop_screen()
                    kind = "monitor"

    asyncio.run(main())
    times, per_step = _step_times(out)
    count = {"monitor": 0, "blank": 0}
    span = {"monitor": 0.0, "blank": 0.0}
    for kind, start, end in phases[:-1]:  # the last phase holds the run's end
        start += 0.5  # skip the screen switch itself
        count[kind] += sum(start <= t < end for t in times)
        span[kind] += end - start
    return {kind: per_step * count[kind] / span[kind] for kind in count if span[kind] > 0}


# The floor on this machine: the smallest Textual app that draws the same marker text.
BARE_APP = """
from textual.app import App
from textual.widgets import Label
class Bare(App):
    def compose(self):
        yield Label("Recent runs")
Bare().run()
"""


def first_frame(runs: int = 3, argv: list[str] | None = None) -> list[float]:
    argv = argv or [sys.executable, str(ROOT / "sidestep_tui.py")]
    times = []
    for _ in range(runs):
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "32",
               "SIDESTEP_CONFIG_DIR": tempfile.mkdtemp()}
        master, slave = pty.openpty()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=slave,
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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", choices=["headless", "monitor", "interleaved"])
    args = ap.parse_args()
    demo = args.demo_dir
    if args.case == "headless":
        print(json.dumps({"rate": headless(demo, args.epochs)}))
        return
    if args.case == "interleaved":
        print(json.dumps(interleaved(demo, args.epochs)))
        return
    if args.case == "monitor":
        rate, share = with_monitor(demo, args.epochs)
        print(json.dumps({"rate": rate, "ui_share": share}))
        return
    if demo is None:
        from sidestep.config.paths import cache_dir
        from sidestep.model.fixtures import demo_complete, make_demo

        demo = cache_dir() / "demo"
        if not demo_complete(demo):
            print(f"making the demo assets in {demo} ...", flush=True)
            make_demo(demo)
    # Alternate the cases so drift in the machine's speed hits both alike; report medians.
    rates: dict[str, list[float]] = {"headless": [], "monitor": []}
    shares = []
    for _ in range(args.repeat):
        for case in ("headless", "monitor"):
            proc = subprocess.run([sys.executable, __file__, "--case", case, "--demo-dir",
                                   str(demo), "--epochs", str(args.epochs)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{case} failed:\n{proc.stderr[-2000:]}")
                return
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rates[case].append(result["rate"])
            if "ui_share" in result:
                shares.append(result["ui_share"])
            print(f"{case:9s}: {result['rate']:6.2f} samples/s", flush=True)
    med = {case: statistics.median(values) for case, values in rates.items()}
    print(f"median headless {med['headless']:.2f}, monitor {med['monitor']:.2f} samples/s; "
          f"ratio monitor/headless: {med['monitor'] / med['headless']:.3f} (goal >= 0.98)")
    print(f"UI thread CPU while training: {100 * statistics.median(shares):.1f} % of one core")
    proc = subprocess.run([sys.executable, __file__, "--case", "interleaved", "--demo-dir",
                           str(demo), "--epochs", str(max(args.epochs, 30))],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        phase = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"interleaved in one run: monitor {phase['monitor']:.2f}, hidden "
              f"{phase['blank']:.2f} samples/s; ratio {phase['monitor'] / phase['blank']:.3f}")
    else:
        print(f"interleaved failed:\n{proc.stderr[-2000:]}")
    frames = first_frame()
    bare = first_frame(argv=[sys.executable, "-c", BARE_APP])
    if frames:
        line = (f"first frame: median {statistics.median(frames):.2f} s over {len(frames)} runs "
                f"(goal <= 0.6 s, ratio {statistics.median(frames) / 0.6:.2f})")
        if bare:
            line += f"; a bare Textual app here: {statistics.median(bare):.2f} s"
        print(line)
    else:
        print("first frame: not seen within 30 s")


if __name__ == "__main__":
    main()
