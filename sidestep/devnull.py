"""Point file descriptors at /dev/null once what they led to (a terminal, a pipe) is gone, so
that later writes, from C code or the interpreter's final flush, succeed and go nowhere."""

from __future__ import annotations

import os
import sys


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


def reopen_closed_stdin() -> None:
    """A process started with its standard input closed (`<&-`, some nohup and ssh setups)
    has no ``sys.stdin``: the confirmation prompt failed with a traceback, and the first file
    it opened became descriptor 0. Standard input then reads from /dev/null (no terminal to
    answer on, as with ``< /dev/null``)."""
    if sys.stdin is not None:
        return
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
    except OSError:
        pass
