"""CPU runs: stop glibc from returning large freed blocks to the OS after every tensor op.

By default every tensor above ~32 MB is mmap'ed and unmapped when freed, so each op pays for
page faults and zeroing again; on CPU this was half the time of a VAE encode here. Raising the
mmap and trim thresholds keeps freed memory in the heap for reuse (peak RSS stays allocated,
which a training process holds anyway). A no-op outside glibc.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory() -> bool:
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and ok
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
