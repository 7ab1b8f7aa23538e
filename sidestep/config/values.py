"""Turning raw input into setting values, and checking them.

Two doors lead in: text (a CLI argument or a form field) and JSON values (preset files, run.json).
Both end in the same bounds check, so the CLI, the TUI and presets agree on what is valid.
"""

from __future__ import annotations

import math
import os
from typing import Any

from sidestep.config.schema import Setting

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _kind_word(setting: Setting) -> str:
    return {
        "int": "a whole number",
        "float": "a number",
        "str": "text",
        "bool": "true or false",
        "path": "a path",
        "str_list": "a list of names",
        "path_list": "a list of paths",
    }[setting.kind]


def parse_text(setting: Setting, text: str | None) -> Any:
    """Value from a form field or CLI string. Empty text means "unset" for nullable settings.

    Raises ``ValueError`` with a message meant for the user (the caller adds the field name).
    """
    raw = (text or "").strip()
    if raw == "":
        if setting.nullable:
            return None
        if setting.kind == "str" and setting.default == "":
            return ""
        raise ValueError("a value is required")
    kind = setting.kind
    if kind == "int":
        try:
            value: Any = int(raw)
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                raise ValueError(f"expected {_kind_word(setting)}, got {raw!r}") from None
            if not as_float.is_integer():
                raise ValueError(f"expected {_kind_word(setting)}, got {raw!r}") from None
            value = int(as_float)
    elif kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected {_kind_word(setting)}, got {raw!r}") from None
    elif kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            value = True
        elif low in _FALSE:
            value = False
        else:
            raise ValueError(f"expected yes or no, got {raw!r}")
    elif kind in ("str_list", "path_list"):
        value = tuple(part for part in raw.replace(",", " ").split() if part)
    else:
        value = raw
    value = expand_home(setting, value)
    problem = bounds_problem(setting, value)
    if problem:
        raise ValueError(problem)
    return value


def expand_home(setting: Setting, value: Any) -> Any:
    """``~`` is the home folder in every path, however it was given (quoted, after ``=``, in
    the app, in a preset): left as typed, a run went into a folder named ``~`` under the
    current one while run.json named the home one."""
    if setting.kind == "path" and isinstance(value, str):
        return os.path.expanduser(value)
    if setting.kind == "path_list" and value:
        return tuple(os.path.expanduser(v) for v in value)
    return value


def check_json_value(setting: Setting, value: Any) -> Any:
    """Value from a JSON document (presets, saved configs). Wrong types raise ``ValueError``."""
    if value is None:
        if setting.nullable:
            return None
        raise ValueError(f"must be {_kind_word(setting)}, not null")
    kind = setting.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {type(value).__name__} {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a whole number, got {type(value).__name__} {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"must be a whole number, got {value!r}")
            value = int(value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
    elif kind in ("str", "path"):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
    elif kind in ("str_list", "path_list"):
        if isinstance(value, str):
            value = tuple(value.replace(",", " ").split())
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        else:
            raise ValueError(f"must be a list of strings or a space-separated string, "
                             f"got {value!r}")
    value = expand_home(setting, value)
    problem = bounds_problem(setting, value)
    if problem:
        raise ValueError(problem)
    return value


def bounds_problem(setting: Setting, value: Any) -> str | None:
    """What is wrong with an already-typed value, or None."""
    if value is None:
        return None if setting.nullable else "a value is required"
    if setting.kind in ("int", "float"):
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        lo, hi = setting.minimum, setting.maximum
        if lo is not None:
            if setting.exclusive_minimum and value <= lo:
                return f"must be greater than {_num(lo)}, got {_num(value)}"
            if not setting.exclusive_minimum and value < lo:
                return f"must be at least {_num(lo)}, got {_num(value)}"
        if hi is not None and value > hi:
            return f"must be at most {_num(hi)}, got {_num(value)}"
    if setting.choices is not None:
        items = value if setting.is_list else (value,)
        bad = [v for v in items if v not in setting.choices]
        if bad:
            allowed = ", ".join(str(c) for c in setting.choices)
            return f"{bad[0]!r} is not one of: {allowed}"
    if setting.is_list and setting.required and len(value) == 0:
        return "needs at least one entry"
    return None


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def to_text(setting: Setting, value: Any) -> str:
    """The text a form field shows for a value (the inverse of ``parse_text``)."""
    if value is None:
        return ""
    if setting.kind == "bool":
        return "yes" if value else "no"
    if setting.is_list:
        return " ".join(value)
    if setting.kind == "float":
        return f"{value:g}"
    return str(value)


def to_json(setting: Setting, value: Any) -> Any:
    """JSON-ready form of a value (tuples become lists)."""
    if setting.is_list and value is not None:
        return list(value)
    return value
