"""The GPU panel: NVML readings sampled by the App's background sampler ("N/A", never zeros)."""

from __future__ import annotations

from textual.widgets import Static


def gpu_lines(readings) -> list[str]:
    if not readings:
        return ["GPU: N/A (no NVIDIA GPU found)"]
    return [r.summary() for r in readings]


class GpuPanel(Static):
    """Shows the latest sample; the App's timer-driven monitor calls ``update_from``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("GPU: sampling…", **kwargs)
        self._last = None

    def update_from(self, readings) -> None:
        text = "\n".join(gpu_lines(readings))
        if text != self._last:
            self._last = text
            self.update(text, layout=False)
