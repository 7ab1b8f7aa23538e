"""What the app costs: training throughput with the monitor attached vs headless, and the time
to the app's first frame.

    uv run python bench/tui_overhead.py [--demo-dir DIR] [--epochs N] [--repeat K]

Every case runs in its own process on a pseudo-terminal of 100x32 whose output this process
reads, as a terminal would. "monitor" is the real app (Textual's terminal driver, its output
thread, the GPU sampler; no test pilot) training the demo with the monitor on screen;
"headless" is the same config through the engine alone. They alternate ``--repeat`` times.
"interleaved" is one training in the app that swaps the monitor for a blank screen every few
seconds, which cancels slow drift.

The goal (monitor/headless >= 0.98) is judged on two views: the engine thread's time on a CPU
(its own clock, read at each step), precise and untouched by the machine's speed swings (~10 %
between runs and between seconds here) but blind to the loop doing less per CPU second; and
samples/s, which see everything but carry those swings (printed with their error bars). First
frame: the real launcher, timed until the dashboard is drawn (goal <= 0.6 s), next to a bare
Textual app's.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = (100, 32)
# The app's own threads; the rest (engine, its event writer, idle executor threads) train.
APP_THREADS = {"MainThread", "textual-output", "textual-input", "gpu-sampler"}


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


def _rate(times: list[float], per_step: int) -> float:
    """Samples per second over the gaps between consecutive step timestamps."""
    return per_step * (len(times) - 1) / (times[-1] - times[0])


def _steady_rate(run_dir: Path) -> float:
    """Samples per second after the first fifth of the run (skips warm-up)."""
    times, per_step = _step_times(run_dir)
    return _rate(times[len(times) // 5:], per_step)


def _thread_cpu_seconds(native_id: int) -> float:
    """A thread's CPU time from /proc: schedstat counts nanoseconds; stat's clock ticks
    (10 ms) are the fallback, too coarse for the app's millisecond bursts."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = (task / "stat").read_text()
    except OSError:
        return 0.0
    utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def _app_cpu_seconds() -> float:
    """CPU time of the app's threads (from /proc: the output thread is not ours to time)."""
    return sum(_thread_cpu_seconds(thread.native_id) for thread in threading.enumerate()
               if thread.name in APP_THREADS and thread.native_id is not None)


TRAINING_THREADS: list[int] = []  # torch's intra-op threads during the run, from _mark_steps


def _mark_steps() -> list[tuple[float, float, float]]:
    """(CPU time, wall time) of the engine's thread at each optimizer step, read on that thread
    as it emits the step (its own CPU clock: nanoseconds, and no other thread to find), and the
    process's garbage-collection time so far (a cost the engine could pay for the app's objects
    without leaving the CPU). Wall time is ``time.time()``, the clock of the events' stamps and
    of the interleaved case's phases."""
    import gc

    from sidestep.engine.events import StepMetrics
    from sidestep.engine.sinks import EventBus

    marks: list[tuple[float, float, float]] = []
    collecting = [0.0, 0.0]  # start of the collection under way, total so far

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    gc.callbacks.append(on_gc)
    emit = EventBus.emit

    def marked(bus, event) -> None:
        if isinstance(event, StepMetrics):
            marks.append((time.thread_time(), time.time(), collecting[1]))
            if len(marks) == 1:  # the engine sets them for the run and restores them after
                import torch

                TRAINING_THREADS.append(torch.get_num_threads())
        emit(bus, event)

    EventBus.emit = marked
    return marks


def _shares(marks: list[tuple[float, float, float]]) -> dict | None:
    """Between the first and last of ``marks``: the engine thread's time on a CPU, and the share
    of time spent collecting garbage. The loop runs on one Python thread at ~99 % of a core:
    what another thread takes from it (the GIL, a core) shows in the first, and the machine's
    speed swings, which move samples/s, do not. None with too few steps to tell."""
    if len(marks) < 3:
        return None
    (cpu0, wall0, gc0), (cpu1, wall1, gc1) = marks[0], marks[-1]
    return {"engine_cpu": (cpu1 - cpu0) / (wall1 - wall0), "gc": (gc1 - gc0) / (wall1 - wall0)}


