"""An exponential moving average of the adapter's trainable weights (``--ema-decay``).

The shadow is float32 whatever the training precision, updated after every optimizer step with
``shadow += (1 - d) * (weight - shadow)``. ``d`` warms up as ``min(decay, (1 + n) / (10 + n))``
(n = updates so far), so a short run's EMA is not stuck near the untrained initial weights.
Checkpoints hold the shadow and the update count, so a resumed run continues the same average.
``applied()`` puts the average into the adapter for a save, a validation pass or a sample, and
puts the trained weights back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

# A CUDA shadow needs this much free memory beyond its own size; otherwise it lives in RAM.
_HEADROOM_BYTES = 2 << 30


class EmaError(ValueError):
    pass


def shadow_device(params: list[torch.nn.Parameter], device: torch.device) -> torch.device:
    """The training device when it has room, else the CPU (the update then copies each weight
    to host memory once per step)."""
    if device.type != "cuda":
        return torch.device("cpu")
    need = sum(p.numel() for p in params) * 4
    free, _ = torch.cuda.mem_get_info(device)
    return device if free > need + _HEADROOM_BYTES else torch.device("cpu")


class AdapterEMA:
    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float,
                 device: torch.device):
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.decay = float(decay)
        self.device = device
        self.restart()

    def restart(self) -> None:
        """The shadow from the weights as they are now (a resumed run's, whose checkpoint
        kept no EMA)."""
        self.updates = 0
        self.shadow = [p.detach().to(device=self.device, dtype=torch.float32, copy=True)
                       for p in self.params]

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.rate()
        current = [p.detach().to(device=self.device, dtype=torch.float32) for p in self.params]
        torch._foreach_lerp_(self.shadow, current, weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "names": list(self.names),
                "shadow": [s.detach().cpu().clone() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any], origin: str) -> None:
        names = list(state.get("names") or [])
        shadow = state.get("shadow") or []
        if names != self.names or len(shadow) != len(self.shadow) or any(
                tuple(a.shape) != tuple(b.shape) for a, b in zip(shadow, self.shadow)):
            raise EmaError(f"{origin}: its EMA does not match this run's adapter; resume with "
                           "the settings it was trained with")
        for dst, src in zip(self.shadow, shadow):
            dst.copy_(src.to(dtype=torch.float32))
        self.updates = int(state.get("updates", 0))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the adapter for the duration of the block."""
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s.to(device=p.device, dtype=p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, k in zip(self.params, kept):
                    p.copy_(k)
