"""Point file descriptors at /dev/null once what they led to (a terminal, a pipe) is gone, so
that later writes, from C code or the interpreter's final flush, succeed and go nowhere."""

from __future__ import annotations

import os


def send_to_devnull(*fds: int) -> None:
    """Best effort: a descriptor that cannot be replaced is left as it is."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        for fd in fds:
            try:
                os.dup2(null, fd)
            except OSError:
                pass
    finally:
        os.close(null)
