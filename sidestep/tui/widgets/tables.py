"""Filling DataTables with column widths measured here, from the data and the table's width.

DataTable measures auto-width columns on its next idle message; a frame drawn before that
(or a refill racing it) shows columns cut to their header's width. Measuring up front makes
every frame right. Columns share the table's width: on 80 columns the widest give way first
(a path keeps its end, "…/run-3/best", where the name that tells runs apart is), on a wide
terminal nothing is cut. A ``FitTable`` fits its columns again when its width changes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.cells import cell_len
from textual.widgets import DataTable

MIN_COLUMN = 6  # a column narrower than this (or its header) says nothing


class FitTable(DataTable):
    """A DataTable that keeps what ``fill_table`` put in it and fits it again on a resize."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.filled: tuple | None = None   # (headers, rows, keys, max_width)
        self._fitted_width = 0

    def on_resize(self) -> None:
        if self.filled is not None and self.size.width != self._fitted_width:
            row = self.cursor_row
            fill_table(self, *self.filled[:3], max_width=self.filled[3])
            if row is not None and 0 < row < self.row_count:  # the cursor stays on its row
                self.move_cursor(row=row)


def fill_table(table: DataTable, headers: Sequence[str], rows: Iterable[Sequence[str]],
               keys: Iterable[str | None] | None = None, max_width: int | None = None,
               fit_last: bool = False) -> None:
    """Fill ``table`` with columns that fit its width (when it has one yet: a FitTable fits
    again once it is laid out). ``max_width`` caps a column; ``fit_last`` is kept for callers
    (every column now fits)."""
    rows = [[str(cell) for cell in row] for row in rows]
    keys = list(keys) if keys is not None else [None] * len(rows)
    if isinstance(table, FitTable):
        table.filled = (tuple(headers), rows, keys, max_width)
        table._fitted_width = table.size.width
    natural = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in
               enumerate(headers)]
    if max_width:
        natural = [min(w, max(max_width, cell_len(h))) for w, h in zip(natural, headers)]
    # and the vertical scrollbar's two cells (a table cut one short scrolled sideways)
    room = table.size.width - 2 * table.cell_padding * len(headers) - 2
    widths = fit_widths(natural, [min(cell_len(h), MIN_COLUMN) for h in headers], room) \
        if table.size.width else natural
    rows = [[shorten(cell, w) for cell, w in zip(r, widths)] for r in rows]
    table.clear(columns=True)
    for header, width in zip(headers, widths):
        table.add_column(header, width=width)
    for row, key in zip(rows, keys):
        table.add_row(*row, key=key)


def fit_widths(natural: list[int], floors: list[int], room: int) -> list[int]:
    """Widths within ``room``: the widest columns are cut first, to one shared cap, none
    below its floor (a table narrower than the floors scrolls sideways)."""
    if sum(natural) <= room:
        return list(natural)
    cap = max(natural)
    while cap > 1 and sum(max(min(w, cap), f) for w, f in zip(natural, floors)) > room:
        cap -= 1
    return [max(min(w, cap), f) for w, f in zip(natural, floors)]


def shorten(text: str, width: int) -> str:
    """``text`` in ``width`` cells: a path keeps its end ("…/run-3/best"), other text its
    start ("a long descr…"); a cut value must not read as whole."""
    if cell_len(text) <= width:
        return text
    if looks_like_path(text) and width > 2:
        tail = text
        while cell_len(tail) > width - 1:
            tail = tail[1:]
        cut = tail.find("/")
        if 0 <= cut and cell_len(tail) - cut >= width // 2:  # at a folder edge when close
            tail = tail[cut:]
        return "…" + tail
    return fit(text, width)


def looks_like_path(text: str) -> bool:
    """A path, not prose that holds a '/' ("RTX 3090/4090")."""
    return text.startswith(("/", "~", "./", "../")) or ("/" in text and " " not in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis: a cut value must not read as whole."""
    if cell_len(text) <= width:
        return text
    while cell_len(text) > width - 1:
        text = text[:-1]
    return text + "…"
