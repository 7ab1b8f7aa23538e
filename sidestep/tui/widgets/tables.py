"""Filling DataTables with column widths measured here, from the data.

DataTable measures auto-width columns on its next idle message; a frame drawn before that
(or a refill racing it) shows columns cut to their header's width. Measuring up front makes
every frame right.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.cells import cell_len
from textual.widgets import DataTable


def fill_table(table: DataTable, headers: Sequence[str], rows: Iterable[Sequence[str]],
               keys: Iterable[str | None] | None = None, max_width: int = 60,
               fit_last: bool = False) -> None:
    """``fit_last``: the last column takes what the table's width leaves (at least 12), its
    cells cut with an ellipsis (DataTable crops at its edge, and a cut text reads as whole)."""
    rows = [[fit(str(cell), max_width) for cell in row] for row in rows]
    keys = list(keys) if keys is not None else [None] * len(rows)
    widths = [min(max([cell_len(h)] + [cell_len(r[i]) for r in rows]), max_width)
              for i, h in enumerate(headers)]
    if fit_last and table.size.width:
        padding = 2 * table.cell_padding * len(widths) + 1  # and the scrollbar's edge
        widths[-1] = min(widths[-1], max(12, table.size.width - sum(widths[:-1]) - padding))
        rows = [[*r[:-1], fit(r[-1], widths[-1])] for r in rows]
    table.clear(columns=True)
    for header, width in zip(headers, widths):
        table.add_column(header, width=width)
    for row, key in zip(rows, keys):
        table.add_row(*row, key=key)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis: a cut value must not read as whole."""
    if cell_len(text) <= width:
        return text
    while cell_len(text) > width - 1:
        text = text[:-1]
    return text + "…"
