"""How many intra-op threads a CPU run should train with, headless and with the app attached:
the figures behind ``sidestep.cpu_threads.training_threads``.

    uv run python bench/thread_policy.py [--rounds 6] [--steps 16] [--threads 1,2]

The real Trainer on the ``mid`` config of ``bench/train_step.py`` (hidden 512, 4 layers, T=750,
LoRA r16), each run in its own process on a pseudo-terminal (``bench/tui_overhead.py``'s
``_in_pty``), its thread count forced with ``OMP_NUM_THREADS`` (which the policy leaves alone).
"headless" is the engine alone; "app" is the real app training with the monitor on screen (its
UI, terminal output and input threads in the same process). Each round runs every case once,
in a rotated order, so the machine's drift hits all cases alike; ratios are taken within a
round. Printed: seconds per optimizer step (median over the steps after the first three), the
app's event-loop lag (how late a 50 ms timer fires: what a user feels as a sluggish UI) and
its threads' share of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import train_step  # noqa: E402  (bench/ is not a package)
import tui_overhead  # noqa: E402

CASE = "mid"
WARMUP_STEPS = 3
BUSY_LIMIT = 0.15  # cores the rest of the machine may use during a run that counts


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (steal included: the host's other guests)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _wait_for_quiet(limit: float = BUSY_LIMIT, most: float = 600.0) -> float:
    """Wait (up to ``most`` seconds) for two seconds in which the machine is nearly idle: the
    box is shared, and another tenant's load swamps what is measured here. Returns the
    seconds waited."""
    t0 = time.monotonic()
    while True:
        busy0, wall0 = _machine_busy(), time.monotonic()
        time.sleep(2.0)
        used = (_machine_busy() - busy0) / (time.monotonic() - wall0)
        if used <= limit or time.monotonic() - t0 > most:
            return time.monotonic() - t0


def _mark_load() -> list[tuple[float, float, float]]:
    """(wall, machine busy, this process's CPU) at each optimizer step: what the rest of the
    machine took meanwhile is the difference."""
    from sidestep.engine.events import StepMetrics
    from sidestep.engine.sinks import EventBus

    marks: list[tuple[float, float, float]] = []
    emit = EventBus.emit

    def marked(bus, event) -> None:
        if isinstance(event, StepMetrics):
            marks.append((time.monotonic(), _machine_busy(), _own_cpu()))
        emit(bus, event)

    EventBus.emit = marked
    return marks


def _others(load) -> float:
    """Cores the rest of the machine used over the timed steps."""
    (w0, b0, o0), (w1, b1, o1) = load[WARMUP_STEPS], load[-1]
    return max(0.0, ((b1 - b0) - (o1 - o0)) / (w1 - w0))


def _config(root: Path, out: Path, steps: int):
    from sidestep.config.resolve import resolve

    case = train_step.CASES[CASE]
    epochs = -(-(steps + WARMUP_STEPS) // case["files"])  # batch 1: a step per file
    return resolve("fixed", dict(
        checkpoint_dir=str(root / "checkpoints"), dataset_dir=str(root / "tensors"),
        output_dir=str(out), num_workers=0, epochs=epochs, rank=case["rank"],
        alpha=2 * case["rank"], gradient_accumulation=1, warmup_steps=1, save_every=10_000,
        device="cpu", log_heavy_every=10_000)).config


def _step_seconds(marks) -> float:
    walls = [wall for _cpu, wall, _gc in marks][WARMUP_STEPS:]
    if len(walls) < 3:
        raise RuntimeError(f"only {len(marks)} steps: raise --steps")
    return statistics.median(b - a for a, b in zip(walls, walls[1:]))


def headless(root: Path, out: Path, steps: int) -> dict:
    from sidestep.engine.trainer import Trainer

    marks = tui_overhead._mark_steps()
    load = _mark_load()
    result = Trainer(_config(root, out, steps)).run()
    assert result.status == "completed", result.error
    return {"step_s": _step_seconds(marks), "threads": tui_overhead.TRAINING_THREADS[0],
            "others": _others(load)}


def app(root: Path, out: Path, steps: int) -> dict:
    marks = tui_overhead._mark_steps()
    load = _mark_load()
    lags: list[float] = []
    share: list[float] = []
    tick = 0.05

    async def drive(the_app) -> None:
        await tui_overhead._wait_steps(the_app, WARMUP_STEPS)
        cpu0, wall0 = tui_overhead._app_cpu_seconds(), time.perf_counter()
        while the_app.runner.state.finished is None:
            t0 = time.perf_counter()
            await asyncio.sleep(tick)
            lags.append(time.perf_counter() - t0 - tick)
        share.append((tui_overhead._app_cpu_seconds() - cpu0) / (time.perf_counter() - wall0))
        assert the_app.runner.state.status == "completed", the_app.runner.state.status

    tui_overhead._run_app(_config(root, out, steps), drive)
    lags.sort()
    return {"step_s": _step_seconds(marks), "threads": tui_overhead.TRAINING_THREADS[0],
            "others": _others(load), "lag_p50_ms": 1000 * lags[len(lags) // 2],
            "lag_p95_ms": 1000 * lags[int(0.95 * (len(lags) - 1))], "ui_share": share[0]}


CASES = {"headless": headless, "app": app}


def run_one(kind: str, threads: int, root: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        output, _ = tui_overhead._in_pty(
            [sys.executable, __file__, "--case", kind, "--root", str(root), "--steps",
             str(steps), "--result", str(result)],
            env={"SIDESTEP_CONFIG_DIR": tmp, "OMP_NUM_THREADS": str(threads)})
        if not result.exists():
            tail = output[-3000:].decode("utf-8", "replace")
            raise RuntimeError(f"{kind} with {threads} threads wrote no result:\n{tail}")
        found = json.loads(result.read_text())
    assert found["threads"] == threads, found
    return found


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return (f"{fmt.format(statistics.median(values))} "
            f"[{fmt.format(min(values))}–{fmt.format(max(values))}]")


def report(runs: dict[tuple[str, int], list[dict]], counts: list[int], keep: list[int],
           title: str) -> None:
    """The table and ratios over the rounds ``keep`` (ratios are taken within a round)."""
    print(f"\n{title}: {len(keep)} rounds")
    if not keep:
        return
    kept = {case: [found[r] for r in keep] for case, found in runs.items()}
    print("s/step, median [min–max] over rounds")
    for (kind, n), found in kept.items():
        def col(key: str, scale: float = 1.0) -> str:
            return _spread([scale * x[key] for x in found], "{:.1f}")

        line = f"  {kind:8s} {n:2d} threads: {_spread([x['step_s'] for x in found])}"
        if kind == "app":
            line += (f"; loop lag p50 {col('lag_p50_ms')} ms, p95 {col('lag_p95_ms')} ms; "
                     f"UI {col('ui_share', 100)} % of a core")
        print(line)

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> list[float]:
        """Speed of ``a`` over ``b`` (b's s/step over a's), per round."""
        return [y["step_s"] / x["step_s"] for x, y in zip(kept[a], kept[b])]

    lo, hi = counts[0], counts[-1]
    print("speed ratios per round, median [min–max]")
    print(f"  headless {hi} / {lo} threads: {_spread(ratio(('headless', hi), ('headless', lo)))}")
    print(f"  app      {hi} / {lo} threads: {_spread(ratio(('app', hi), ('app', lo)))}")
    for n in counts:
        print(f"  app {n} / headless {hi} threads: "
              f"{_spread(ratio(('app', n), ('headless', hi)))}  (goal >= 0.98)")
    for kind in CASES:
        best = max(counts, key=lambda n: statistics.median(ratio((kind, n), ("headless", hi))))
        print(f"  fastest {kind}: {best} threads")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=16, help="timed steps per run")
    ap.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}",
                    help="thread counts to compare (default: 1 and all usable cores)")
    ap.add_argument("--no-wait", action="store_true",
                    help="start each run at once, without waiting for a quiet machine")
    ap.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # a child on its own terminal: the result goes to a file
        with tempfile.TemporaryDirectory() as tmp:
            found = CASES[args.case](args.root, Path(tmp) / "run", args.steps)
        args.result.write_text(json.dumps(found))
        return
    counts = sorted({int(n) for n in args.threads.split(",")})
    checkpoints, _tensors, _config_ = train_step.write_case(CASE)
    root = checkpoints.parent
    cases = [(kind, n) for kind in CASES for n in counts]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in cases}
    print(f"{CASE} config, {args.steps} timed steps a run, {args.rounds} rounds, "
          f"{len(os.sched_getaffinity(0))} usable cores", flush=True)
    try:
        for r in range(args.rounds):
            for kind, n in cases[r % len(cases):] + cases[:r % len(cases)]:
                waited = 0.0 if args.no_wait else _wait_for_quiet()
                found = run_one(kind, n, root, args.steps)
                runs[(kind, n)].append(found)
                extra = (f", loop lag p50 {found['lag_p50_ms']:.1f} ms p95 "
                         f"{found['lag_p95_ms']:.1f} ms, UI {100 * found['ui_share']:.1f} % "
                         "of a core" if kind == "app" else "")
                print(f"round {r + 1}: {kind:8s} {n} threads: {found['step_s']:.3f} s/step, "
                      f"others {found['others']:.2f} cores (waited {waited:.0f} s){extra}",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    done = min(len(found) for found in runs.values())
    report(runs, counts, list(range(done)), "all rounds")
    clean = [r for r in range(done)
             if all(found[r]["others"] <= BUSY_LIMIT for found in runs.values())]
    report(runs, counts, clean, f"rounds where the rest of the machine used <= {BUSY_LIMIT} "
                                "cores in every run")


if __name__ == "__main__":
    main()
