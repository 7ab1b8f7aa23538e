"""CPU runs: how many intra-op threads torch trains with (``training_threads``).

Every usable core, headless and with the app in the process, except that the app keeps a
core to itself on machines of ``APP_LEAVES_A_CORE_FROM`` cores or more. Measured with
``bench/thread_policy.py`` on the 2-core box, mid config (hidden 512, 4 layers, T=750, LoRA
r16, gradient checkpointing), 5 rounds with the rest of the machine idle, s/step median
[min-max]:

    headless  1 thread  0.882 [0.821-1.038]   2 threads 0.708 [0.602-0.740]   2/1: 1.28x
    app       1 thread  0.890 [0.831-1.012]   2 threads 0.669 [0.563-0.722]   2/1: 1.50x
    (speed ratios per round: headless 2/1 1.28 [1.13-1.73], app 2/1 1.50 [1.16-1.61];
    app with 2 threads / headless 2 threads 1.03 [0.84-1.26], app with 1 / headless 2 0.73)

The app's UI took 1.8 % of a core (at most 4.6 %) either way, and its event loop stayed
prompt beside two spinning workers (a 50 ms timer late by 0.3 ms median, 3.5 ms p95, vs 1.1
ms with one thread): leaving it a core (the earlier policy) made a 2-core run in the app 1.5x
slower and saved the UI nothing a user sees. (The tiny demo model did lose ~10 % with the app
on every core, bench/tui_overhead.py; its parallel regions are short, so a preempted worker's
wait weighs more.) Leaving a core costs a run up to 1/cores of its compute, sharing costs it
about the app's share of a core, so a core is left only from 24 cores up (1/24 ~ the UI's
busiest 4.6 %): not measured, the box here has 2.

A user's ``OMP_NUM_THREADS`` is left alone, and so are data-parallel CPU ranks: Lightning's
launcher sets it to cores // ranks in each rank, torchrun to 1.
"""

from __future__ import annotations

import os

# With the app in the process, from this many usable cores up its threads get one to
# themselves (the module docstring says why).
APP_LEAVES_A_CORE_FROM = 24


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def training_threads(cores: int, with_app: bool) -> int:
    """Intra-op threads for a training run (or estimate) on ``cores`` usable cores; ``with_app``:
    the app's UI shares the process (and wants some CPU of its own)."""
    cores = max(1, cores)
    if with_app and cores >= APP_LEAVES_A_CORE_FROM:
        return cores - 1
    return cores


def use_training_threads(with_app: bool = False) -> int | None:
    """Apply ``training_threads`` for a CPU run; returns the previous count for ``restore``, or
    None when nothing was changed (``OMP_NUM_THREADS`` set, or already right)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    before = torch.get_num_threads()
    # Never above torch's default (physical cores where MKL decides: hyperthreads do not speed
    # up its kernels) nor the cores this process may run on (a container's share).
    wanted = training_threads(min(before, usable_cores()), with_app)
    if wanted == before:
        return None
    torch.set_num_threads(wanted)
    return before


def restore(before: int | None) -> None:
    if before is not None:
        import torch

        torch.set_num_threads(before)
