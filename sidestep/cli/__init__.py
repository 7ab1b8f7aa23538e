"""``sidestep`` command line. Importing this stays light: torch and textual load only when a
command needs them."""

from __future__ import annotations

import sys
from typing import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 130


def main(argv: Sequence[str] | None = None) -> int:
    from sidestep.cli.commands import dispatch
    from sidestep.cli.parser import build_parser
    from sidestep.cli.streams import GUARD
    from sidestep.devnull import reopen_closed_stdin

    reopen_closed_stdin()
    installed = GUARD.install()  # a closed pipe or a dropped terminal never ends in a traceback
    try:
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else None)
        return dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        if sys.stdout is not None:
            sys.stdout.flush()
        if argv is not None:  # called in-process (tests): leave the streams as they were
            installed.uninstall()


def entry() -> None:  # pragma: no cover - console script wrapper
    code = main()
    from sidestep import bytecode

    bytecode.write_later()  # where Python will not, so the next start imports torch faster
    sys.exit(code)
