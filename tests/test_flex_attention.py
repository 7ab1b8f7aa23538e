"""FlexAttention for the sliding-window layers (the CUDA path) against the dense band mask.

On the CPU FlexAttention runs eagerly and forward only (PyTorch has no CPU backward for it), so
the CPU tests compare outputs; the ``gpu`` tests run the compiled kernels in bf16 with
gradients."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch.nn.attention.flex_attention")

from sidestep.model import build_acestep, init_weights  # noqa: E402
from sidestep.model import decoder as D  # noqa: E402
from sidestep.model import layers as L  # noqa: E402
from test_banded_attention import TINY, dense_reference, one_thread  # noqa: E402, F401

# Uncompiled flex warns that it materialises the scores: that is what the CPU tests want.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

needs_cuda_flex = pytest.mark.skipif(not torch.cuda.is_available() or not L.flex_available(),
                                     reason="needs CUDA and FlexAttention with Triton")




def qkv(batch, heads, kv_heads, n, d, seed, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, h, n, d, generator=g).to(device, dtype)
            for h in (heads, kv_heads, kv_heads)]


@pytest.mark.parametrize("batch, heads, kv_heads, n, window", [
    (2, 8, 4, 200, 24),  # GQA, n not a multiple of flex's 128-token tiles, tiles skipped
    (2, 8, 4, 20, 32),   # n smaller than the window: every key
    (1, 4, 4, 130, 16),  # no GQA (enable_gqa with equal heads), a 2-token last tile
])
def test_flex_matches_dense_mask(batch, heads, kv_heads, n, window):
    q, k, v = qkv(batch, heads, kv_heads, n, 16, seed=n + window)
    got = L.flex_band_attention(q, k, v, window, compiled=False)
    torch.testing.assert_close(got, dense_reference(q, k, v, window), atol=1e-5, rtol=1e-5)


def test_block_mask_is_cached_and_skips_tiles():
    a = L.flex_block_mask(640, 128, torch.device("cpu"))
    assert L.flex_block_mask(640, 128, torch.device("cpu")) is a
    assert L.flex_block_mask(640, 64, torch.device("cpu")) is not a
    # 5 x 5 tiles of 128: the diagonal and its neighbours (13) are computed, the rest skipped
    assert a.sparsity() == pytest.approx(100 * 12 / 25)


def test_never_compiled_on_cpu():
    q, k, v = qkv(1, 2, 1, 8, 16, seed=0)
    with pytest.raises(ValueError):
        L.flex_band_attention(q, k, v, 4, compiled=True)
    assert L.flex_band_attention(q, k, v, 4).shape == q.shape  # default: eager on the CPU


def test_sliding_path_choice(monkeypatch):
    monkeypatch.setattr(L, "SLIDING_PATH", "auto")
    monkeypatch.setattr(L, "flex_available", lambda: True)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert L.sliding_path(375, 128, "cuda", dtype) == "flex"
        assert L.sliding_path(3000, 128, torch.device("cuda:0"), dtype) == "flex"
    assert L.sliding_path(375, 128, "cuda", torch.float64) == "dense"
    for n in (25, 375, 512, 1500):  # the CPU as before: banded where use_banded says so
        want = "banded" if L.use_banded(n, 128, "cpu") else "dense"
        assert L.sliding_path(n, 128, "cpu", torch.float32) == want
    monkeypatch.setattr(L, "flex_available", lambda: False)
    assert L.sliding_path(375, 128, "cuda", torch.bfloat16) == "dense"
    for forced in ("dense", "banded", "flex"):
        monkeypatch.setattr(L, "SLIDING_PATH", forced)
        assert L.sliding_path(375, 128, "cuda", torch.bfloat16) == forced
        # (flex has no CPU backward: training there takes the band path)
        assert L.sliding_path(1500, 128, "cpu", torch.float32) == \
            ("banded" if forced == "flex" else forced)
        with torch.no_grad():
            assert L.sliding_path(1500, 128, "cpu", torch.float32) == forced


def test_path_from_env():
    assert L.path_from_env({}) == "auto"
    assert L.path_from_env({"SIDESTEP_SLIDING_PATH": " Dense "}) == "dense"
    for value in ("banded", "flex", "auto"):
        assert L.path_from_env({"SIDESTEP_SLIDING_PATH": value}) == value
    assert L.path_from_env({"SIDESTEP_SLIDING_PATH": "fast"}) == "auto"  # warns


def decoder_forward(path, monkeypatch, device="cpu", dtype=torch.float32, grad=False,
                    batch=2, frames=131):
    """The tiny decoder's output (and parameter gradients with ``grad``) on one path."""
    monkeypatch.setattr(L, "SLIDING_PATH", path)
    torch.manual_seed(0)
    model = build_acestep(TINY, device="cpu", parts=("decoder",))
    init_weights(model, generator=torch.Generator().manual_seed(0))
    model.reset_nonpersistent_buffers("cpu")
    dec = model.decoder.to(device, dtype).train()
    g = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    kw = dict(hidden_states=r(batch, frames, 8), encoder_hidden_states=r(batch, 7, 64),
              context_latents=r(batch, frames, 16),
              timestep=torch.rand(batch, generator=g).to(device))
    weights = r(batch, frames, 8)
    if not grad:
        with torch.no_grad():
            return dec(**kw)[0], None
    out, _ = dec(**kw)
    (out.float() * weights.float()).sum().backward()
    return out.detach(), {n: p.grad for n, p in dec.named_parameters()}


