"""Loss and learning-rate charts (plotext through textual-plotext)."""

from __future__ import annotations

import math
from itertools import groupby
from operator import itemgetter

from plotext._utility import colors_to_ansi
from rich.segment import Segment
from rich.style import Style as RichStyle
from rich.text import Text
from textual.content import Content
from textual.strip import Strip
from textual.visual import RenderOptions, Visual
from textual_plotext import PlotextPlot

from sidestep.tui.state import RunState, smooth

# plotext's cost grows with the points it joins (a few ms per hundred, in Python, on the UI
# thread the engine shares the GIL with), but a braille cell is only two dots wide: series
# are reduced to one bucket per cell, at most two points each, before plotting.


def decimate(xs: list, ys: list, buckets: int) -> tuple[list, list]:
    """At most two points per bucket, its lowest and highest, in step order: what a line
    ``buckets`` cells (twice as many braille dots) wide draws from all the points. Spikes stay;
    non-finite values are kept only where a bucket has nothing else."""
    n = len(xs)
    if n <= 2 * buckets or buckets < 1:
        return list(xs), list(ys)
    out_x, out_y, last = [], [], -1
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        finite = [i for i in range(lo, hi) if math.isfinite(ys[i])]
        if not finite:
            picks = [lo]
        else:
            i_min = min(finite, key=ys.__getitem__)
            i_max = max(finite, key=ys.__getitem__)
            picks = sorted({i_min, i_max})
        for i in picks:
            out_x.append(xs[i])
            out_y.append(ys[i])
        last = picks[-1]
    if last != n - 1:  # the newest point is always drawn
        out_x.append(xs[-1])
        out_y.append(ys[-1])
    return out_x, out_y


def _cells(widget) -> int:
    """Cells across the widget (before layout, a typical half-screen chart's)."""
    return widget.size.width or 50


class PlotCells(Visual):
    """plotext's character matrix as strips: the cells and colours of its ANSI text (the route
    textual-plotext takes), without writing escape codes and parsing them back, which is about
    half of a chart's drawing time. Each distinct colour goes through Textual's own text path
    once, so it renders exactly as the ANSI route renders it."""

    def __init__(self, matrix, ansi_theme) -> None:
        self._matrix = matrix
        self._ansi_theme = ansi_theme  # how the app shows the ANSI colours plotext picks

    def get_optimal_width(self, rules, container_width: int) -> int:
        return self._matrix.cols

    def get_height(self, rules, width: int) -> int:
        return self._matrix.rows

    # Rich style of each plotext colour triple on a base style in an ANSI theme: a chart has a
    # handful; kept across renders.
    _styles: dict = {}

    def render_strips(self, width, height, style, options) -> list[Strip]:
        m = self._matrix
        if len(PlotCells._styles) > 512:  # themes switched many times over
            PlotCells._styles.clear()
        styles = PlotCells._styles.setdefault((style, self._ansi_theme), {})
        # The one-cell sample is rendered without the widget's selection or padding rules, so
        # what is cached is the colour alone.
        plain = RenderOptions(options.get_style, {})

        def cell_style(key) -> RichStyle:
            if key not in styles:
                cell = Content.from_rich_text(Text.from_ansi(colors_to_ansi(*key) + "x"))
                segment = next(iter(cell.render_strips(1, 1, style, plain)[0]))
                styles[key] = segment.style.clear_meta_and_links()
            return styles[key]

        strips = []
        for y, row in enumerate(reversed(m.Rows)):  # plotext's row 0 is the bottom line
            cells = zip(m.marker[row], zip(m.fullground[row], m.style[row], m.background[row]))
            segments, x = [], 0
            for key, run in groupby(cells, itemgetter(1)):
                text = "".join(marker for marker, _ in run)
                # Each run carries its offset, as in Textual's own text: text selection reads
                # it, and runs stay apart (an SVG screenshot places each run).
                segments.append(Segment(text, cell_style(key) +
                                        RichStyle.from_meta({"offset": (x, y)})))
                x += len(text)
            strips.append(Strip(segments).crop(0, width))
        return strips if height is None else strips[:height]


