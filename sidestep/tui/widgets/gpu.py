"""The GPU panel: NVML readings sampled by the App's background sampler ("N/A", never zeros)."""

from __future__ import annotations

from sidestep.tui.redraw import TextLine


def gpu_lines(readings) -> list[str]:
    if not readings:
        return ["GPU: N/A (no NVIDIA GPU found)"]
    return [r.summary() for r in readings]


class GpuPanel(TextLine):
    """Shows the latest sample; the App's timer-driven monitor calls ``update_from``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("GPU: sampling…", **kwargs)

    def update_from(self, readings) -> None:
        self.set_text("\n".join(gpu_lines(readings)))
