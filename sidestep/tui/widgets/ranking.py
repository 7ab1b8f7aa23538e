"""The estimate's ranking as horizontal bars, best first: self- and cross-attention in the
theme's primary and secondary colours (and named on each row, for colour-blind eyes and
monochrome terminals), the top K marked and bold, a rule under the last one selected."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

EIGHTHS = " ▏▎▍▌▋▊▉"
KINDS = {"self": "self-attention", "cross": "cross-attention", "layer": "layer"}


def kind_of(name: str) -> str:
    if ".self_attn." in name:
        return "self"
    if ".cross_attn." in name:
        return "cross"
    return "layer"


def bar(fraction: float, width: int) -> str:
    """A bar of ``fraction`` of ``width`` cells, to an eighth of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def selection_line(ranking: list[tuple[str, float]], k: int, granularity: str) -> str:
    """``16 of 32 modules selected: 9 self-, 7 cross-attention``."""
    picked = ranking[:k]
    unit = granularity + ("s" if len(ranking) != 1 else "")
    line = f"{len(picked)} of {len(ranking)} {unit} selected"
    if granularity == "module":
        counts = [sum(kind_of(n) == kind for n, _ in picked) for kind in ("self", "cross")]
        line += f": {counts[0]} self-, {counts[1]} cross-attention"
    return line


class RankingChart(Static):
    DEFAULT_CSS = "RankingChart { height: auto; }"

    def __init__(self, **kw) -> None:
        super().__init__("", **kw)
        self.ranking: list[tuple[str, float]] = []
        self.k = 0

    def show(self, ranking: list[tuple[str, float]], k: int) -> None:
        self.ranking, self.k = list(ranking), k
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def colours(self) -> dict[str, str]:
        theme = self.app.current_theme
        return {"self": theme.primary, "cross": theme.secondary, "layer": theme.accent}

    def redraw(self) -> None:
        if not self.ranking:
            self.update("")
            return
        colours = self.colours()
        name_w = max(len(n) for n, _ in self.ranking)
        # rank, mark, name, kind, score around the bar; two cells spare, as a Static wraps a
        # line that touches its edge
        bar_w = max(8, (self.size.width or 94) - (4 + 3 + name_w + 1 + 5 + 1 + 5 + 1) - 2)
        text = Text(no_wrap=True, overflow="crop")
        for i, (name, score) in enumerate(self.ranking):
            picked = i < self.k
            kind = kind_of(name)
            colour = colours[kind]
            text.append(f"{i + 1:>4} ", style="" if picked else "dim")
            text.append("●  " if picked else "   ", style=f"bold {colour}")
            text.append(name.ljust(name_w) + " ", style="bold" if picked else "dim")
            text.append((kind if kind != "layer" else "").ljust(5) + " ",
                        style=colour if picked else f"dim {colour}")
            text.append(f"{score:5.3f} ", style="" if picked else "dim")
            text.append(bar(score, bar_w), style=colour if picked else f"dim {colour}")
            text.append("\n")
            if picked and i == self.k - 1 and self.k < len(self.ranking):
                text.append(f"{'':>4} {'─' * 3} top {self.k} above: selected "
                            f"{'─' * max(0, bar_w + name_w - 16)}\n", style="dim")
        text.rstrip()
        self.update(text)


def legend(colours: dict[str, str], granularity: str) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    if granularity == "module":
        for kind in ("self", "cross"):
            text.append("██ ", style=colours[kind])
            text.append(f"{KINDS[kind]}   ")
    else:
        text.append("██ ", style=colours["layer"])
        text.append("whole layers (all eight projections)   ")
    text.append("● ", style="bold")
    text.append("selected (top K): what selective training adapts")
    return text
