"""CPU runs: leave one core to the rest of the process.

torch's OpenMP workers spin-wait between parallel regions. When they use every core, the
process's other threads (the event writer, TensorBoard, the app's UI) can only run by
preempting one, and the training thread then waits at the next barrier for that worker while
still on the CPU. On a 2-core box the demo lost ~10 % of its samples/s with the app attached
(25 pairs, median 0.888) and none with one intra-op thread (8 pairs, median 0.995), and it was
no slower headless. A user's ``OMP_NUM_THREADS`` is left alone.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def leave_a_core() -> int | None:
    """Use one intra-op thread fewer than the usable cores; returns the previous count for
    ``restore``, or None when nothing was changed."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    before = torch.get_num_threads()
    wanted = max(1, min(before, usable_cores() - 1))
    if wanted == before:
        return None
    torch.set_num_threads(wanted)
    return before


def restore(before: int | None) -> None:
    if before is not None:
        import torch

        torch.set_num_threads(before)
