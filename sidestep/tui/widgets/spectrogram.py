"""A mel spectrogram in terminal cells: two bands per cell (the half block "▀" in the upper
band's colour on the lower band's), low bands at the bottom, a frequency axis on the left and
a time axis with the colour scale underneath.

It draws an ``AudioSummary.mel_db`` grid (data.spectrum) at whatever size the widget has:
frequency bands are pooled by their maximum (a tone stays visible however small the widget),
time columns by their mean. Colours are a fixed dark-to-bright ramp (inferno-like), set as
both foreground and background of every cell, so the picture reads the same on dark and
light themes.
"""

from __future__ import annotations

import math
import textwrap

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from sidestep.tui.widgets.log_tail import fit

RANGE_DB = 80.0        # colours span this far below the loudest cell (data.spectrum.TOP_DB)
FLOOR_DB = -100.0      # data.spectrum.FLOOR_DB: digital silence
F_MIN = 20.0           # data.spectrum's mel filter bank starts here (HTK mel scale)
LEVELS = 24            # distinct colours (a cell's colour is one of these)
AXIS = 5               # columns of the frequency labels ("12k" and a space)

# Inferno's stops: dark to bright, with monotonic lightness, so "louder" is "brighter" in any
# theme and without colour vision.
_STOPS = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
          (245, 125, 21), (250, 193, 39), (252, 255, 164))


def _ramp(f: float) -> tuple[int, int, int]:
    f = min(max(f, 0.0), 1.0) * (len(_STOPS) - 1)
    i = min(int(f), len(_STOPS) - 2)
    t = f - i
    a, b = _STOPS[i], _STOPS[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))  # type: ignore[return-value]


RAMP = [Color.from_rgb(*_ramp(i / (LEVELS - 1))) for i in range(LEVELS)]


def level_of(db: float, top: float) -> int:
    """The colour index (0 = darkest) of a ``db`` cell in a grid whose loudest cell is
    ``top``; digital silence is always the darkest."""
    if not math.isfinite(db) or db <= FLOOR_DB + 0.05:
        return 0
    f = (db - (top - RANGE_DB)) / RANGE_DB
    return min(max(int(f * LEVELS), 0), LEVELS - 1)


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _mel_to_hz(m: float) -> float:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def band_centres(n_mels: int, sample_rate: int) -> list[float]:
    """Centre frequency (Hz) of each mel band of data.spectrum's grid, lowest first."""
    lo, hi = _hz_to_mel(F_MIN), _hz_to_mel(sample_rate / 2)
    return [_mel_to_hz(lo + (hi - lo) * (i + 1) / (n_mels + 1)) for i in range(n_mels)]


def fmt_hz(hz: float) -> str:
    if hz >= 1000:
        k = hz / 1000
        return f"{k:.0f}k" if k >= 9.95 else f"{k:.1f}k"
    return f"{hz:.0f}"


