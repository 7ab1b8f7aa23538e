"""Bytecode for what the app imports, written once in the background.

uv no longer compiles every dependency at install (``compile-bytecode`` made each ``uv run``
recompile ~14,000 files, ~1 s). Python then writes bytecode as modules are first imported,
unless ``PYTHONDONTWRITEBYTECODE`` is set (common in container images): then every start
compiles Textual, Rich and torch's Python sources again (first frame 1.1 s instead of 0.55 s
on a 2-core box). So, where Python will not write it, the modules this process imported are
compiled by a detached, low-priority process, once; later starts find the bytecode.
"""

from __future__ import annotations

import os
import subprocess
import sys

_COMPILE = """
import py_compile, sys
for path in sys.stdin.read().splitlines():
    try:
        py_compile.compile(path, doraise=True)
    except Exception:
        pass
"""


def missing() -> list[str]:
    """Source files of loaded modules that have no bytecode next to them."""
    out = []
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not origin or not origin.endswith(".py") or not getattr(spec, "cached", None):
            continue
        if not os.path.exists(spec.cached) and os.access(os.path.dirname(origin), os.W_OK):
            out.append(origin)
    return out


def write_later() -> int:
    """Start compiling the loaded modules that lack bytecode; returns how many (0: nothing to
    do, or Python writes bytecode itself)."""
    if not sys.dont_write_bytecode or sys.pycache_prefix:
        return 0
    paths = missing()
    if not paths:
        return 0
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _COMPILE], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
            preexec_fn=lambda: os.nice(19))
        proc.stdin.write("\n".join(paths).encode())
        proc.stdin.close()
    except OSError:
        return 0
    _started.append(proc)  # reaped by whoever looks; it outlives us if it must
    return len(paths)


_started: list[subprocess.Popen] = []
