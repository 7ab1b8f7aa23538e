"""``sidestep-tui`` and ``python sidestep_tui.py``: start the terminal app.

Kept apart from ``sidestep.tui`` so argument errors print before Textual is imported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sidestep-tui", allow_abbrev=False,
                                description="Side-Step terminal app for ACE-Step 1.5 "
                                            "adapter training.")
    p.add_argument("--demo", action="store_true",
                   help="use a built-in tiny model and dataset (created on first use)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from sidestep.devnull import reopen_closed_stdin

    reopen_closed_stdin()
    if not sys.stdin.isatty():  # its keys come from there: closed, a pipe or a file gave a
        # traceback, or an app no key could reach
        print("sidestep-tui: standard input is not a terminal, so no key could reach the app; "
              "start it from a terminal (over SSH: ssh -t), or train without one with "
              "`sidestep fixed ... --detach`", file=sys.stderr)
        return 2
    from sidestep.tui.app import run_app

    return run_app(demo=args.demo)


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())