def pool(grid: list[list[float]], rows: int, cols: int) -> list[list[float]]:
    """``grid`` (bands x frames, lowest band first) resampled to ``rows`` x ``cols``: the
    maximum over the bands a row covers, the mean over the frames a column covers."""
    n, m = len(grid), len(grid[0]) if grid else 0
    if not n or not m or rows < 1 or cols < 1:
        return []

    def span(i: int, count: int, total: int) -> range:
        lo = i * total // count
        return range(lo, max(lo + 1, (i + 1) * total // count))

    out = []
    for r in range(rows):
        bands = [grid[b] for b in span(r, rows, n)]
        row = []
        for c in range(cols):
            frames = span(c, cols, m)
            row.append(max(sum(band[f] for f in frames) / len(frames) for band in bands))
        out.append(row)
    return out


class Spectrogram(Widget):
    """Shows ``show(mel_db, sample_rate, duration)``, or a note (``show_note``) instead."""

    DEFAULT_CSS = """
    Spectrogram {
        height: 1fr;
        min-height: 3;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mel_db: list[list[float]] = []
        self.sample_rate = 48000
        self.duration = 0.0
        self.note = ""
        self._strips: list[Strip] = []
        self._drawn_for: tuple | None = None

    def show(self, mel_db: list[list[float]], sample_rate: int, duration: float) -> None:
        self.mel_db, self.sample_rate, self.duration = mel_db, sample_rate, duration
        self.note = ""
        self._changed()

    def show_note(self, note: str) -> None:
        """Text in place of a picture (no sample yet, analysing, unreadable)."""
        self.mel_db, self.note = [], note
        self._changed()

    def _changed(self) -> None:
        self._drawn_for = None
        self.refresh()

    # -- drawing -------------------------------------------------------------------------------
    def levels(self, rows: int, cols: int) -> list[list[int]]:
        """Colour indices of the ``rows`` x ``cols`` picture, the lowest band first."""
        if not self.mel_db or not self.mel_db[0]:
            return []
        top = max(max(row) for row in self.mel_db)
        return [[level_of(v, top) for v in row] for row in pool(self.mel_db, rows, cols)]

    def _layout(self, width: int, height: int) -> tuple[int, int, bool]:
        """(picture cells across, picture cells down, with axes)."""
        axes = width >= 24 and height >= 3
        return (width - AXIS if axes else width), (height - 1 if axes else height), axes

    def _draw(self, width: int, height: int) -> list[Strip]:
        base = self.rich_style
        dim = base + Style(dim=True)
        if self.note or not self.mel_db:
            lines = textwrap.wrap(self.note, max(width, 1))[:height] if self.note else []
            return [Strip([Segment(fit(line, width).ljust(width), dim)], width)
                    for line in lines]
        cols, cells, axes = self._layout(width, height)
        grid = self.levels(2 * cells, cols)
        strips = []
        labels = self._freq_labels(cells) if axes else {}
        for y in range(cells):
            upper, lower = grid[2 * (cells - y) - 1], grid[2 * (cells - y) - 2]
            segments = [Segment(labels.get(y, "").rjust(AXIS - 1) + " ", dim)] if axes else []
            run_key, run = None, 0
            for up, low in zip(upper, lower):
                key = (up, low)
                if key != run_key and run:
                    segments.append(self._cells(run_key, run))
                    run = 0
                run_key, run = key, run + 1
            if run:
                segments.append(self._cells(run_key, run))
            strips.append(Strip(segments, width))
        if axes:
            strips.append(self._time_axis(width, cols, dim))
        return strips

    @staticmethod
    def _cells(key: tuple[int, int], count: int) -> Segment:
        up, low = key
        if up == low:  # a full cell: a space on the background colour
            return Segment(" " * count, Style(bgcolor=RAMP[low]))
        return Segment("▀" * count, Style(color=RAMP[up], bgcolor=RAMP[low]))

    def _freq_labels(self, cells: int) -> dict[int, str]:
        """Labels for the top, middle and bottom cell rows: the mean centre frequency of the
        two bands each shows (rows are counted from the top)."""
        centres = band_centres(len(self.mel_db), self.sample_rate)
        n = len(centres)

        def hz_at(y: int) -> float:
            band = (2 * (cells - 1 - y) + 1) * n // (2 * cells)  # the cell's middle band
            return centres[min(band, n - 1)]

        picks = {0, cells - 1} | ({cells // 2} if cells >= 5 else set())
        return {y: fmt_hz(hz_at(y)) for y in picks}

    def _time_axis(self, width: int, cols: int, dim: Style) -> Strip:
        end = f"{self.duration:.1f} s"
        scale = [Segment("-80 ", dim)] + [Segment(" ", Style(bgcolor=RAMP[i]))
                                           for i in range(0, LEVELS, 3)] + [Segment(" 0 dB", dim)]
        scale_len = sum(len(s.text) for s in scale)
        room = cols - len("0 s") - len(end)
        segments = [Segment(" " * AXIS + "0 s", dim)]
        if room >= scale_len + 2:
            left = (room - scale_len) // 2
            segments += [Segment(" " * left, dim), *scale,
                         Segment(" " * (room - scale_len - left), dim)]
        else:
            segments.append(Segment(" " * max(room, 1), dim))
        segments.append(Segment(end, dim))
        return Strip(segments).crop(0, width)

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        key = (width, height, id(self.mel_db), self.note, self.rich_style)
        if key != self._drawn_for:
            self._drawn_for = key
            self._strips = self._draw(width, height)
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)
