"""The banded (block-by-block) sliding-window attention against the dense band mask: same outputs
and gradients, in the layer and through the whole decoder, and the automatic choice of path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sidestep.config import vram
from sidestep.model import build_acestep, init_weights
from sidestep.model import layers as L


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: OpenMP workers only add start-up and, on a shared box, waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dense_reference(q, k, v, window):
    k, v = L.repeat_kv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v,
                                          attn_mask=L.band_mask(q.shape[2], window, q.device))


def assert_grads_close(got, want, rel=1e-4):
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= rel * w.abs().max(), (g - w).abs().max()


def outputs_and_grads(fn, q, k, v, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    (out * grad_out).sum().backward()
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("batch, heads, kv_heads, n, window, block", [
    (1, 8, 4, 300, 32, 64),   # GQA, n not a multiple of the block, many interior blocks
    (2, 4, 4, 257, 16, 48),   # batch > 1, no GQA, a 17-row last block
    (2, 4, 2, 20, 32, None),  # n smaller than the window: one block, every key
    (1, 2, 1, 128, 64, 64),   # n a multiple of the block, block == window
    (1, 4, 2, 96, 0, 32),     # window 0: each query sees only itself
])
def test_banded_matches_dense_mask(batch, heads, kv_heads, n, window, block):
    g = torch.Generator().manual_seed(n + window)
    q = torch.randn(batch, heads, n, 16, generator=g)
    k = torch.randn(batch, kv_heads, n, 16, generator=g)
    v = torch.randn(batch, kv_heads, n, 16, generator=g)
    grad_out = torch.randn(batch, heads, n, 16, generator=g)
    want, want_grads = outputs_and_grads(lambda q, k, v: dense_reference(q, k, v, window),
                                         q, k, v, grad_out)
    got, got_grads = outputs_and_grads(
        lambda q, k, v: L.banded_attention(q, k, v, window, block), q, k, v, grad_out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert_grads_close(got_grads, want_grads)


def test_banded_without_native_gqa_matches(monkeypatch):
    """The path devices without native GQA take (k/v repeated once), exercised on the CPU."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, h, 200, 16, generator=g) for h in (4, 2, 2))
    grad_out = torch.randn(1, 4, 200, 16, generator=g)
    want, want_grads = outputs_and_grads(lambda q, k, v: dense_reference(q, k, v, 24),
                                         q, k, v, grad_out)
    repeats = []
    real = L.repeat_kv
    monkeypatch.setattr(L, "native_gqa", lambda device: False)
    monkeypatch.setattr(L, "repeat_kv", lambda *a: repeats.append(1) or real(*a))
    got, got_grads = outputs_and_grads(lambda q, k, v: L.banded_attention(q, k, v, 24, 64),
                                       q, k, v, grad_out)
    assert repeats == [1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert_grads_close(got_grads, want_grads)


# A small decoder with the real patch size: window 8 and 130 frames (odd: padded to 132, 66
# patches, cropped back) give 66 tokens, in blocks of 16 when forced below.
TINY = {"model_type": "acestep", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "sliding_window": 8, "in_channels": 24, "audio_acoustic_hidden_dim": 8,
        "patch_size": 2, "layer_types": ["sliding_attention", "full_attention"],
        "text_hidden_dim": 32, "timbre_hidden_dim": 8}


def decoder_step(path: str, monkeypatch, checkpointing: bool = False, batch: int = 2,
                 frames: int = 131):
    monkeypatch.setattr(L, "SLIDING_PATH", path)
    monkeypatch.setattr(vram, "BAND_MIN_BLOCK", 16)
    torch.manual_seed(0)
    model = build_acestep(TINY, device="cpu", parts=("decoder",))
    init_weights(model, generator=torch.Generator().manual_seed(0))
    model.reset_nonpersistent_buffers("cpu")
    dec = model.decoder.train()
    dec.gradient_checkpointing = checkpointing
    g = torch.Generator().manual_seed(1)
    out, _ = dec(hidden_states=torch.randn(batch, frames, 8, generator=g),
                 timestep=torch.rand(batch, generator=g),
                 encoder_hidden_states=torch.randn(batch, 7, 64, generator=g),
                 context_latents=torch.randn(batch, frames, 16, generator=g))
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return out.detach(), {n: p.grad for n, p in dec.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_decoder_banded_matches_dense(monkeypatch, checkpointing):
    calls = []
    real = L.banded_attention
    monkeypatch.setattr(L, "banded_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    want, want_grads = decoder_step("dense", monkeypatch)
    assert not calls
    got, got_grads = decoder_step("banded", monkeypatch, checkpointing)
    assert calls  # the banded path really ran (66 tokens, blocks of 16)
    assert got.shape == (2, 131, 8)  # the padded patch cropped back
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for name, w in want_grads.items():
        g = got_grads[name]
        assert (g - w).abs().max() <= 1e-4 * max(w.abs().max(), 1e-6), name


def test_auto_choice(monkeypatch):
    monkeypatch.setattr(L, "SLIDING_PATH", "auto")
    # window 128 -> blocks of 128 x 384 keys: banded where that is at most 3/4 of N x N
    assert not L.use_banded(375, 128, "cpu")  # T = 750 latent frames: 1.05 of the work
    assert not L.use_banded(460, 128, "cpu")
    assert L.use_banded(512, 128, "cpu")
    assert L.use_banded(1500, 128, torch.device("cpu"))  # T = 3000
    assert not L.use_banded(25, 16, "cpu")  # the demo model: small windows use blocks of 128
    assert L.use_banded(400, 16, "cpu")
    assert not L.use_banded(1500, 128, "cuda")  # the dense mask stays on CUDA for now
    monkeypatch.setattr(L, "SLIDING_PATH", "banded")
    assert L.use_banded(10, 128, "cuda")
    monkeypatch.setattr(L, "SLIDING_PATH", "dense")
    assert not L.use_banded(1500, 128, "cpu")


def test_banded_layer_saves_what_the_estimate_says():
    """What one DiT layer keeps for the backward on the banded path: less than the dense path,
    and no more than the estimate counts for it (the dense path's terms with the banded
    masks in place of the N x N one)."""
    from sidestep.model.config import AceStepConfig
    from sidestep.model.decoder import DiTLayer

    config = AceStepConfig.from_dict(dict(TINY, sliding_window=16))
    n, cond = 1000, 7  # 8 blocks of 128
    torch.manual_seed(0)
    layer = DiTLayer(config).train()
    for p in layer.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, n, 64, requires_grad=True)
    mod = torch.randn(1, 6, 64)
    cond_x = torch.randn(1, cond, 64)
    rope = build_acestep(config, device="cpu", parts=("decoder",)).decoder.rotary_emb(
        n, x.device, x.dtype)

    def saved_bytes(**kw) -> int:
        saved: dict[int, int] = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x, mod, cond_x, rope, **kw)
        for t in (x, mod, cond_x, *rope, *layer.parameters(), *kw.values()):
            if isinstance(t, torch.Tensor):
                saved.pop(t.untyped_storage().data_ptr(), None)
        return sum(saved.values())

    dense = saved_bytes(mask=L.band_mask(n, 16, x.device))
    banded = saved_bytes(window=16)
    counted = dense - vram.band_mask_bytes(n, 4) + vram.band_mask_bytes(n, 4, 16, "cpu")
    assert 0.85 * counted <= banded <= counted < dense


def test_the_estimate_counts_the_per_block_mask():
    assert not vram.banded(1500, 128, "auto")  # unresolved: assume a GPU
    dense = vram.band_mask_bytes(1500, 4)
    assert dense == vram.band_mask_bytes(1500, 4, 128, "cuda:0") == 1500 * 1504 * 4
    # 12 blocks of 128 queries x 384 keys, per sample
    assert vram.band_mask_bytes(1500, 4, 128, "cpu") == 12 * 128 * 384 * 4 < dense / 2
    assert vram.band_mask_bytes(1500, 4, 128, "cpu", batch=3) == 3 * 12 * 128 * 384 * 4
