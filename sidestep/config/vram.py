"""Peak training-memory estimate and the VRAM profiles.

Computed from the resolved ``TrainingConfig`` and the model's ``config.json`` alone: no weights,
no torch (the CLI shows the estimate before anything heavy is imported). The model is a sum of
named terms, each one a tensor (or a group of tensors) that training really keeps on the device;
the constants and assumptions are stated where they are used.

What training keeps (see ``sidestep.engine`` and ``sidestep.model``):

- weights: only the decoder and ``null_condition_emb``, in the training dtype;
- adapter: LoRA (PEFT) or LoKR (LyCORIS) parameters in fp32, their gradients in fp32, and the
  optimizer state;
- activations: what autograd saves for the backward pass. With gradient checkpointing each DiT
  layer keeps only its input hidden state and one layer's activations exist at a time (during its
  recompute and backward); without it every layer's activations are kept;
- overhead: CUDA context, library workspaces and allocator fragmentation.

Assumptions: attention runs in a fused SDPA kernel (flash or memory-efficient: the [N, N] score
matrix is never materialised), activations are in the training dtype (autocast for bf16/fp16),
and ``precision: auto`` means bf16 (a CUDA card with compute capability >= 8.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from sidestep.config import schema
from sidestep.config.dims import ModelDims

MIB = 1024 * 1024
GIB_MIB = 1024

# Latent frames per second (sidestep.data.audio.LATENT_RATE; not imported to keep this light).
LATENT_RATE = 25
# Song length assumed when neither chunk_duration nor max_duration is set.
DEFAULT_DURATION_S = 240.0
# Condition tokens the decoder cross-attends to: 512 lyric + 1 timbre + 256 text.
COND_TOKENS = 512 + 1 + 256

# CUDA context, cuBLAS/cuDNN workspaces and loaded kernels: about 300-500 MiB on current
# drivers; 600 leaves room for the caching allocator's first blocks.
OVERHEAD_FIXED_MIB = 600.0
# Caching-allocator fragmentation and short-lived temporaries the model does not list.
OVERHEAD_FRACTION = 0.10
# "tight" when the estimate uses more than (1 - TIGHT_MARGIN) of the free memory.
TIGHT_MARGIN = 0.10

# bitsandbytes 8-bit optimizers: block-wise quantization with one fp32 absmax per 256 values;
# tensors under 4096 values keep 32-bit state.
BNB_BLOCK = 256
BNB_MIN_8BIT = 4096

# Long sequences on the CPU run the sliding layers block by block, with no N x N mask
# (sidestep.model.layers.banded_attention; ``banded`` is the one rule, for it and the estimate).
# Queries per block, at least the window: blocks of 64 and 128 ran within 10 % of each other at
# 1500 and 3000 tokens (window 128); 128 makes fewer, larger GEMMs.
BAND_MIN_BLOCK = 128
# Banded only where it skips a quarter of the dense work (block x (block + 2*window) pairs per
# block against N x N). Attention fwd+bwd, fp32 CPU, 8/4 heads, head_dim 64, window 128, 1
# thread: 0.95x the dense mask at 460 tokens (93 % of its work), 1.15x at 512 (75 %), 1.5x at
# 768, 3.0x at 1500, 6.1x at 3000.
BAND_MAX_WORK = 0.75

PROJECTIONS = schema.PROJECTIONS
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
_DTYPE_ALIASES = {"auto": "bf16", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                  "float32": "fp32", "float": "fp32"}

# tier -> (built-in preset, card size in GiB)
PROFILES: dict[str, tuple[str, int]] = {
    "8gb": ("vram_8gb", 8),
    "12gb": ("vram_12gb", 12),
    "16gb": ("vram_16gb", 16),
    "24gb": ("vram_24gb_plus", 24),
}
# What --vram-profile takes, in words (the help and the refusal of another name).
PROFILE_WORDS = f"{', '.join(PROFILES)}, auto (from the detected GPU) or none"
# Smallest total memory (GiB) that selects a tier. Cards report less than their nominal size
# (a "12 GB" card shows ~11.7 GiB, a "16 GB" one ~15.6-16), so each threshold sits well below
# the nominal size; 20 GiB cards (RTX 3080 20GB, RTX 4000 Ada) get the 24 GB tier.
PROFILE_THRESHOLDS_GIB: tuple[tuple[str, float], ...] = (
    ("24gb", 20.0), ("16gb", 14.0), ("12gb", 10.0), ("8gb", 0.0))


def decoder_param_count(model_config: Any = None) -> int:
    """Parameters of the decoder (training also loads ``null_condition_emb``: enc_hidden more)."""
    d = ModelDims.of(model_config)
    h, a, k, i = d.hidden_size, d.attn_width, d.kv_width, d.intermediate_size
    attn = 2 * h * a + 2 * h * k + 2 * d.head_dim  # q, o, k, v and the q/k norms
    if d.attention_bias:
        attn += a + 2 * k + h
    layer = 6 * h + 3 * h + 2 * attn + 3 * h * i  # modulation table, 3 norms, 2 attentions, MLP
    time_embed = (256 * h + h) + (h * h + h) + (h * 6 * h + 6 * h)
    rest = (d.in_channels * h * d.patch_size + h  # proj_in
            + 2 * time_embed
            + d.enc_hidden * h + h  # condition_embedder
            + h  # norm_out
            + h * d.audio_acoustic_hidden_dim * d.patch_size + d.audio_acoustic_hidden_dim
            + 2 * h)  # output scale_shift_table
    return d.num_hidden_layers * layer + rest


# -- adapter parameters -------------------------------------------------------------------------
def targets(config: Any) -> dict[str, tuple[str, ...]]:
    """Adapted projections per attention side, as ``engine.adapters.target_names`` picks them."""
    sides = {"self": ("self_attn",), "cross": ("cross_attn",),
             "both": ("self_attn", "cross_attn")}[config.attention_type]
    out: dict[str, tuple[str, ...]] = {}
    for side in sides:
        projs = config.target_modules or ()
        if config.attention_type == "both":
            if side == "self_attn" and config.self_target_modules:
                projs = config.self_target_modules
            if side == "cross_attn" and config.cross_target_modules:
                projs = config.cross_target_modules
        chosen = tuple(p for p in PROJECTIONS if p in projs)
        if chosen:
            out[side] = chosen
    if not out:
        raise ValueError("no decoder modules selected: check attention_type and the target "
                         "projections")
    return out


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS ``functional.general.factorization``: dimension = m * n with m <= n, m the
    factor when it divides, else the most square split with m <= factor."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def _lokr_tensors(out: int, inp: int, dim: int, factor: int, decompose_both: bool,
                  use_scalar: bool, weight_decompose: bool) -> list[tuple[int, ...]]:
    """Parameter shapes of one LyCORIS LoKR Linear: W ~ w1 [a, c] (x) w2 [b, d]."""
    a, b = factorization(out, factor)
    c, d = factorization(inp, factor)
    shapes: list[tuple[int, ...]] = []
    if decompose_both and dim < max(a, c) / 2:
        shapes += [(a, dim), (dim, c)]
    else:
        shapes.append((a, c))
    if dim < max(b, d) / 2:
        shapes += [(b, dim), (dim, d)]
    else:  # LyCORIS falls back to a full w2 when the rank is this large
        shapes.append((b, d))
    if use_scalar:
        shapes.append(())
    if weight_decompose:
        shapes.append((out, 1))  # dora_scale, per output row
    return shapes


def _layer_adapter_tensors(config: Any, d: ModelDims) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    for projs in targets(config).values():
        for proj in projs:
            out, inp = d.proj_shape(proj)
            if config.adapter_type == "lokr":
                shapes += _lokr_tensors(out, inp, config.lokr_linear_dim, config.lokr_factor,
                                        bool(config.lokr_decompose_both),
                                        bool(config.lokr_use_scalar),
                                        bool(config.lokr_weight_decompose))
            elif config.adapter_type == "loha":  # hada_w1_a/b, hada_w2_a/b
                r = config.loha_linear_dim
                shapes += [(out, r), (r, inp), (out, r), (r, inp)]
            else:
                shapes += [(config.rank, inp), (out, config.rank)]  # lora_A, lora_B
                if config.adapter_type == "dora":
                    shapes.append((out,))  # the magnitude vector
    return shapes


def _bias_tensors(config: Any, d: ModelDims) -> list[tuple[int, ...]]:
    """Biases PEFT makes trainable with ``bias`` all / lora_only (LoRA only)."""
    if config.adapter_type not in ("lora", "dora") or config.bias == "none":
        return []
    tg = targets(config)
    if config.bias == "lora_only":
        if not d.attention_bias:
            return []
        return [(d.proj_shape(p)[0],) for projs in tg.values() for p in projs] \
            * d.num_hidden_layers
    h = d.hidden_size
    shapes: list[tuple[int, ...]] = [(h,), (h,), (6 * h,)] * 2  # time_embed(_r) Linears
    shapes += [(h,), (h,), (d.audio_acoustic_hidden_dim,)]  # proj_in, condition_embedder, proj_out
    if d.attention_bias:
        per_attn = [(d.attn_width,), (d.kv_width,), (d.kv_width,), (h,)]
        shapes += per_attn * 2 * d.num_hidden_layers
    return shapes


def adapter_tensors(config: Any, model_config: Any = None) -> list[tuple[int, ...]]:
    """Shapes of every trainable tensor (the optimizer's parameters)."""
    d = ModelDims.of(model_config)
    return _layer_adapter_tensors(config, d) * d.num_hidden_layers + _bias_tensors(config, d)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def adapter_param_count(config: Any, model_config: Any = None) -> int:
    """Trainable parameters: LoRA r*(in+out) or the LoKR factors per adapted Linear, over all
    decoder layers, plus any biases ``bias`` makes trainable."""
    return sum(_numel(s) for s in adapter_tensors(config, model_config))


# -- optimizer ----------------------------------------------------------------------------------
def optimizer_bytes(kind: str, shapes: list[tuple[int, ...]]) -> int:
    """Optimizer state for fp32 parameters of these shapes."""
    total = 0
    for shape in shapes:
        n = _numel(shape)
        if kind == "adamw":  # exp_avg + exp_avg_sq
            total += 8 * n
        elif kind == "adamw8bit":  # two uint8 states + fp32 absmax per block
            total += 8 * n if n < BNB_MIN_8BIT else 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCK)
        elif kind == "adafactor":  # no first moment; factored second moment for matrices
            if len(shape) >= 2:
                rows = _numel(shape[:-1])
                cols = _numel(shape[:-2]) * shape[-1]
                total += 4 * (rows + cols)
            else:
                total += 4 * n
        elif kind == "prodigy":  # exp_avg, exp_avg_sq, s, p0
            total += 16 * n
        else:
            raise ValueError(f"unknown optimizer {kind!r}")
    return total


