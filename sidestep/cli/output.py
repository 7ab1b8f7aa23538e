"""Terminal output for the headless CLI: Rich when on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


class Out:
    def __init__(self, plain: bool = False):
        self.plain = plain or not sys.stdout.isatty()
        self._console = None
        self._err_console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False)
        return self._console

    @property
    def err_console(self):
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(stderr=True, highlight=False)
        return self._err_console

    def info(self, message: str) -> None:
        if self.plain:
            print(message, flush=True)
        else:
            self.console.print(message, markup=False)

    def heading(self, message: str) -> None:
        if self.plain:
            print(message, flush=True)
        else:
            self.console.print(f"[bold]{_esc(message)}[/bold]")

    def warn(self, message: str) -> None:
        if self.plain or not sys.stderr.isatty():
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            self.err_console.print(f"[yellow]warning:[/yellow] {_esc(message)}")

    def error(self, message: str) -> None:
        if self.plain or not sys.stderr.isatty():
            print(f"error: {message}", file=sys.stderr, flush=True)
        else:
            self.err_console.print(f"[bold red]error:[/bold red] {_esc(message)}")

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2), flush=True)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.plain:
            widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c)
                      for i, c in enumerate(columns)]
            if title:
                print(title)
            print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)).rstrip())
            for row in rows:
                print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
            return
        from rich.table import Table

        table = Table(title=title or None)
        for c in columns:
            table.add_column(c, overflow="fold")  # wrapped, never cut: paths get copied
        for row in rows:
            table.add_row(*(str(v) for v in row))
        self.console.print(table)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
