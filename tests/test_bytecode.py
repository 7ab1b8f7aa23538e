"""Where Python will not write bytecode (PYTHONDONTWRITEBYTECODE), the modules a start imported
are compiled once in the background, so the next start does not compile them again."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import slowpkg.mod  # noqa: F401
    from sidestep import bytecode
    print(bytecode.write_later())
    for proc in bytecode._started:
        proc.wait(60)
""")


def _run(tmp_path, dont_write: str) -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": dont_write}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, text=True,
                          capture_output=True, check=True, timeout=120).stdout.strip()


def test_imported_modules_get_bytecode_once(tmp_path):
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("VALUE = 1\n")
    cached = importlib.util.cache_from_source(str(pkg / "mod.py"))
    assert _run(tmp_path, "1") != "0"  # sidestep's own and slowpkg's sources were missing
    assert os.path.exists(cached)
    assert _run(tmp_path, "1") == "0"  # nothing left to do
    os.remove(cached)
    assert _run(tmp_path, "") == "0"  # Python writes it itself
    assert os.path.exists(cached)
