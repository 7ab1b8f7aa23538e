"""The monitor's charts: long series reduced to what a braille chart can show, drawn from
plotext's cell matrix, and safe to render again (resize, theme) in log scale."""

import math

from sidestep.engine.events import StepMetrics
from sidestep.tui.state import RunState
from sidestep.tui.widgets.charts import LossChart, LrChart, decimate


def test_short_series_are_drawn_as_they_are():
    xs, ys = list(range(1, 11)), [float(i) for i in range(10)]
    assert decimate(xs, ys, 5) == (xs, ys)


def test_decimation_keeps_every_buckets_extremes_the_ends_and_step_order():
    n, buckets = 10_000, 50
    xs = list(range(1, n + 1))
    ys = [math.sin(i / 300) + (0.001 * (i % 7)) for i in range(n)]
    ys[4321] = 9.0    # one spike must survive: a loss blow-up is what the user looks for
    ys[7777] = -9.0
    dx, dy = decimate(xs, ys, buckets)
    assert len(dx) <= 2 * buckets + 1
    assert dx == sorted(dx) and len(set(dx)) == len(dx)
    assert (dx[0], dx[-1]) == (1, n)
    assert 9.0 in dy and -9.0 in dy
    for b in range(buckets):  # each bucket's own lowest and highest are there
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        assert min(ys[lo:hi]) in dy and max(ys[lo:hi]) in dy
    assert all(ys[x - 1] == y for x, y in zip(dx, dy))  # points are real samples, not averages


def test_decimation_skips_non_finite_values_unless_a_bucket_has_nothing_else():
    xs = list(range(100))
    ys = [float("nan")] * 50 + [1.0 + i for i in range(50)]
    dx, dy = decimate(xs, ys, 10)
    finite = [y for y in dy if math.isfinite(y)]
    assert finite[0] == 1.0 and finite[-1] == 50.0
    # the five all-NaN buckets each keep one NaN, so the line stays broken there
    assert sum(1 for y in dy if math.isnan(y)) == 5


def _plotted(chart) -> list[int]:
    chart.replay()  # what the next render hands plotext
    return [len(x) for x in chart.plt._active.monitor.x]


def test_a_long_runs_charts_plot_at_the_charts_resolution():
    state = RunState()
    for i in range(1, 20_001):
        state.apply(StepMetrics(step=i, epoch=1, loss=2.0 / math.sqrt(i), lr=min(i, 500) * 1e-7))
    loss, lr = LossChart(), LrChart()
    for chart in (loss, lr):
        chart.refresh = lambda *a, **k: None
        chart.draw(state)
    # unmounted: a 50-cell chart (100 braille dots); raw and smoothed loss, the best point
    assert all(n <= 101 for n in _plotted(loss)) and len(_plotted(loss)) == 3
    assert _plotted(lr)[0] <= 101
    raw_x = loss.plt._active.monitor.x[0]
    assert raw_x[-1] == 20_000 and loss.plt._active.monitor.x[2] == [state.best_step]


def _app_with(*charts):
    from textual.app import App

    class Charts(App):
        def compose(self):
            yield from charts

    return Charts()


def _loss_steps(losses) -> RunState:
    state = RunState()
    for i, loss in enumerate(losses, start=1):
        state.apply(StepMetrics(step=i, epoch=1, loss=loss, lr=1e-4))
    return state


def _cells(strips) -> list[list[tuple[str, object]]]:
    """Each cell's character and style (with its text-selection offset)."""
    return [[(ch, seg.style) for seg in strip for ch in seg.text] for strip in strips]


def _rendered(chart, visual=None) -> list[list[tuple[str, object]]]:
    from textual.visual import Visual

    width, height = chart.size
    return _cells(Visual.to_strips(chart, visual or chart.render(), width, height,
                                   chart.visual_style))


def _text(cells) -> str:
    return "".join(ch for row in cells for ch, _ in row)


def _braille(text: str) -> bool:
    """Curve cells (braille dots), not an empty frame."""
    return any("⠁" <= ch <= "⣿" for ch in text)


async def _log_scale_chart(pilot, state) -> LossChart:
    chart = pilot.app.query_one(LossChart)
    chart.log_scale = True
    chart.draw(state, force=True)
    await pilot.pause()
    return chart


async def test_charts_draw_the_same_cells_as_plotexts_ansi_text():
    """``PlotCells`` reads plotext's matrix instead of parsing its ANSI output: every cell's
    character and style must match what the ANSI route (textual-plotext's own) renders."""
    from textual.visual import Visual, visualize
    from textual_plotext import PlotextPlot

    state = RunState()
    for i in range(1, 400):
        state.apply(StepMetrics(step=i, epoch=1, loss=2.0 / math.sqrt(i) + 0.1 * (i % 5),
                                lr=min(i, 50) * 1e-6))

    app = _app_with(LossChart(), LrChart())
    async with app.run_test(size=(90, 40)) as pilot:
        await pilot.pause()
        app.query_one(LossChart).log_scale = True
        for chart in (app.query_one(LossChart), app.query_one(LrChart)):
            chart.draw(state, force=True)
            width, height = chart.size
            ours = Visual.to_strips(chart, chart.render(), width, height, chart.visual_style)
            chart.replay()  # plotext's build rescales in place: the ANSI route needs fresh data
            ansi = Visual.to_strips(chart, visualize(chart, PlotextPlot.render(chart)), width,
                                    height, chart.visual_style)
            assert len(ours) == height and _cells(ours) == _cells(ansi)
            assert _braille(_text(_cells(ours)))


async def test_a_log_scale_chart_survives_a_terminal_resize():
    """plotext rescales its data in place when it builds: rendering a log-scale chart again
    without new data (a resize, a theme change) took the log of the log and crashed the app."""
    state = _loss_steps(2.0 / math.sqrt(i) for i in range(1, 100))
    app = _app_with(LossChart())
    async with app.run_test(size=(80, 30)) as pilot:
        chart = await _log_scale_chart(pilot, state)
        await pilot.resize_terminal(90, 30)  # renders again, with no new data
        await pilot.pause()
        app.theme = "textual-light"          # and again
        await pilot.pause()
        assert app._exception is None
        first, second = chart.render(), chart.render()
        assert first.get_height(None, 90) == 30 and first.get_optimal_width(None, 90) == 90
        cells = _rendered(chart, first)
        # the same figure however often it is rendered (plotext used to rescale it each time)
        assert cells == _rendered(chart, second)
        assert "(log scale)" in _text(cells) and _braille(_text(cells))


async def test_log_scale_leaves_out_what_it_cannot_draw():
    """Zero or negative losses (and a best point among them) have no logarithm: they are left
    out of a log-scale chart instead of raising inside the render."""
    state = _loss_steps([0.0, -0.5, 0.8, 0.4, 0.0])
    assert state.best_loss <= 0
    app = _app_with(LossChart())
    async with app.run_test(size=(80, 24)) as pilot:
        text = _text(_rendered(await _log_scale_chart(pilot, state)))
        assert "(log scale)" in text and "●" not in text.split("best", 1)[1]
        assert _braille(text)  # the positive losses are drawn


def test_decimation_keeps_the_newest_point_when_steps_repeat():
    xs = [1] * 50 + [2] * 50       # a resumed run can log a step number twice
    ys = [float(i % 7) for i in range(100)]
    ys[-1] = 0.5
    dx, dy = decimate(xs, ys, 10)
    assert (dx[-1], dy[-1]) == (2, 0.5)
