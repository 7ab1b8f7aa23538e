"""A resolved configuration written back as the command line that makes it, for a process of
its own (the app's "Keep running after I quit" starts ``sidestep <mode> ...`` detached).

Every setting of the mode with a value is spelt out, so the child resolves exactly this
configuration whatever its defaults, presets or VRAM profile would have said.
"""

from __future__ import annotations

from typing import Any, Mapping

from sidestep.config import schema
from sidestep.config.values import to_text

# Settings that describe how to start, not what to train.
_NOT_PASSED = frozenset({"detach"})


def command_args(mode: str, values: Mapping[str, Any]) -> list[str]:
    """``[mode, --flag, value, ...]`` for ``sidestep``; None values are left to the default."""
    args = [mode]
    for s in schema.settings_for(mode):
        if s.name in _NOT_PASSED or s.name not in values:
            continue
        value = values[s.name]
        if value is None or not _applies(s, values):
            continue
        flag = s.flags[-1]
        if s.kind == "bool":
            args.append(flag if value else "--no-" + flag[2:])
        elif s.is_list:
            if value:
                args += [flag, *(str(v) for v in value)]
        else:
            args += [flag, to_text(s, value)]
    return args


def _applies(s: schema.Setting, values: Mapping[str, Any]) -> bool:
    """A setting that only means something with another's value (LoKR's with --adapter-type
    lokr, ...) is left out otherwise: resolve refuses it given explicitly."""
    if s.shown_when is None:
        return True
    other, allowed = s.shown_when
    return values.get(other) in allowed
