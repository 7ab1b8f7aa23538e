"""Loss and learning-rate charts (plotext through textual-plotext)."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from sidestep.tui.state import RunState, smooth

MAX_POINTS = 600  # the terminal has fewer columns than this; thin long runs evenly


def _thin(xs: list, *series: list) -> tuple[list, ...]:
    if len(xs) <= MAX_POINTS:
        return (xs, *series)
    stride = len(xs) / MAX_POINTS
    idx = sorted({int(i * stride) for i in range(MAX_POINTS)} | {len(xs) - 1})
    return ([xs[i] for i in idx], *([s[i] for i in idx] for s in series))


class LossChart(PlotextPlot):
    """Raw and smoothed loss, the best step marked; ``log_scale`` toggles the y axis."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self._drawn = -1

    def draw(self, state: RunState, force: bool = False) -> None:
        # Keyed on the data drawn, not on ``state.version`` (log lines move that too).
        key = (len(state.steps), state.best_step, self.log_scale)
        if key == self._drawn and not force:
            return
        self._drawn = key
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        steps = list(state.steps)
        losses = list(state.losses)
        # No legend: plotext draws it over the first steps; the title names the series.
        plt.title("loss: raw · smoothed · ● best" + (" (log scale)" if self.log_scale else ""))
        plt.xlabel("step")
        if steps:
            shown = [v if (not self.log_scale or v > 0) else float("nan") for v in losses]
            x, raw, sm = _thin(steps, shown, smooth(shown))
            plt.plot(x, raw, marker="braille", color="gray")
            plt.plot(x, sm, marker="braille", color="cyan")
            if state.best_step is not None and state.best_loss is not None and \
                    math.isfinite(state.best_loss):
                plt.scatter([state.best_step], [state.best_loss], marker="●", color="green")
            if self.log_scale:
                plt.yscale("log")
        self.refresh()


class LrChart(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._drawn = -1

    def draw(self, state: RunState, force: bool = False) -> None:
        if len(state.steps) == self._drawn and not force:
            return
        self._drawn = len(state.steps)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("learning rate")
        if state.steps:
            x, lr = _thin(list(state.steps), list(state.lrs))
            plt.plot(x, lr, marker="braille", color="magenta")
        self.refresh()
