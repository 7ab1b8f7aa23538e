"""The condition encoder: text projector, lyric encoder and timbre encoder.

It runs once per song at preprocessing; its output is what the DiT cross-attends to. Its packed
layout (lyrics, then timbre, then text, valid tokens first) is what preprocessed tensors store.
"""

from __future__ import annotations

import torch
from torch import nn

from sidestep.model.config import AceStepConfig
from sidestep.model.layers import EncoderLayer, RMSNorm, Rotary, additive_mask, band_mask


def pack_sequences(a: torch.Tensor, b: torch.Tensor, mask_a: torch.Tensor,
                   mask_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two padded sequences and move valid tokens first, keeping their order.

    Padded tokens are kept (after the valid ones), not zeroed: the decoder ignores masks, so
    what sits in padded positions is part of the condition it sees.
    """
    x = torch.cat([a, b], dim=1)
    mask = torch.cat([mask_a, mask_b], dim=1)
    order = mask.argsort(dim=1, descending=True, stable=True)
    x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    length = mask.sum(dim=1)
    new_mask = torch.arange(x.shape[1], device=x.device)[None, :] < length[:, None]
    return x, new_mask


def _layer_masks(config: AceStepConfig, n: int, key_mask: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor | None]:
    """Additive masks for full and sliding layers: [B|1, 1, n, n]."""
    full = torch.ones(n, n, dtype=torch.bool, device=device)
    sliding = band_mask(n, config.sliding_window, device)
    out: dict[str, torch.Tensor | None] = {}
    for name, geo in (("full_attention", full), ("sliding_attention", sliding)):
        keep = geo[None, None]
        if key_mask is not None:
            keep = keep & key_mask.bool()[:, None, None, :]
        out[name] = None if (key_mask is None and name == "full_attention") \
            else additive_mask(keep, dtype)
    return out


class _EncoderStack(nn.Module):
    def __init__(self, config: AceStepConfig, in_dim: int, num_layers: int):
        super().__init__()
        self.config = config
        h = config.enc_hidden
        self.embed_tokens = nn.Linear(in_dim, h)
        self.norm = RMSNorm(h, config.rms_norm_eps)
        self.rotary_emb = Rotary(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(
            EncoderLayer(h, config.enc_intermediate, config.enc_heads, config.enc_kv_heads,
                         config.head_dim, config.rms_norm_eps, config.attention_bias)
            for _ in range(num_layers))

    def run_layers(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[1]
        masks = _layer_masks(self.config, n, key_mask, x.dtype, x.device)
        rope = self.rotary_emb(n, x.device, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, masks[self.config.layer_type(i)])
        return self.norm(x)


class LyricEncoder(_EncoderStack):
    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.text_hidden_dim, config.num_lyric_encoder_hidden_layers)

    def forward(self, lyric_hidden_states: torch.Tensor,
                lyric_attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run_layers(self.embed_tokens(lyric_hidden_states), lyric_attention_mask)


class TimbreEncoder(_EncoderStack):
    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.timbre_hidden_dim,
                         config.num_timbre_encoder_hidden_layers)
        self.special_token = nn.Parameter(torch.randn(1, 1, config.enc_hidden))

    def forward(self, refer_packed: torch.Tensor, order_mask: torch.Tensor,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed_tokens(refer_packed)
        if self.config.is_xl:  # the XL file prepends a CLS token; the 2B file does not
            x = torch.cat([self.special_token.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
        x = self.run_layers(x, None)[:, 0]
        return unpack_references(x, order_mask, batch_size)


def unpack_references(packed: torch.Tensor, order: torch.Tensor,
                      batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, D] per-reference embeddings -> ([B, max_refs, D] zero-padded, [B, max_refs] int64)."""
    order = order.long()
    b = int(order.max().item()) + 1 if batch_size is None else batch_size
    counts = torch.bincount(order, minlength=b)
    width = int(counts.max().item())
    out = packed.new_zeros(b, width, packed.shape[-1])
    mask = torch.zeros(b, width, dtype=torch.long, device=packed.device)
    slot = torch.zeros(b, dtype=torch.long)
    for i, row in enumerate(order.tolist()):
        out[row, slot[row]] = packed[i]
        mask[row, slot[row]] = 1
        slot[row] += 1
    return out, mask


class ConditionEncoder(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        self.text_projector = nn.Linear(config.text_hidden_dim, config.enc_hidden, bias=False)
        self.lyric_encoder = LyricEncoder(config)
        self.timbre_encoder = TimbreEncoder(config)

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                refer_audio_acoustic_hidden_states_packed: torch.Tensor,
                refer_audio_order_mask: torch.Tensor, **_unused):
        text = self.text_projector(text_hidden_states)
        lyrics = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_audio_acoustic_hidden_states_packed,
                                                  refer_audio_order_mask,
                                                  batch_size=text.shape[0])
        x, mask = pack_sequences(lyrics, timbre, lyric_attention_mask, timbre_mask)
        x, mask = pack_sequences(x, text, mask, text_attention_mask)
        return x, mask
