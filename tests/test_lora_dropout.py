"""LoRA dropout on the CPU (sidestep.engine.dropout): the drop rate and scale of nn.Dropout,
reproducible from torch's seed, gradients through the mask, the same masks in gradient
checkpointing's recompute, and swapped into PEFT's LoRA and DoRA layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sidestep.engine.adapters import AdapterSpec, attach
from sidestep.engine.dropout import LoraDropout, scaled_mask
from sidestep.model import build_acestep, init_weights


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    mask = scaled_mask(torch.Size([1000, 1001]), p, torch.float32)  # odd size: a partial draw
    assert mask.shape == (1000, 1001)
    values = mask.unique().tolist()
    assert values == [0.0, pytest.approx(1 / (1 - p))]
    dropped = (mask == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / mask.numel()) ** 0.5 + 2 ** -16
    assert abs(mask.mean().item() - 1.0) < 0.01  # dropout keeps the expected value


def test_masks_follow_torch_seed_and_differ_between_calls():
    drop = LoraDropout(0.2).train()
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a, b = drop(x), drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), a)
    assert not torch.equal(a, b)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    drop(x)
    torch.set_rng_state(state)  # what checkpoint recompute does
    assert torch.equal(drop(x), a)


def test_identity_in_eval_and_at_zero_and_bf16():
    x = torch.randn(8, 16)
    assert LoraDropout(0.3).eval()(x) is x
    assert LoraDropout(0.0).train()(x) is x
    out = LoraDropout(0.3).train()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    kept = out != 0
    torch.testing.assert_close(out[kept].float(), (x.bfloat16()[kept] / 0.7).float(),
                               rtol=1e-2, atol=0)


def test_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(40, 30, requires_grad=True)
    out = LoraDropout(0.25).train()(x)
    out.sum().backward()
    mask = torch.where(out != 0, 1 / 0.75, 0.0)
    torch.testing.assert_close(x.grad, mask)


TINY = {"model_type": "acestep", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "sliding_window": 8, "in_channels": 24, "audio_acoustic_hidden_dim": 8,
        "patch_size": 2, "layer_types": ["sliding_attention", "full_attention"],
        "text_hidden_dim": 32, "timbre_hidden_dim": 8}


def lora_grads(kind: str, checkpointing: bool, dropout: float = 0.3):
    """One forward/backward of a tiny decoder with a LoRA (or DoRA) at this dropout."""
    torch.manual_seed(0)
    model = build_acestep(TINY, device="cpu", parts=("decoder", "null_condition_emb"))
    init_weights(model, generator=torch.Generator().manual_seed(0))
    model.reset_nonpersistent_buffers("cpu")
    spec = AdapterSpec(kind=kind, names=("layers.0.self_attn.q_proj", "layers.1.self_attn.v_proj",
                                         "layers.1.cross_attn.k_proj"),
                       rank=4, alpha=8, dropout=dropout)
    adapted = attach(model.decoder, model.null_condition_emb, spec)
    for p in adapted.adapter_parameters():  # LoRA B starts at zero: give the path a gradient
        nn.init.normal_(p, std=0.1) if p.ndim == 2 else None
    dec = adapted.train()
    model.decoder.gradient_checkpointing = checkpointing
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(5)
    out, _ = dec(hidden_states=torch.randn(2, 40, 8, generator=g),
                 timestep=torch.rand(2, generator=g),
                 encoder_hidden_states=torch.randn(2, 7, 64, generator=g),
                 context_latents=torch.randn(2, 40, 16, generator=g))
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    drops = [m for m in model.decoder.modules() if isinstance(m, nn.Dropout)]
    return {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}, drops


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_swapped_into_peft_and_recompute_uses_the_same_masks(kind):
    plain, drops = lora_grads(kind, checkpointing=False)
    assert len(drops) == 3 and all(type(d) is LoraDropout and d.p == 0.3 for d in drops)
    recomputed, _ = lora_grads(kind, checkpointing=True)
    assert plain.keys() == recomputed.keys() and plain
    for name, want in plain.items():  # a different mask in the recompute would show here
        torch.testing.assert_close(recomputed[name], want, rtol=1e-5, atol=1e-6)
    no_dropout, _ = lora_grads(kind, checkpointing=False, dropout=0.0)
    assert any(not torch.allclose(no_dropout[n], plain[n]) for n in plain)


def test_no_dropout_leaves_peft_identity():
    _, drops = lora_grads("lora", checkpointing=False, dropout=0.0)
    assert drops == []
