"""Our DiT decoder and condition encoder reproduce the upstream goldens (tests/reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import REFERENCE
from sidestep.model import load_acestep

TINY = REFERENCE / "tiny"
DEC_ARGS = ["hidden_states", "timestep", "timestep_r", "attention_mask", "encoder_hidden_states",
            "encoder_attention_mask", "context_latents"]
ENC_ARGS = ["text_hidden_states", "text_attention_mask", "lyric_hidden_states",
            "lyric_attention_mask", "refer_audio_acoustic_hidden_states_packed",
            "refer_audio_order_mask"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def golden():
    return load_file(str(TINY / "golden_decoder.safetensors"))


@pytest.fixture(scope="module")
def golden_enc():
    return load_file(str(TINY / "golden_encoder.safetensors"))


def _model(device):
    if device == "cuda":  # goldens were made with full fp32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return load_acestep(TINY, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["train", "meanflow", "turbo_discrete"])
def test_decoder_cases(golden, case, device):
    model = _model(device)
    model.decoder.train()
    kw = {k: golden[f"{case}.in.{k}"].to(device) for k in DEC_ARGS}
    out = model.decoder(**kw)
    assert isinstance(out, tuple)
    pred = out[0].cpu()
    expected = golden[f"{case}.out.prediction"]
    assert pred.shape == expected.shape
    assert (pred - expected).abs().max().item() < 1e-5
    loss = F.mse_loss(pred, golden[f"{case}.flow_target"])
    assert abs(loss.item() - golden[f"{case}.out.loss"].item()) < 1e-5
    per_sample = ((pred - golden[f"{case}.flow_target"]) ** 2).mean(dim=(1, 2))
    assert torch.allclose(per_sample, golden[f"{case}.out.per_sample_loss"], atol=1e-5)


def test_decoder_ignores_padding_masks(golden):
    model = _model("cpu")
    kw = {k: golden[f"train.in.{k}"] for k in DEC_ARGS}
    ref = model.decoder(**kw)[0]
    kw.update(attention_mask=None, encoder_attention_mask=None)
    assert torch.equal(model.decoder(**kw)[0], ref)
    kw.update(attention_mask=torch.ones(2, 21), encoder_attention_mask=torch.ones(2, 10))
    assert torch.equal(model.decoder(**kw)[0], ref)


def test_decoder_sliding_window_matters(golden):
    """Guards the band mask: widening the window must change the output."""
    model = _model("cpu")
    kw = {k: golden[f"train.in.{k}"] for k in DEC_ARGS}
    ref = model.decoder(**kw)[0]
    object.__setattr__(model.decoder.config, "sliding_window", 100)
    changed = model.decoder(**kw)[0]
    assert (changed - ref).abs().max().item() > 1e-2
    assert (ref - golden["train.out.prediction"]).abs().max().item() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_decoder_gradients(golden, device, checkpointing):
    grads = load_file(str(TINY / "golden_decoder_grads.safetensors"))
    model = _model(device)
    model.decoder.train()
    model.decoder.gradient_checkpointing = checkpointing
    kw = {k: golden[f"train.in.{k}"].to(device) for k in DEC_ARGS}
    loss = F.mse_loss(model.decoder(**kw)[0], golden["train.flow_target"].to(device))
    loss.backward()
    names = dict(model.decoder.named_parameters())
    assert len(grads) == len(names) == 58
    for name, param in names.items():
        expected = grads[f"grad.decoder.{name}"]
        got = param.grad.cpu()
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() <= 1e-4 * max(scale, 1e-8), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["general", "preprocess"])
def test_encoder_cases(golden_enc, case, device):
    model = _model(device).eval()
    kw = {k: golden_enc[f"{case}.in.{k}"].to(device) for k in ENC_ARGS}
    with torch.no_grad():
        ehs, eam = model.encoder(**kw)
    assert (ehs.cpu() - golden_enc[f"{case}.out.encoder_hidden_states"]).abs().max() < 1e-5
    assert eam.dtype == torch.bool
    assert torch.equal(eam.cpu(), golden_enc[f"{case}.out.encoder_attention_mask"])


def test_encoder_intermediates(golden_enc):
    model = _model("cpu").eval()
    g = golden_enc
    with torch.no_grad():
        lyr = model.encoder.lyric_encoder(g["general.in.lyric_hidden_states"],
                                          g["general.in.lyric_attention_mask"])
        timbre, mask = model.encoder.timbre_encoder(
            g["general.in.refer_audio_acoustic_hidden_states_packed"],
            g["general.in.refer_audio_order_mask"])
        text = model.encoder.text_projector(g["general.in.text_hidden_states"])
    assert (lyr - g["general.intermediate.lyric_encoder_last_hidden_state"]).abs().max() < 1e-5
    assert (timbre - g["general.intermediate.timbre_embs_unpack"]).abs().max() < 1e-5
    assert torch.equal(mask, g["general.intermediate.timbre_embs_mask"])
    assert (text - g["general.intermediate.text_projected"]).abs().max() < 1e-5


def test_fully_masked_encoder_rows_stay_finite():
    """Long lyric padding leaves rows with no allowed key in sliding layers: no NaN."""
    model = _model("cpu").eval()
    lyr = torch.randn(1, 40, 32)
    mask = torch.zeros(1, 40)
    mask[:, :4] = 1  # window 3: rows 8.. see only padding
    with torch.no_grad():
        out = model.encoder.lyric_encoder(lyr, mask)
    assert torch.isfinite(out).all()