def _engine_share(marks: list[tuple[float, float, float]]) -> dict:
    """``_shares`` over the steps ``_steady_rate`` counts."""
    shares = _shares(marks[len(marks) // 5:])
    if shares is None:
        raise RuntimeError(f"only {len(marks)} steps: too few to measure, raise --epochs")
    return shares


def headless(demo: Path, epochs: int, out: Path) -> dict:
    from sidestep.engine.trainer import Trainer

    marks = _mark_steps()
    result = Trainer(_config(demo, out, epochs)).run()
    assert result.status == "completed", result.error
    return {"rate": _steady_rate(out), **_engine_share(marks),
            "torch_threads": TRAINING_THREADS[0]}


def _run_app(config, drive) -> None:
    """The real app on this process's terminal training ``config``; ``drive(app)`` (a
    coroutine) runs beside it; an error in either is raised here."""
    from sidestep.tui.app import SideStepApp

    errors: list[BaseException] = []

    async def auto_pilot(pilot) -> None:
        app = pilot.app
        try:
            app.start_run(config)  # opens the monitor screen
            await drive(app)
        except BaseException as exc:  # reported by the parent, not lost in the terminal
            errors.append(exc)
        finally:
            app.exit()

    SideStepApp(prewarm=False, install_signals=False).run(auto_pilot=auto_pilot)
    if errors:
        raise errors[0]


async def _wait_steps(app, steps: int) -> None:
    import asyncio

    while app.runner.state.step < steps and app.runner.state.finished is None:
        await asyncio.sleep(0.2)


def with_monitor(demo: Path, epochs: int, out: Path) -> dict:
    import asyncio

    share: list[float] = []
    marks = _mark_steps()

    async def drive(app) -> None:
        await _wait_steps(app, 2)
        cpu0, wall0 = _app_cpu_seconds(), time.perf_counter()
        while app.runner.state.finished is None:
            await asyncio.sleep(1.0)
        share.append((_app_cpu_seconds() - cpu0) / (time.perf_counter() - wall0))
        assert app.runner.state.status == "completed", app.runner.state.status

    _run_app(_config(demo, out, epochs), drive)
    return {"rate": _steady_rate(out), "ui_share": share[0], **_engine_share(marks)}


def interleaved(demo: Path, epochs: int, out: Path, window: float = 3.0) -> dict:
    """One run; the monitor and a blank screen take turns every ``window`` seconds. Drift in
    the machine's speed (other tenants) hits neighbouring phases alike, so each monitor phase
    is compared with the blank phases on both sides of it: by samples/s, and by the engine
    thread's time on a CPU, which the machine's speed does not move."""
    import asyncio

    from textual.screen import Screen
    from textual.widgets import Static

    class Blank(Screen):
        def compose(self):
            yield Static("training; the monitor is hidden")

    phases: list[tuple[str, float, float, float]] = []  # kind, start, end, app threads' CPU
    settle = 0.5  # after a switch: the new screen's first full repaint is not steady state
    marks = _mark_steps()

    async def drive(app) -> None:
        await _wait_steps(app, 2)
        app.install_screen(Blank(), "blank")  # one instance: a switch mounts nothing
        kind = "monitor"
        while app.runner.state.finished is None:
            await asyncio.sleep(settle)
            cpu, start = _app_cpu_seconds(), time.time()
            await asyncio.sleep(window - settle)
            end = time.time()
            phases.append((kind, start, end, (_app_cpu_seconds() - cpu) / (end - start)))
            if kind == "monitor":
                app.push_screen("blank")
                kind = "blank"
            else:
                app.pop_screen()
                kind = "monitor"

    _run_app(_config(demo, out, epochs), drive)
    times, per_step = _step_times(out)

    def rate(start: float, end: float) -> float | None:
        # Gaps between steps inside the phase: no rounding to whole steps per phase, which at
        # ~3 steps/s would swamp a 2 % effect.
        inside = [t for t in times if start <= t < end]
        return _rate(inside, per_step) if len(inside) > 2 else None

    def engine(start: float, end: float) -> float | None:
        shares = _shares([m for m in marks if start <= m[1] < end])
        return shares and shares["engine_cpu"]

    phases = phases[:-1]  # the last one holds the run's end
    kinds = [kind for kind, *_ in phases]
    columns = {"rate": [rate(start, end) for _, start, end, _ in phases],
               "engine": [engine(start, end) for _, start, end, _ in phases],
               "busy": [busy for *_, busy in phases]}

    def against_neighbours(values: list) -> list[float]:
        """Each monitor phase over the mean of the blank phases either side of it: a steady
        drift in the machine's speed cancels instead of favouring whichever phase came first."""
        return [values[i] / ((values[i - 1] + values[i + 1]) / 2)
                for i in range(1, len(values) - 1)
                if kinds[i] == "monitor" and None not in values[i - 1:i + 2]]

    def mean(kind: str, column: str) -> float:
        return statistics.mean(v for k, v in zip(kinds, columns[column])
                               if k == kind and v is not None)

    return {"monitor": mean("monitor", "rate"), "blank": mean("blank", "rate"),
            "ratios": against_neighbours(columns["rate"]),
            "engine_ratios": against_neighbours(columns["engine"]),
            "busy": {k: mean(k, "busy") for k in ("monitor", "blank")},
            "engine": {k: mean(k, "engine") for k in ("monitor", "blank")}}


def _spread(ratios: list[float]) -> str:
    """Median, and the mean with two standard errors."""
    if len(ratios) < 2:
        return " ".join(f"{r:.3f}" for r in ratios)
    mean = statistics.mean(ratios)
    se = statistics.stdev(ratios) / len(ratios) ** 0.5
    return (f"median {statistics.median(ratios):.3f}, mean {mean:.3f} ± {2 * se:.3f} "
            f"(2 SE, {len(ratios)} pairs)")


def _in_pty(argv: list[str], env: dict | None = None, until: bytes | None = None,
            timeout: float = 900.0, linger: float = 0.0) -> tuple[bytes, float | None]:
    """Run ``argv`` on a fresh pseudo-terminal, reading its output as a terminal would.
    Returns the output and, with ``until``, the seconds until that text first appeared (the
    process is then killed, ``linger`` seconds later)."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(SIZE[0]),
           "LINES": str(SIZE[1]), **(env or {})}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    buf = bytearray()
    seen = None
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                buf += chunk
                if seen is None and until is not None and until in buf:
                    seen = time.perf_counter() - t0
                if seen is not None and time.perf_counter() - t0 >= seen + linger:
                    break
            elif proc.poll() is not None:
                break
    finally:
        try:  # the whole session: `uv run` leaves its child behind when only it is killed
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        os.close(master)
    return bytes(buf), seen


def run_case(case: str, demo: Path, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        output, _ = _in_pty([sys.executable, __file__, "--case", case, "--demo-dir", str(demo),
                             "--epochs", str(epochs), "--result", str(result)],
                            env={"SIDESTEP_CONFIG_DIR": tmp})
        if not result.exists():
            tail = output[-3000:].decode("utf-8", "replace")
            raise RuntimeError(f"the {case} case wrote no result; its terminal ended:\n{tail}")
        return json.loads(result.read_text())


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
        with tempfile.TemporaryDirectory() as tmp:
            # "Recent runs" is on the dashboard: it has been drawn.
            _, seen = _in_pty(argv, env={"SIDESTEP_CONFIG_DIR": tmp}, until=b"Recent runs",
                              timeout=30)
        if seen is not None:
            times.append(seen)
    return times


CASES = {"headless": headless, "monitor": with_monitor, "interleaved": interleaved}


def _has_bytecode(module: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    cached = importlib.util.cache_from_source(spec.origin) if spec and spec.origin else None
    return "yes" if cached and Path(cached).exists() else "no"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-dir", type=Path)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--interleaved-epochs", type=int, default=80)
    ap.add_argument("--skip-throughput", action="store_true", help="first frame only")
    ap.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # a child on its own terminal: the result goes to a file
        with tempfile.TemporaryDirectory() as tmp:
            result = CASES[args.case](args.demo_dir, args.epochs, Path(tmp) / "run")
        args.result.write_text(json.dumps(result))
        return
    demo = args.demo_dir
    if demo is None:
        from sidestep.config.paths import cache_dir
        from sidestep.demo import demo_complete, make_demo

        demo = cache_dir() / "demo"
        if not demo_complete(demo):
            print(f"making the demo assets in {demo} ...", flush=True)
            make_demo(demo)
    if not args.skip_throughput:
        throughput(demo, args.epochs, args.repeat, args.interleaved_epochs)
    frames = first_frame()
    bare = first_frame(argv=[sys.executable, "-c", BARE_APP])
    print(f"bytecode caches: Textual {_has_bytecode('textual.app')}, Side-Step "
          f"{_has_bytecode('sidestep.tui.app')} (without them each start compiles the sources: "
          f"pyproject sets uv's compile-bytecode for the dependencies)")
    if frames:
        line = (f"first frame: median {statistics.median(frames):.2f} s over {len(frames)} runs "
                f"(goal <= 0.6 s, ratio {statistics.median(frames) / 0.6:.2f})")
        if bare:
            line += f"; a bare Textual app here: {statistics.median(bare):.2f} s"
        print(line)
    else:
        print("first frame: not seen within 30 s")


def throughput(demo: Path, epochs: int, repeat: int, interleaved_epochs: int) -> None:
    rates: dict[str, list[float]] = {"headless": [], "monitor": []}
    engine: dict[str, list[float]] = {"headless": [], "monitor": []}
    collect: dict[str, list[float]] = {"headless": [], "monitor": []}
    shares, threads = [], set()
    for _ in range(repeat):
        for case in ("headless", "monitor"):
            result = run_case(case, demo, epochs)
            rates[case].append(result["rate"])
            engine[case].append(result["engine_cpu"])
            collect[case].append(result["gc"])
            if "ui_share" in result:
                shares.append(result["ui_share"])
            if "torch_threads" in result:
                threads.add(result["torch_threads"])
            print(f"{case:9s}: {result['rate']:6.2f} samples/s, engine thread on a CPU "
                  f"{100 * result['engine_cpu']:.2f} %", flush=True)
    pairs = [m / h for h, m in zip(rates["headless"], rates["monitor"])]
    engine_pairs = [m / h for h, m in zip(engine["headless"], engine["monitor"])]
    med = {case: statistics.median(values) for case, values in rates.items()}
    print(f"median headless {med['headless']:.2f}, monitor {med['monitor']:.2f} samples/s")
    print(f"samples/s monitor/headless, per pair: {' '.join(f'{p:.3f}' for p in pairs)}; "
          f"{_spread(pairs)}")
    print(f"engine thread's time on a CPU, monitor/headless, per pair: "
          f"{' '.join(f'{p:.4f}' for p in engine_pairs)}; {_spread(engine_pairs)}")
    print(f"app threads' CPU while training (UI, terminal output, input, GPU sampler): "
          f"{100 * statistics.median(shares):.2f} % of one core; garbage collection: headless "
          f"{100 * statistics.median(collect['headless']):.2f} %, monitor "
          f"{100 * statistics.median(collect['monitor']):.2f} % of the time; torch intra-op "
          f"threads while training {', '.join(map(str, sorted(threads)))} on {os.cpu_count()} CPUs")
    phase = run_case("interleaved", demo, interleaved_epochs)
    busy, engine_phase = phase["busy"], phase["engine"]
    print(f"interleaved, one run, monitor and a blank screen by turns: monitor "
          f"{phase['monitor']:.2f}, hidden {phase['blank']:.2f} samples/s; per phase pair "
          f"{_spread(phase['ratios'])}")
    print(f"  engine thread on a CPU: monitor {100 * engine_phase['monitor']:.2f} %, hidden "
          f"{100 * engine_phase['blank']:.2f} %; per phase pair {_spread(phase['engine_ratios'])}")
    print(f"  app threads' CPU: monitor {100 * busy['monitor']:.2f} %, hidden "
          f"{100 * busy['blank']:.2f} % of one core")
    # The decision: samples/s swing ~10 % between runs and between seconds of one run here, so
    # their ratio's error bars are wider than the 2 % at stake; the engine thread's CPU time
    # (the demo trains on one Python thread at ~99 % of a core) is what the app can take from
    # training, and the machine's speed does not move it.
    # Two views, and the goal needs both. The engine thread's time on a CPU is precise (the
    # machine's speed swings do not move it) but sees only what the app takes from the loop's
    # thread (the GIL, a core); samples/s also see the loop doing less per CPU second, and carry
    # the machine's ~10 % swings. Met: the engine ratio is >= 0.98 and samples/s do not rule it
    # out (their mean + 2 SE reaches 0.98).
    ratio = statistics.median(engine_pairs)
    print(f"monitor/headless by the engine thread's time on a CPU: {ratio:.3f}")
    verdict = ratio >= 0.98
    for name, values in (("pairs", pairs), ("interleaved", phase["ratios"])):
        print(f"monitor/headless by samples/s ({name}): {_spread(values)}")
        if len(values) > 1:
            se = statistics.stdev(values) / len(values) ** 0.5
            verdict = verdict and statistics.mean(values) + 2 * se >= 0.98
    print(f"goal monitor/headless >= 0.98: {'met' if verdict else 'NOT shown'}")

if __name__ == "__main__":
    main()
