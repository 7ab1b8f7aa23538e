"""LoRA dropout that draws a quarter of the random numbers on the CPU.

On the CPU, ``F.dropout`` draws one Mersenne-Twister number per element, on one thread: ~1.6 ms
for a 375 x 512 input on the 2-core bench box, as long as the 512 x 512 matmul beside it. The
LoRA path drops out the input of every adapted projection (32 a step on the mid config, 64 with
gradient checkpointing's recompute), so the masks were 19 % of a mid-size CPU step
(``bench/lora_dropout.py``). Here each element gets 16 random bits, four per 64-bit draw, and is
kept when they are at or above ``round(p * 2**16)``: the drop probability is ``p`` to within
2**-17. The bits come from torch's default CPU generator, so ``torch.manual_seed``, checkpoint
recompute (which restores that generator's state) and bit-exact resume work as before. Other
devices keep ``F.dropout``, whose generators are fast.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_BITS = 16
_LEVELS = 1 << _BITS


def scaled_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """Dropout's multiplier: 0 with probability p (to 2**-17), else 1 / (1 - p).

    Built in float32 with float ops only (comparisons and bool tensors are several times slower
    on the CPU): a 16-bit draw b is kept when b >= t, i.e. when clamp(b - t + 1, 0, 1) is 1."""
    n = shape.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    bits = draws.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    threshold = round(p * _LEVELS) - _LEVELS // 2
    mask = bits.to(torch.float32).sub_(threshold - 1).clamp_(0.0, 1.0).mul_(1.0 / (1.0 - p))
    return mask.to(dtype)


class LoraDropout(nn.Dropout):
    """``nn.Dropout`` with the CPU mask above; a subclass, so code that checks for
    ``nn.Dropout`` (PEFT's DoRA) treats it the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or not 0.0 < self.p < 1.0 or self.inplace:
            return F.dropout(x, self.p, True, self.inplace)
        return x * scaled_mask(x.shape, self.p, x.dtype)  # autograd keeps only the mask


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every plain ``nn.Dropout`` inside PEFT's ``lora_dropout`` dicts for a
    ``LoraDropout`` of the same p; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        dicts = getattr(module, "lora_dropout", None)
        if not isinstance(dicts, nn.ModuleDict):
            continue
        for name, drop in list(dicts.items()):
            if type(drop) is nn.Dropout:
                dicts[name] = LoraDropout(drop.p)
                swapped += 1
    return swapped