# -- activations --------------------------------------------------------------------------------
def _pad16(n: int) -> int:
    return -(-n // 16) * 16


def _adapter_layer_activations(config: Any, d: ModelDims, n: int, cond: int,
                               e: int) -> tuple[int, int]:
    """(bytes per sample, bytes independent of the batch) the adapters add to one layer.

    LoRA (PEFT): each adapted projection casts its input to fp32 and applies dropout; autograd
    keeps the dropout mask (bool, only with dropout > 0), lora_A's input in the activation
    dtype (a copy per projection) and lora_B's input [tokens, r]. With fp32 training and no
    dropout that input is the shared hidden state itself, so this over-counts a little there.
    LoKR (LyCORIS, weight-rebuild forward): ``F.linear(x, delta_W)`` keeps its input and, when
    the input needs a gradient, the weight-sized delta_W. q/k/v of self-attention share one
    input; o_proj's input is a view of the SDPA output (already counted); cross k/v read the
    condition, which is alive anyway and needs no gradient.
    """
    h = d.hidden_size
    per_sample = 0
    fixed = 0
    for side, projs in targets(config).items():
        if config.adapter_type in ("lokr", "loha"):  # both rebuild the weight, as LoKR
            for proj in projs:
                if side == "self_attn" or proj in ("q_proj", "o_proj"):
                    out, inp = d.proj_shape(proj)
                    fixed += out * inp * e
            if side == "self_attn" and set(projs) & {"q_proj", "k_proj", "v_proj"}:
                per_sample += n * h * e
            if side == "cross_attn" and "q_proj" in projs:
                per_sample += n * h * e
            continue
        mask = 1 if config.dropout and config.dropout > 0 else 0
        for proj in projs:
            _, inp = d.proj_shape(proj)
            tokens = cond if side == "cross_attn" and proj in ("k_proj", "v_proj") else n
            per_sample += tokens * inp * (e + mask) + tokens * config.rank * e
    return per_sample, fixed


def layer_activation_terms(config: Any, model_config: Any, n: int, cond: int = COND_TOKENS,
                           e: int = 2) -> dict[str, int]:
    """Bytes autograd keeps for one DiT layer, per sample (the batch multiplies them).

    n: sequence length (patches), cond: condition tokens, e: bytes per activation value.
    Extras: ``band_mask_bytes`` (sliding layers: the dense [N, N] bias, shared by the batch,
    or the banded CPU path's per-block ones), ``lokr_delta_bytes`` (batch-independent). The
    banded path keeps q, k and v padded to whole blocks but k/v unrepeated (the CPU kernel reads
    shared heads): from about 5 blocks on the terms below bound it.
    """
    d = ModelDims.of(model_config)
    h, a, k, i = d.hidden_size, d.attn_width, d.kv_width, d.intermediate_size
    heads, kv_heads = d.num_attention_heads, d.num_key_value_heads
    adapter, _ = _adapter_layer_activations(config, d, n, cond, e)
    return {
        # RMSNorm upcasts its input: the self-attn, cross-attn and MLP norms each keep x.float()
        # [n, H] and the rsqrt factor [n, 1], in fp32.
        "norm inputs fp32": 3 * n * (h + 1) * 4,
        # Per-head q/k norms, the same in fp32: self q [n, A], k [n, K]; cross q [n, A],
        # k [L, K]; plus one rsqrt factor per head and token.
        "q/k norm inputs fp32": ((2 * n * a + n * k + cond * k)
                                 + (2 * n * heads + n * kv_heads + cond * kv_heads)) * 4,
        # SDPA keeps q, k and v (k/v repeated to all heads by repeat_interleave), its output
        # and an fp32 log-sum-exp per head and query.
        "self-attention q/k/v/out": 4 * n * a * e + heads * n * 4,
        "cross-attention q/k/v/out": (2 * n * a + 2 * cond * a) * e + heads * n * 4,
        # SwiGLU: gate output (for silu), silu output and up output (for the product); the
        # product feeds the frozen down_proj, which keeps nothing.
        "mlp gate/act/up": 3 * n * i * e,
        "adapter inputs": adapter,
    }


def lokr_delta_bytes(config: Any, model_config: Any, e: int = 2) -> int:
    """Per layer, batch-independent: the weight-sized LoKR deltas autograd keeps."""
    return _adapter_layer_activations(config, ModelDims.of(model_config), 1, 1, e)[1]


def banded(n: int, window: int | None, device: str | None) -> bool:
    """Whether a sliding layer of ``window`` over ``n`` tokens runs block by block on
    ``device`` (a setting: "cpu", "cuda:0", "auto", ...): on the CPU, where its blocks do at
    most BAND_MAX_WORK of the dense mask's work."""
    if window is None or str(device or "").split(":")[0] != "cpu":
        return False
    block = max(window, BAND_MIN_BLOCK)
    return -(-n // block) * block * (block + 2 * window) <= BAND_MAX_WORK * n * n


def band_mask_bytes(n: int, e: int, window: int | None = None, device: str | None = None,
                    batch: int = 1) -> int:
    """Per sliding layer: the attention bias its SDPA keeps for the backward.

    Dense band mask (GPUs, short sequences): SDPA turns the boolean [N, N] mask into an additive
    bias (last dim padded to 16 for the memory-efficient kernel), shared by the batch. Banded
    (``banded``): one [block, block + 2*window] bias per block of queries and sample, about
    N x (block + 2*window) per sample instead of N x N.
    """
    if not banded(n, window, device):
        return n * _pad16(n) * e
    block = max(window, BAND_MIN_BLOCK)
    return batch * -(-n // block) * block * _pad16(block + 2 * window) * e


def transient_bytes(d: ModelDims, n: int, e: int) -> int:
    """Per sample: the largest gradient buffers alive inside one layer's backward.

    MLP: grads of the product, silu output and up output [n, I] plus the fp32 norm gradients
    [n, H] x2; attention: grads of q, k, v [n, A] plus an fp32 dq accumulator.
    """
    mlp = 3 * n * d.intermediate_size * e + 2 * n * d.hidden_size * 4
    attn = 3 * n * d.attn_width * e + n * d.attn_width * 4
    return max(mlp, attn)


def lokr_rebuild_bytes(config: Any, d: ModelDims) -> int:
    """LoKR rebuilds each adapted weight (kron product, cast, add), and DoRA takes the norm of
    W + BA on every forward: about two weight-sized fp32 temporaries for the largest adapted
    projection."""
    if config.adapter_type not in ("lokr", "loha", "dora"):
        return 0
    largest = max(math.prod(d.proj_shape(p)) for projs in targets(config).values()
                  for p in projs)
    return 2 * largest * 4


# -- the estimate -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """Peak device memory of one training step, in MiB."""

    breakdown: Mapping[str, float] = field(hash=False)  # name -> MiB, in display order
    total_mib: float
    frames: int
    seq_len: int
    batch_size: int
    dtype: str
    adapter_params: int
    # The activation term split further (MiB), for --verbose output and tests.
    activation_terms: Mapping[str, float] = field(hash=False, default_factory=dict)

    @property
    def total_gib(self) -> float:
        return self.total_mib / GIB_MIB

    def verdict(self, free_mib: float) -> str:
        """One of "fits", "tight" (within TIGHT_MARGIN of free_mib) or "will not fit"."""
        if self.total_mib <= (1.0 - TIGHT_MARGIN) * free_mib:
            return "fits"
        if self.total_mib <= free_mib:
            return "tight"
        return "will not fit"


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).lower().strip().removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown training dtype {dtype!r}; use bf16, fp16 or fp32")
    return name


def frames_for(config: Any) -> int:
    """Latent frames per sample: the chunk if set, else the longest song (max_duration, or
    DEFAULT_DURATION_S when that is 0)."""
    seconds = config.chunk_duration or config.max_duration or DEFAULT_DURATION_S
    return int(math.ceil(float(seconds) * LATENT_RATE))


def estimate(config: Any, model_config: Any = None, *, frames: int | None = None,
             dtype: Any = None) -> Estimate:
    """Peak training memory for ``config`` on the model ``model_config`` describes.

    frames overrides the sequence length from the config; dtype ("bf16", "fp16", "fp32")
    overrides ``config.precision`` ("auto" counts as bf16).
    """
    d = ModelDims.of(model_config)
    precision = _dtype_name(dtype if dtype is not None else (config.precision or "auto"))
    e = DTYPE_BYTES[precision]
    t = int(frames) if frames is not None else frames_for(config)
    if t < 1:
        raise ValueError("frames must be at least 1")
    n = -(-t // d.patch_size)
    b = int(config.batch_size)
    cond = COND_TOKENS
    h, ac = d.hidden_size, d.audio_acoustic_hidden_dim

    shapes = adapter_tensors(config, d)
    params = sum(_numel(s) for s in shapes)

    weights = (decoder_param_count(d) + d.enc_hidden) * e  # decoder + null_condition_emb
    adapter = params * 4
    grads = params * 4
    optimizer = optimizer_bytes(config.optimizer_type, shapes)

    per_sample = sum(layer_activation_terms(config, d, n, cond, e).values())
    lokr_delta = lokr_delta_bytes(config, d, e)
    device = getattr(config, "device", None)
    mask = band_mask_bytes(n, e, d.sliding_window, device, b)
    sliding = [d.is_sliding(i) for i in range(d.num_hidden_layers)]
    dense_band = any(sliding) and not banded(n, d.sliding_window, device)

    def layer_bytes(index: int) -> int:
        return b * per_sample + lokr_delta + (mask if sliding[index] else 0)

    act: dict[str, int] = {}
    if config.gradient_checkpointing:
        # Each checkpointed layer keeps its input; one layer is recomputed at a time.
        act["stored layer inputs"] = d.num_hidden_layers * b * n * h * e
        act["one layer recomputed"] = max(layer_bytes(i) for i in range(d.num_hidden_layers))
    else:
        act["all layers"] = sum(layer_bytes(i) for i in range(d.num_hidden_layers))
    act["backward transients"] = b * transient_bytes(d, n, e) + lokr_rebuild_bytes(config, d)
    act["batch tensors"] = b * (
        t * d.in_channels * 4 + cond * d.enc_hidden * 4  # latents/context, condition (fp32)
        + 3 * t * ac * 4)  # noise, x_t, target velocity
    # cat(context, x_t) in the training dtype; the condition cast and embedded to [L, H].
    act["decoder inputs"] = b * (t * d.in_channels * e + cond * (h + d.enc_hidden) * e)
    # norm_out's fp32 input, proj_out's output, and the fp32 prediction and squared error.
    act["output + loss"] = b * (n * h * 4 + t * ac * e + 2 * t * ac * 4)
    # RoPE cos/sin [N, head_dim] and the boolean band mask [N, N] (unless the sliding layers
    # run block by block), shared by all layers.
    act["shared tables"] = 2 * n * d.head_dim * e + (n * n if dense_band else 0)
    if e < 4:  # autocast keeps a low-precision copy of every fp32 adapter weight it uses
        act["autocast adapter copies"] = params * e

    activations = sum(act.values())
    parts = {"weights": weights, "adapter": adapter, "gradients": grads,
             "optimizer": optimizer, "activations": activations}
    subtotal = sum(parts.values()) / MIB
    overhead = OVERHEAD_FIXED_MIB + OVERHEAD_FRACTION * subtotal
    breakdown = {k: v / MIB for k, v in parts.items()}
    breakdown["overhead"] = overhead
    return Estimate(breakdown=MappingProxyType(breakdown), total_mib=subtotal + overhead,
                    frames=t, seq_len=n, batch_size=b, dtype=precision, adapter_params=params,
                    activation_terms=MappingProxyType({k: v / MIB for k, v in act.items()}))


# -- profiles -----------------------------------------------------------------------------------
def pick_profile(total_mib: float) -> str:
    """The largest tier a card with ``total_mib`` of memory satisfies (PROFILE_THRESHOLDS_GIB)."""
    gib = float(total_mib) / GIB_MIB
    for tier, threshold in PROFILE_THRESHOLDS_GIB:
        if gib >= threshold:
            return tier
    return "8gb"


def profile_preset(name: str) -> str:
    """Preset name of a VRAM profile: "8gb", "vram_8gb", "8", "24gb_plus", "24GB+" ..."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "")
    key = key.removeprefix("vram_").removesuffix("_plus").removesuffix("+")
    if key.isdigit():
        key += "gb"
    if key in PROFILES:
        return PROFILES[key][0]
    presets = ", ".join(p for p, _ in PROFILES.values())
    raise ValueError(f"unknown VRAM profile {name!r}; use {PROFILE_WORDS} (or the preset "
                     f"names {presets})")


def summary_line(config: Any, model_config: Any = None, free_mib: float | None = None) -> str:
    """One line for the CLI confirmation, e.g. "estimated peak VRAM 4.9 GiB (weights 2.9, ...)
    — fits in 23.5 GiB free"."""
    est = estimate(config, model_config)
    parts = ", ".join(f"{k} {v / GIB_MIB:.1f}" for k, v in est.breakdown.items())
    line = f"estimated peak VRAM {est.total_gib:.1f} GiB ({parts})"
    if free_mib is not None:
        line += f" — {est.verdict(free_mib)} in {free_mib / GIB_MIB:.1f} GiB free"
    return line