def test_decoder_flex_matches_dense(monkeypatch):
    """Forward only: FlexAttention has no CPU backward (the gpu test below covers gradients)."""
    want, _ = decoder_forward("dense", monkeypatch)
    calls = []
    real = L.flex_band_attention
    monkeypatch.setattr(L, "flex_band_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(D, "band_mask", lambda *a: pytest.fail("flex built an N x N mask"))
    got, _ = decoder_forward("flex", monkeypatch)
    assert calls == [1]  # the one sliding layer of TINY, 66 tokens, window 8
    assert got.shape == (2, 131, 8)  # the padded patch cropped back
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def max_error(got, want):
    return float((got.float() - want.float()).abs().max())


@pytest.mark.gpu
@needs_cuda_flex
def test_compiled_flex_matches_dense_on_cuda_bf16():
    """The compiled kernel in bf16, forward and backward, 16/8 heads of 128 (the 2B model's),
    700 tokens (not a multiple of 128), window 128. bf16 rounds differently in each kernel, so
    both are measured against fp32 dense attention on the same inputs: flex may be off by at
    most about what the dense bf16 path is."""
    q, k, v = qkv(2, 16, 8, 700, 128, seed=0, device="cuda", dtype=torch.bfloat16)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q)

    def run(fn, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad_out.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    exact = run(lambda q, k, v: dense_reference(q, k, v, 128), torch.float32)
    dense = run(lambda q, k, v: dense_reference(q, k, v, 128), torch.bfloat16)
    flex = run(lambda q, k, v: L.flex_band_attention(q, k, v, 128), torch.bfloat16)
    assert L._compiled_flex is not None  # the default on CUDA is the compiled kernel
    for name, f, d, e in zip(("out", "dq", "dk", "dv"), flex, dense, exact):
        assert f.dtype == torch.bfloat16
        assert max_error(f, e) <= 2 * max_error(d, e) + 1e-3, name


@pytest.mark.gpu
@needs_cuda_flex
def test_decoder_auto_uses_flex_on_cuda_bf16(monkeypatch):
    """Auto picks flex on CUDA in bf16; the decoder's outputs and gradients then match the dense
    mask's to bf16 precision."""
    want, want_grads = decoder_forward("dense", monkeypatch, "cuda", torch.bfloat16, grad=True)
    calls = []
    real = L.flex_band_attention
    monkeypatch.setattr(L, "flex_band_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(D, "band_mask", lambda *a: pytest.fail("flex built an N x N mask"))
    got, got_grads = decoder_forward("auto", monkeypatch, "cuda", torch.bfloat16, grad=True)
    assert calls == [1]
    assert max_error(got, want) <= 3e-2 * float(want.abs().max())
    for name, w in want_grads.items():
        assert max_error(got_grads[name], w) <= 5e-2 * max(float(w.abs().max()), 1e-3), name
