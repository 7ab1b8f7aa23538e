"""The ACE-Step 1.5 model as Side-Step uses it: decoder, condition encoder, null condition.

The audio tokenizer and detokenizer of the full upstream model are not built: training and
preprocessing never run them, and their ~210M parameters would only cost memory. Their
checkpoint keys are skipped on load (see ``loading.SKIPPED_PREFIXES``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from sidestep.model.config import AceStepConfig
from sidestep.model.decoder import AceStepDecoder
from sidestep.model.encoder import ConditionEncoder
from sidestep.model.layers import Rotary


PARTS = ("decoder", "encoder", "null_condition_emb")


class AceStepModel(nn.Module):
    """A part left out of ``parts`` is None: training from preprocessed tensors never runs the
    encoder, and preprocessing never runs the decoder, so neither costs memory there."""

    def __init__(self, config: AceStepConfig, parts: tuple[str, ...] = PARTS):
        super().__init__()
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown model parts: {sorted(unknown)}")
        self.config = config
        self.parts = tuple(p for p in PARTS if p in parts)
        self.decoder = AceStepDecoder(config) if "decoder" in parts else None
        self.encoder = ConditionEncoder(config) if "encoder" in parts else None
        self.null_condition_emb = (nn.Parameter(torch.randn(1, 1, config.enc_hidden))
                                   if "null_condition_emb" in parts else None)

    def forward(self, *args, **kwargs):  # pragma: no cover - callers use the submodules
        raise RuntimeError("call model.decoder(...) or model.encoder(...) directly")

    def reset_nonpersistent_buffers(self, device: torch.device | str) -> None:
        for module in self.modules():
            if isinstance(module, Rotary):
                module.reset_buffers(device)


def build_acestep(config: AceStepConfig | Mapping[str, Any], device: str | torch.device = "meta",
                  dtype: torch.dtype | None = None, parts: tuple[str, ...] = PARTS
                  ) -> AceStepModel:
    """Build without loading weights. On ``meta`` no memory is used (shapes only)."""
    if not isinstance(config, AceStepConfig):
        config = AceStepConfig.from_dict(config)
    with torch.device(device):
        model = AceStepModel(config, parts=parts)
    if dtype is not None:
        model.to(dtype)
    return model


def init_weights(model: AceStepModel, std: float = 0.02, generator: torch.Generator | None = None
                 ) -> None:
    """Upstream-style random init (Linear ~ N(0, std), biases 0, norms 1) for fixtures/benches."""
    from sidestep.model.layers import RMSNorm

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
