"""The import contract: each layer imports only from layers below it (function-level imports
count too), cli and tui are siblings, and nothing below the UI imports textual or rich.

    telemetry < config < model < data < engine (and sidestep.demo) < cli | tui < launch
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sidestep"

# Modules at the package root, by what they are: helpers any layer may use (they import no
# other part of sidestep), the demo builder (above model and data), and the entry points.
BASE = {"__init__", "cpu_threads", "cpu_malloc", "bytecode", "devnull"}
RANK = {"telemetry": 1, "config": 2, "model": 3, "data": 4, "engine": 5, "demo": 5,
        "cli": 6, "tui": 6, "__main__": 7, "launch": 7}
UI_ONLY = ("textual", "rich", "textual_plotext", "plotext")


def layer_of(module: str) -> str:
    """``sidestep.engine.trainer`` -> ``engine``; ``sidestep.cpu_threads`` -> base."""
    parts = module.split(".")
    if len(parts) < 2:
        return "base"
    return "base" if parts[1] in BASE else parts[1]


def rank(layer: str) -> int:
    return 0 if layer == "base" else RANK[layer]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names (resolved if relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ".".join(("sidestep", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            if name == "sidestep":  # `from sidestep import engine`: names that are modules
                found += [(node.lineno, f"sidestep.{a.name}") for a in node.names
                          if a.name in RANK or a.name in BASE]
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("sidestep", *path.relative_to(PACKAGE).with_suffix("").parts))
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        mine = layer_of(module)
        for line, name in imports_of(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if name.split(".")[0] in UI_ONLY and rank(mine) < RANK["cli"]:
                out.append(f"{where}: {mine} imports {name} (UI libraries stay in cli/tui)")
            if not name.startswith("sidestep.") and name != "sidestep":
                continue
            theirs = layer_of(name)
            if theirs == mine:
                continue
            if mine == "base" and theirs != "base":
                out.append(f"{where}: base module {module} imports {name}")
            elif rank(theirs) >= rank(mine):
                out.append(f"{where}: {mine} imports {name} ({theirs} is not below {mine})")
    return out


def test_imports_point_down():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The contract test itself can fail: an engine module importing the CLI is reported."""
    fake = tmp_path / "sidestep"
    (fake / "engine").mkdir(parents=True)
    (fake / "model").mkdir()
    (fake / "engine" / "bad.py").write_text("def f():\n    from sidestep.cli.output import Out\n")
    (fake / "model" / "ui.py").write_text("from rich.console import Console\n")
    (fake / "model" / "ok.py").write_text("from sidestep.config import schema\n"
                                          "from . import ok\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = violations()
    assert len(found) == 2
    assert "engine/bad.py:2: engine imports sidestep.cli.output" in found[0]
    assert "model imports rich.console" in found[1]


def test_the_app_builds_text_boxes_from_textinput_only():
    """A plain textual Input resolves its backspaces and arrows against whatever has focus
    when the key has bubbled up (keys typed ahead land in the next field); the app's text
    boxes are TextInput (tui/widgets/text_input.py), so a new screen cannot regress that."""
    plain = []
    for path in sorted((PACKAGE / "tui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "Input":
                plain.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not plain, f"use TextInput, not Input: {plain}"
