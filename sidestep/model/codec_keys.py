"""The audio tokenizer's and detokenizer's tensors: names and shapes from a config.

Training never runs these parts (preprocessed tensors hold their work), so the model does not
build them; but a checkpoint we write must still hold them, or ACE-Step's own code cannot load
it strictly. Their widths are the condition encoder's (which differ from the decoder's in XL).
"""

from __future__ import annotations

from sidestep.model.config import AceStepConfig

FSQ_LEVELS = (8, 8, 8, 5, 5, 5)


def _block(prefix: str, c: AceStepConfig) -> dict[str, tuple[int, ...]]:
    """One Qwen3-style layer: attention with q/k norms, then a gated MLP."""
    h, i, d = c.enc_hidden, c.enc_intermediate, c.head_dim
    q, kv = c.enc_heads * d, c.enc_kv_heads * d
    return {
        f"{prefix}.self_attn.q_proj.weight": (q, h),
        f"{prefix}.self_attn.k_proj.weight": (kv, h),
        f"{prefix}.self_attn.v_proj.weight": (kv, h),
        f"{prefix}.self_attn.o_proj.weight": (h, q),
        f"{prefix}.self_attn.q_norm.weight": (d,),
        f"{prefix}.self_attn.k_norm.weight": (d,),
        f"{prefix}.input_layernorm.weight": (h,),
        f"{prefix}.post_attention_layernorm.weight": (h,),
        f"{prefix}.mlp.gate_proj.weight": (i, h),
        f"{prefix}.mlp.up_proj.weight": (i, h),
        f"{prefix}.mlp.down_proj.weight": (h, i),
    }


def codec_shapes(c: AceStepConfig) -> dict[str, tuple[int, ...]]:
    raw = c.raw or {}
    h, a = c.enc_hidden, c.audio_acoustic_hidden_dim
    fsq = len(raw.get("fsq_input_levels") or FSQ_LEVELS)
    pooler_layers = int(raw.get("num_attention_pooler_hidden_layers") or 2)
    # The real checkpoints' detokenizer has as many layers as the pooler (2), not
    # num_audio_decoder_hidden_layers (24 in the 2B config): checked against both key lists.
    detok_layers = pooler_layers
    window = int(raw.get("pool_window_size") or 5)
    out: dict[str, tuple[int, ...]] = {
        "tokenizer.audio_acoustic_proj.weight": (h, a),
        "tokenizer.audio_acoustic_proj.bias": (h,),
        "tokenizer.attention_pooler.special_token": (1, 1, h),
        "tokenizer.attention_pooler.embed_tokens.weight": (h, h),
        "tokenizer.attention_pooler.embed_tokens.bias": (h,),
        "tokenizer.attention_pooler.norm.weight": (h,),
    }
    for n in range(pooler_layers):
        out.update(_block(f"tokenizer.attention_pooler.layers.{n}", c))
    out.update({
        "tokenizer.quantizer.project_in.weight": (fsq, h),
        "tokenizer.quantizer.project_in.bias": (fsq,),
        "tokenizer.quantizer.project_out.weight": (h, fsq),
        "tokenizer.quantizer.project_out.bias": (h,),
        "detokenizer.special_tokens": (1, window, h),
        "detokenizer.embed_tokens.weight": (h, h),
        "detokenizer.embed_tokens.bias": (h,),
        "detokenizer.norm.weight": (h,),
    })
    for n in range(detok_layers):
        out.update(_block(f"detokenizer.layers.{n}", c))
    out.update({"detokenizer.proj_out.weight": (a, h), "detokenizer.proj_out.bias": (a,)})
    return out