class Chart(PlotextPlot):
    """A plotext plot drawn through ``PlotCells``.

    ``draw`` records the plotext calls that make the figure and every render replays them on a
    cleared figure: plotext's build rescales its data in place, so building a log-scale figure
    twice (a terminal resize, a theme change) took the log of the log and crashed.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._calls: list[tuple[str, tuple, dict]] = []
        self._drawn = None

    def _show(self, key, calls: list[tuple[str, tuple, dict]]) -> None:
        """Show the figure ``calls`` make; ``key`` names its data, for ``draw`` to skip
        redrawing what is already shown."""
        self._drawn = key
        self._calls = calls
        self.refresh()

    def replay(self) -> None:
        plot = self._plot
        plot.clear_data()
        plot.clear_figure()
        for name, args, kwargs in self._calls:
            getattr(plot, name)(*args, **kwargs)

    def render(self) -> Visual:
        width, height = self.size
        self.replay()
        plot = self._plot
        plot.plotsize(width, height)
        plot._set_size(width, height)  # as textual-plotext does (its issue #5)
        plot.theme(self._get_plotext_theme_name(self.app.theme))
        plot._set_sizes()   # plotext's own build(), less writing the ANSI text
        plot._build_matrix()
        return PlotCells(plot.monitor.matrix, self.app.ansi_theme)


VAL_COLOR = "orange"   # apart from raw (gray), smoothed (cyan) and best (green) on any theme
VAL_MARKER = "◆"


class LossChart(Chart):
    """Raw and smoothed loss, the best step marked, and the validation loss at the end of each
    epoch when the run has one; ``log_scale`` toggles the y axis."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False

    def draw(self, state: RunState, force: bool = False) -> None:
        # Keyed on the data drawn, not on ``state.version`` (log lines move that too).
        val_steps, val_losses = state.val_series
        key = (len(state.steps), state.best_step, self.log_scale, _cells(self), len(val_steps))
        if val_steps:  # a resumed run can replace an epoch's point without adding one
            key += (val_steps[-1], val_losses[-1])
        if key == self._drawn and not force:
            return
        # No legend: plotext draws it over the first steps; the title names the series.
        series = "raw · smoothed · " + (f"{VAL_MARKER} val · " if val_steps else "") + "● best"
        calls = [("title", (f"loss: {series}" +
                            (" (log scale)" if self.log_scale else ""),), {}),
                 ("xlabel", ("step",), {})]
        steps = list(state.steps)
        if steps:
            shown = [v if (not self.log_scale or v > 0) else float("nan") for v in state.losses]
            cells = _cells(self)
            calls.append(("plot", decimate(steps, shown, cells),
                          {"marker": "braille", "color": "gray"}))
            calls.append(("plot", decimate(steps, smooth(shown), cells),
                          {"marker": "braille", "color": "cyan"}))
            calls += _val_calls(val_steps, val_losses, self.log_scale, cells)
            best = state.best_loss
            if state.best_step is not None and best is not None and math.isfinite(best) and \
                    (best > 0 or not self.log_scale):
                calls.append(("scatter", ([state.best_step], [best]),
                              {"marker": "●", "color": "green"}))
            if self.log_scale:
                calls.append(("yscale", ("log",), {}))
        self._show(key, calls)


def _val_calls(steps: list[int], losses: list[float], log_scale: bool,
               cells: int) -> list[tuple[str, tuple, dict]]:
    """The validation loss: a line through the epochs' points, each marked while they are
    apart enough to read (one epoch's point every few cells), after the training curves so
    it is drawn over them."""
    keep = [(x, y) for x, y in zip(steps, losses)
            if math.isfinite(y) and (y > 0 or not log_scale)]
    if not keep:
        return []
    xs, ys = [p[0] for p in keep], [p[1] for p in keep]
    calls = []
    if len(xs) > 1:
        calls.append(("plot", decimate(xs, ys, cells), {"marker": "braille", "color": VAL_COLOR}))
    if len(xs) <= max(cells // 3, 1) or len(xs) == 1:
        calls.append(("scatter", (xs, ys), {"marker": VAL_MARKER, "color": VAL_COLOR}))
    return calls


class LrChart(Chart):
    def draw(self, state: RunState, force: bool = False) -> None:
        key = (len(state.steps), _cells(self))
        if key == self._drawn and not force:
            return
        calls = [("title", ("learning rate",), {})]
        if state.steps:
            calls.append(("plot", decimate(list(state.steps), list(state.lrs), _cells(self)),
                          {"marker": "braille", "color": "magenta"}))
        self._show(key, calls)
