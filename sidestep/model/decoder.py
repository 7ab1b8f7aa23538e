"""The ACE-Step 1.5 DiT decoder: predicts the flow velocity of noisy latents.

Behaviour that is easy to get wrong, all checked against upstream goldens (tests/reference):
- the input is ``cat([context_latents, x_t], -1)`` (context first), right-padded in time to a
  multiple of ``patch_size`` and cropped back at the end;
- ``attention_mask`` and ``encoder_attention_mask`` are accepted but ignored, as upstream does;
- even-indexed ("sliding_attention") layers see a bidirectional band |i-j| <= sliding_window
  (``layers.sliding_path``: on CUDA FlexAttention block masks, on the CPU for long sequences
  block by block, ``layers.banded_attention``; otherwise one dense boolean mask, built once and
  shared by those layers); full layers take no mask at all;
- ``time_embed_r`` sees ``t - r`` and its output is always added (0 when r == t).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sidestep.model.config import AceStepConfig
from sidestep.model.layers import MLP, Attention, RMSNorm, Rotary, band_mask, sliding_path


class _SwapTimeChannels(nn.Module):
    """[B, T, C] <-> [B, C, T]; sits around the patch convolutions (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of 1000*t (cos first), an MLP, and a 6-way modulation projection."""

    def __init__(self, hidden: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.linear_1 = nn.Linear(freq_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, hidden * 6)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0)
                          * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (t * self.scale).float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        temb = self.linear_2(F.silu(self.linear_1(emb.to(self.linear_1.weight.dtype))))
        proj = self.time_proj(F.silu(temb)).unflatten(1, (6, -1))
        return temb, proj


class DiTLayer(nn.Module):
    """AdaLN-modulated self-attention, plain cross-attention, modulated MLP."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        dims = (h, config.num_attention_heads, config.num_key_value_heads, config.head_dim, eps,
                config.attention_bias)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, h) / h ** 0.5)
        self.self_attn_norm = RMSNorm(h, eps)
        self.self_attn = Attention(*dims)
        self.cross_attn_norm = RMSNorm(h, eps)
        self.cross_attn = Attention(*dims)
        self.mlp_norm = RMSNorm(h, eps)
        self.mlp = MLP(h, config.intermediate_size)

    def forward(self, x, mod, cond, rope, mask=None, window=None):
        """Self-attention sees ``mask`` (a boolean band, or None: everything) or, when
        ``window`` is given, the band |i-j| <= window without a mask (banded or flex)."""
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + mod).chunk(6, 1)
        h = (self.self_attn_norm(x) * (1 + scale) + shift).type_as(x)
        x = (x + self.self_attn(h, rope=rope, mask=mask, window=window) * gate).type_as(x)
        x = x + self.cross_attn(self.cross_attn_norm(x).type_as(x), context=cond)
        h = (self.mlp_norm(x) * (1 + c_scale) + c_shift).type_as(x)
        return (x + self.mlp(h) * c_gate).type_as(x)


class AceStepDecoder(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        h, p = config.hidden_size, config.patch_size
        self.rotary_emb = Rotary(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(DiTLayer(config) for _ in range(config.num_hidden_layers))
        self.proj_in = nn.Sequential(_SwapTimeChannels(),
                                     nn.Conv1d(config.in_channels, h, kernel_size=p, stride=p),
                                     _SwapTimeChannels())
        self.time_embed = TimestepEmbedding(h)
        self.time_embed_r = TimestepEmbedding(h)
        self.condition_embedder = nn.Linear(config.enc_hidden, h)
        self.norm_out = RMSNorm(h, config.rms_norm_eps)
        self.proj_out = nn.Sequential(_SwapTimeChannels(),
                                      nn.ConvTranspose1d(h, config.audio_acoustic_hidden_dim,
                                                         kernel_size=p, stride=p),
                                      _SwapTimeChannels())
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, h) / h ** 0.5)
        self.gradient_checkpointing = False

    # Names PEFT and the trainer look for.
    def gradient_checkpointing_enable(self, **_ignored) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                timestep_r: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None,
                context_latents: torch.Tensor | None = None, **_unused):
        del attention_mask, encoder_attention_mask  # ignored, exactly as upstream
        if timestep_r is None:
            timestep_r = timestep
        if context_latents is None or encoder_hidden_states is None:
            raise ValueError("the decoder needs context_latents and encoder_hidden_states")
        dtype = self.proj_in[1].weight.dtype
        temb_t, mod_t = self.time_embed(timestep)
        temb_r, mod_r = self.time_embed_r(timestep - timestep_r)
        temb, mod = temb_t + temb_r, mod_t + mod_r

        x = torch.cat([context_latents, hidden_states], dim=-1).to(dtype)
        length = x.shape[1]
        p = self.config.patch_size
        pad = (-length) % p
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        # The patch conv's [B, C, N] output swapped back is a strided view, and elementwise
        # ops keep their input's strides: the whole residual stream stayed channels-first and
        # every Linear ran as a batched matmul over it (forward and backward). Contiguous,
        # they are plain matrix products (bench: within noise on a 2-core CPU).
        x = self.proj_in(x).contiguous()
        cond = self.condition_embedder(encoder_hidden_states.to(dtype))
        n = x.shape[1]
        rope = self.rotary_emb(n, x.device, x.dtype)
        masks: dict[int, torch.Tensor] = {}

        for i, layer in enumerate(self.layers):
            window = self.config.window_for(i)
            mask = None
            if window is not None and sliding_path(n, window, x.device, x.dtype) == "dense":
                if window not in masks:
                    masks[window] = band_mask(n, window, x.device)
                mask, window = masks[window], None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mod, cond, rope, mask, window, use_reentrant=False)
            else:
                x = layer(x, mod, cond, rope, mask, window)

        shift, scale = (self.scale_shift_table + temb[:, None]).chunk(2, dim=1)
        x = (self.norm_out(x) * (1 + scale) + shift).type_as(x)
        out = self.proj_out(x)[:, :length]
        return out, None
