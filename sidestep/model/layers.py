"""Building blocks shared by the DiT decoder and the condition encoder.

Parameter names follow the upstream checkpoints exactly (``q_proj``, ``q_norm``, ``gate_proj``,
...), so a real ``model.safetensors`` loads with ``strict=True``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from sidestep.config import vram

log = logging.getLogger(__name__)


class RMSNorm(nn.Module):
    """RMS norm computed in float32, scaled by the weight after casting back (Qwen3 order)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Rotary(nn.Module):
    """RoPE tables (rotate-half convention) for positions 0..n-1."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float()
                                    / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.head_dim = head_dim
        self.theta = theta

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recompute ``inv_freq`` on ``device`` (it is not in checkpoints; after a meta-device
        build it has no data)."""
        self.inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                                           device=device).float()
                                              / self.head_dim))

    def forward(self, n: int, device: torch.device, dtype: torch.dtype):
        pos = torch.arange(n, device=device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None].to(dtype), emb.sin()[None].to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, N, D]; cos/sin: [1, N, D]."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


def band_mask(n: int, window: int, device: torch.device) -> torch.Tensor:
    """Bidirectional sliding-window mask: True where |i - j| <= window."""
    idx = torch.arange(n, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


SLIDING_PATHS = ("auto", "dense", "banded", "flex")


def path_from_env(environ=os.environ) -> str:
    """``SIDESTEP_SLIDING_PATH`` (auto|dense|banded|flex; unset: auto). An escape hatch, e.g.
    ``dense`` where FlexAttention fails to compile; an unknown value warns and means auto."""
    value = environ.get("SIDESTEP_SLIDING_PATH", "").strip().lower() or "auto"
    if value not in SLIDING_PATHS:
        log.warning("SIDESTEP_SLIDING_PATH=%r is not one of %s: using auto", value,
                    "|".join(SLIDING_PATHS))
        return "auto"
    return value


# How sliding-window layers attend (sliding_path): "auto" picks per device, dtype and sequence
# length; "dense" (one N x N boolean mask), "banded" (banded_attention) or "flex"
# (flex_band_attention; on the CPU forward only and uncompiled, for tests) forces one everywhere
# (benches and tests compare them). Set once at import from SIDESTEP_SLIDING_PATH.
SLIDING_PATH = path_from_env()
def band_block(window: int) -> int:
    """Query rows per block of ``banded_attention`` (the rule and its measurements:
    ``sidestep.config.vram``, which the VRAM estimate counts by too)."""
    return max(window, vram.BAND_MIN_BLOCK)


def use_banded(n: int, window: int, device: torch.device | str) -> bool:
    """Whether a sliding layer over ``n`` tokens runs ``banded_attention`` (else the dense band
    mask). Auto: on the CPU only, where it skips enough work; CUDA takes FlexAttention
    instead (``sliding_path``).
    The rule is ``sidestep.config.vram.banded``'s, one for the model and the estimate."""
    if SLIDING_PATH != "auto":
        return SLIDING_PATH == "banded"
    return vram.banded(n, window, torch.device(device).type)


# What FlexAttention's CUDA kernels take; anything else (float64) keeps the dense mask.
FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.lru_cache(maxsize=1)
def flex_available() -> bool:
    """FlexAttention imports, and Triton, which compiles its kernels, is installed (CUDA wheels
    for Linux bring it; Windows usually lacks it, and the compile would fail mid-step)."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec("triton") is not None


def sliding_path(n: int, window: int, device: torch.device | str,
                 dtype: torch.dtype | None = None) -> str:
    """How a sliding layer over ``n`` tokens attends: "dense" (the decoder builds one boolean
    band mask), "banded" or "flex" (the layer gets ``window``, no mask is built). Auto: CUDA
    runs FlexAttention where it is available and takes ``dtype``, else the dense mask; the CPU
    runs ``banded_attention`` where ``use_banded`` says so, else the dense mask."""
    device = torch.device(device)
    if SLIDING_PATH == "flex" and device.type != "cuda" and torch.is_grad_enabled():
        # torch has no FlexAttention backward on the CPU: a forced flex would fail training's
        # first step there, so training on the CPU keeps its own band path.
        return "banded"
    if SLIDING_PATH != "auto":
        return SLIDING_PATH
    if device.type == "cuda":
        return "flex" if dtype in FLEX_DTYPES and flex_available() else "dense"
    return "banded" if use_banded(n, window, device) else "dense"


def _band_mod(window: int):
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window
    return mask_mod


@functools.lru_cache(maxsize=16)
def flex_block_mask(n: int, window: int, device: torch.device):
    """The BlockMask of |q - kv| <= window over ``n`` tokens. Cached: every sliding layer of a
    step shares one, and the same mask object spares the compiled kernel a guard miss."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_band_mod(window), None, None, n, n, device=device)


_compiled_flex = None


def _flex_kernel(compiled: bool):
    """flex_attention, compiled once per process on first use (Triton kernels for the CUDA
    device; ``dynamic=False``: each new sequence length compiles its own kernel)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    if _compiled_flex is None:
        # dynamic=None: a second sequence length compiles a dynamic kernel instead of one
        # per length (songs differ in length; past dynamo's recompile limit torch would fall
        # back to eager flex, which builds the full score matrix).
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


def flex_band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                        compiled: bool | None = None) -> torch.Tensor:
    """SDPA under ``band_mask(n, window)`` by FlexAttention: no N x N mask, and 128 x 128
    tiles wholly outside the band are skipped. q: [B, H, N, D], k/v: [B, Hkv, N, D] (GQA read
    natively); returns [B, H, N, D]. ``compiled`` (default: on CUDA) uses the fused kernel;
    uncompiled, FlexAttention materialises the scores and has no CPU backward, so that mode is
    for tests. Never compiled on the CPU."""
    if compiled is None:
        compiled = q.device.type == "cuda"
    if compiled and q.device.type == "cpu":
        raise ValueError("flex_band_attention is not compiled on the CPU")
    mask = flex_block_mask(q.shape[2], window, q.device)
    return _flex_kernel(compiled)(q, k, v, block_mask=mask, enable_gqa=True)


def repeat_kv(q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GQA: k/v repeated to q's heads (q head h reads kv head h // groups)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return k, v


def native_gqa(device: torch.device) -> bool:
    """Whether SDPA reads shared k/v heads itself (enable_gqa) for a mask on ``device``: the
    CPU kernel does; CUDA's memory-efficient kernel, the one a mask selects, does not."""
    return device.type == "cpu"


def _windows(x: torch.Tensor, window: int, block: int, blocks: int) -> torch.Tensor:
    """[B, H, N, D] -> [B * blocks, H, block + 2*window, D]: block i's keys, positions
    [i*block - window, (i+1)*block + window), zeros past either end. Overlapping views of one
    padded copy (a copy per window only for batch > 1)."""
    b, h, n, d = x.shape
    # [B, N, H, D] is the projections' own layout, so this transpose costs nothing.
    padded = F.pad(x.transpose(1, 2), (0, 0, 0, 0, window, blocks * block - n + window))
    win = padded.unfold(1, block + 2 * window, block)  # [B, blocks, H, D, span]
    return win.permute(0, 1, 2, 4, 3).reshape(b * blocks, h, block + 2 * window, d)


def _block_masks(n: int, window: int, block: int, blocks: int,
                 device: torch.device) -> torch.Tensor:
    """[blocks, 1, block, block + 2*window]: query i*block + r sees window key c when
    |r + window - c| <= window and the key exists. The padding queries past n see every key
    of their window instead, so that no row is empty (their outputs are cut off)."""
    r = torch.arange(block, device=device)[:, None]
    c = torch.arange(block + 2 * window, device=device)[None, :]
    start = torch.arange(blocks, device=device)[:, None, None] * block
    key = start - window + c
    exists = (key >= 0) & (key < n)
    band = (c >= r) & (c <= r + 2 * window)
    return ((band | (start + r >= n)) & exists)[:, None]


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     block: int | None = None) -> torch.Tensor:
    """SDPA under ``band_mask(n, window)`` without the N x N mask or the work outside the
    band: each block of queries [s, s + block) attends only to keys [s - window, s + block +
    window). q: [B, H, N, D], k/v: [B, Hkv, N, D]; returns [B, H, N, D].

    One SDPA call over all blocks (blocks folded into the batch), on views: for batch 1 only
    padded copies of q, k and v are made, and autograd keeps nothing k/v-sized beyond them.
    A Python loop of one call per block on slices (CPU, forward+backward, window 128, 1500
    tokens) was faster on a quiet core (3.3-4.1x the dense mask against 3.0x) and level on two,
    but with another process holding a core it ran 0.33x the dense mask where a single call
    ran 1.75x: each of its ~8 small parallel regions per block waits for a descheduled OpenMP
    worker.
    GQA: k/v heads are shared where the kernel can (``native_gqa``), else repeated once.
    """
    b, heads, n, d = q.shape
    gqa = heads != k.shape[1] and native_gqa(q.device)
    if not gqa:
        k, v = repeat_kv(q, k, v)
    block = block or band_block(window)
    blocks = -(-n // block)
    padded = blocks * block
    qb = F.pad(q.transpose(1, 2), (0, 0, 0, 0, 0, padded - n))
    qb = qb.reshape(b * blocks, block, heads, d).transpose(1, 2)
    mask = _block_masks(n, window, block, blocks, q.device)
    if b > 1:
        mask = mask.repeat(b, 1, 1, 1)
    out = F.scaled_dot_product_attention(qb, _windows(k, window, block, blocks),
                                         _windows(v, window, block, blocks), attn_mask=mask,
                                         enable_gqa=gqa)
    # Back to [B, N, H, D]: the caller's transpose-and-flatten is then a view, not a copy.
    out = out.transpose(1, 2).reshape(b, padded, heads, d)[:, :n]
    return out.transpose(1, 2)


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where kept, the dtype's lowest finite value elsewhere.

    A finite floor (not -inf) matters: a query row with no allowed key then averages over all
    keys instead of producing NaN, which is what upstream's encoder does for long padding.
    """
    out = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return out.masked_fill(~keep, torch.finfo(dtype).min)


class Attention(nn.Module):
    """Multi-head attention with per-head q/k RMS norm, GQA and optional RoPE."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float,
                 bias: bool = False):
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
        """``window``: attend within |i - j| <= window with no mask, by
        ``flex_band_attention`` where ``sliding_path`` picks flex, else ``banded_attention``."""
        b, n, _ = x.shape
        src = x if context is None else context
        m = src.shape[1]
        q = self.q_norm(self.q_proj(x).view(b, n, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(src).view(b, m, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(src).view(b, m, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        if window is not None:
            if sliding_path(n, window, q.device, q.dtype) == "flex":
                out = flex_band_attention(q, k, v, window)
            else:
                out = banded_attention(q, k, v, window)
        else:
            k, v = repeat_kv(q, k, v)
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer used by the lyric and timbre encoders."""

    def __init__(self, hidden: int, intermediate: int, heads: int, kv_heads: int,
                 head_dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.self_attn = Attention(hidden, heads, kv_heads, head_dim, eps, bias)
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = MLP(hidden, intermediate)

    def forward(self, x, rope, mask):
        x = x + self.self_attn(self.input_layernorm(x), rope=rope, mask=mask)
        return x + self.mlp(self.post_attention_layernorm(x))
