"""Audio samples during training (#17): schedules, the ODE and CFG, renders on the demo
checkpoint, and the audio summary the app draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sidestep.data.audio import AudioError
from sidestep.data.spectrum import describe_audio
from sidestep.engine.sampler import (SampleError, SampleRequest, cfg_combine, decoder_velocity,
                                     fallback_condition, ode_sample, render_sample,
                                     sample_event, sample_timesteps)

GOLDEN = json.loads((Path(__file__).parent / "reference" / "golden_training.json").read_text())


# -- schedules --------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", ["1.0", "2.0", "3.0"])
def test_turbo_schedule_is_the_golden(shift):
    want = GOLDEN["turbo_inference_schedule"]["SHIFT_TIMESTEPS"][shift]
    got = sample_timesteps("turbo", 8, float(shift))
    assert got.tolist() == pytest.approx(want, abs=1e-7)


@pytest.mark.parametrize("family", ["base", "sft"])
@pytest.mark.parametrize("steps,shift", [(50, 1.0), (30, 1.0), (20, 3.0), (7, 2.5)])
def test_base_schedule_is_the_golden_formula(family, steps, shift):
    # golden: t = linspace(1, 0, steps+1); if shift != 1: t = shift*t / (1 + (shift-1)*t)
    t = np.linspace(1.0, 0.0, steps + 1)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    assert t[-1] == 0.0  # the end point of the last step, not a decoder call
    got = sample_timesteps(family, steps, shift)
    assert got.shape == (steps,)
    assert got.tolist() == pytest.approx(t[:-1].tolist(), abs=1e-7)


def test_schedule_rejects_nonsense():
    with pytest.raises(SampleError):
        sample_timesteps("xl", 8, 3.0)
    with pytest.raises(SampleError):
        sample_timesteps("turbo", 0, 3.0)
    with pytest.raises(SampleError):
        sample_timesteps("base", 8, 0.0)


# -- ODE and CFG ------------------------------------------------------------------------------
def test_ode_lands_on_the_data_point_with_the_exact_velocity():
    # One data point x0: on the path x_t = t*x1 + (1-t)*x0 the velocity is (x_t - x0) / t,
    # so Euler steps stay on the path and the last step (x_t - v*t) lands on x0 exactly.
    x0 = torch.randn(1, 5, 4, dtype=torch.float64)
    x1 = torch.randn(1, 5, 4, dtype=torch.float64)
    for family, steps, shift in (("turbo", 8, 3.0), ("base", 5, 1.0)):
        out = ode_sample(lambda x, t: (x - x0) / t, x1, sample_timesteps(family, steps, shift))
        torch.testing.assert_close(out, x0)


def test_ode_steps_follow_the_schedule():
    seen = []

    def velocity(x, t):
        seen.append(t)
        return torch.ones_like(x)

    ts = sample_timesteps("turbo", 4, 3.0)
    out = ode_sample(velocity, torch.zeros(1, 2, 3), ts)
    assert seen == pytest.approx(ts.tolist())
    # steps sum to t_0 - 0 = 1: the final step goes all the way to t = 0
    torch.testing.assert_close(out, -torch.ones(1, 2, 3))


def test_cfg_combine():
    c, u = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(cfg_combine(c, u, 1.0), c)
    torch.testing.assert_close(cfg_combine(c, u, 0.0), u)
    torch.testing.assert_close(cfg_combine(c, u, 7.0), torch.tensor([15.0, -13.0]))


class _ToyDecoder(torch.nn.Module):
    """v = x + sum of the condition per sample + t: the condition's effect is easy to see."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, hidden_states, timestep, timestep_r, attention_mask,
                encoder_hidden_states, encoder_attention_mask, context_latents):
        self.calls.append((hidden_states.shape[0], encoder_hidden_states.clone()))
        assert torch.equal(timestep, timestep_r)
        assert context_latents.shape[:2] == hidden_states.shape[:2]
        shift = encoder_hidden_states.sum(dim=(1, 2)) + timestep
        return hidden_states + shift[:, None, None], None


def test_cfg_batches_cond_and_null_in_one_forward():
    dec = _ToyDecoder()
    ehs = torch.randn(1, 3, 4)
    eam = torch.ones(1, 3)
    null = torch.randn(1, 1, 4)
    ctx = torch.zeros(1, 6, 8)
    x = torch.randn(1, 6, 4)
    v = decoder_velocity(dec, null, ehs, eam, ctx, cfg=5.0, dtype=torch.float32)(x, 0.5)
    assert len(dec.calls) == 1 and dec.calls[0][0] == 2
    torch.testing.assert_close(dec.calls[0][1][1], null[0].expand(3, 4))
    cond = x + ehs.sum() + 0.5
    uncond = x + null.sum() * 3 + 0.5
    torch.testing.assert_close(v, uncond + 5.0 * (cond - uncond))

    plain = _ToyDecoder()
    v = decoder_velocity(plain, null, ehs, eam, ctx, cfg=None, dtype=torch.float32)(x, 0.5)
    assert [c[0] for c in plain.calls] == [1]
    torch.testing.assert_close(v, cond)


def test_cfg_only_for_base_and_sft():
    assert not SampleRequest(family="turbo", cfg=7.0).uses_cfg
    assert SampleRequest(family="base", cfg=7.0).uses_cfg
    assert SampleRequest(family="sft", cfg=3.0).uses_cfg
    assert not SampleRequest(family="base", cfg=1.0).uses_cfg


# -- renders on the demo checkpoint ----------------------------------------------------------
def _decoder(model_dir):
    from sidestep.model import load_acestep

    model = load_acestep(model_dir, parts=("decoder", "null_condition_emb"))
    return model.decoder, model.null_condition_emb


@pytest.fixture(scope="module")
def turbo(demo_root):
    return _decoder(demo_root / "checkpoints" / "acestep-v15-turbo")


@pytest.fixture(scope="module")
def first_song(small_tensors):
    return fallback_condition(sorted(small_tensors.glob("*.pt"))[0])


def _render(turbo, demo_root, first_song, out, **kw):
    dec, null = turbo
    req = SampleRequest(duration=2.0, steps=kw.pop("steps", 3), seed=kw.pop("seed", 7),
                        family="turbo", shift=3.0, **kw)
    return render_sample(dec, null, demo_root / "checkpoints" / "acestep-v15-turbo", req, out,
                         device="cpu", dtype=torch.float32, fallback=first_song)


def test_render_writes_exact_wav_and_is_seeded(turbo, demo_root, first_song, tmp_path):
    cpu_state = torch.get_rng_state()
    a = _render(turbo, demo_root, first_song, tmp_path / "samples" / "epoch-1.wav")
    assert torch.equal(torch.get_rng_state(), cpu_state)  # the trainer's RNG is untouched
    info = sf.info(str(a.path))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 96000)
    assert a.duration == 2.0 and a.sample_rate == 48000 and a.seconds > 0
    assert a.prompt == "" and a.cfg == 1.0 and a.steps == 3
    assert [p.name for p in a.path.parent.iterdir()] == ["epoch-1.wav"]  # no temp left over

    b = _render(turbo, demo_root, first_song, tmp_path / "again.wav")
    c = _render(turbo, demo_root, first_song, tmp_path / "other.wav", seed=8)
    wa, wb, wc = (sf.read(str(r.path))[0] for r in (a, b, c))
    assert np.abs(wa).max() > 0
    assert np.array_equal(wa, wb)
    assert not np.array_equal(wa, wc)

    event = sample_event(a, epoch=1, step=10)
    assert (event.type, event.path, event.seed, event.duration) == ("sample", str(a.path), 7, 2.0)


def test_render_restores_train_flags_of_a_peft_decoder(demo_root, first_song, tmp_path):
    from peft import LoraConfig, get_peft_model

    dec, null = _decoder(demo_root / "checkpoints" / "acestep-v15-turbo")
    model = get_peft_model(dec, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.5,
                                           target_modules=["q_proj", "v_proj"]))
    model.train()
    dec.layers[0].eval()  # a mixed state must come back as it was, not as all-train
    before = {name: m.training for name, m in model.named_modules()}
    r = _render((model, null), demo_root, first_song, tmp_path / "s.wav")
    assert r.path.is_file()
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(p.grad is None for p in model.parameters())


def test_render_with_a_prompt_uses_the_text_path_and_cfg(demo_root, first_song, tmp_path,
                                                          monkeypatch):
    import sidestep.data.preprocess as pre

    model_dir = demo_root / "checkpoints" / "acestep-v15-base"
    dec, null = _decoder(model_dir)
    req = SampleRequest(prompt="bright synth pop", lyrics="la la la", duration=1.0, steps=2,
                        seed=1, cfg=3.0, shift=1.0, family="base")
    cache: dict = {}
    state = torch.get_rng_state()
    r = render_sample(dec, null, model_dir, req, tmp_path / "p.wav", device="cpu",
                      dtype=torch.float32, cache=cache)
    assert torch.equal(torch.get_rng_state(), state)
    assert sf.info(str(r.path)).frames == 48000
    assert (r.prompt, r.lyrics, r.cfg, r.steps) == ("bright synth pop", "la la la", 3.0, 2)
    (cond,) = cache.values()
    assert cond["encoder_hidden_states"].shape[1] == first_song["encoder_hidden_states"].shape[1]

    # The next epoch reuses the encoded prompt: no text encoder is loaded again.
    def no_load(*a, **k):
        raise AssertionError("text encoder loaded again")

    monkeypatch.setattr(pre, "load_text_encoder", no_load)
    again = render_sample(dec, null, model_dir, req, tmp_path / "p2.wav", device="cpu",
                          dtype=torch.float32, cache=cache)
    assert np.array_equal(sf.read(str(r.path))[0], sf.read(str(again.path))[0])


def test_lyrics_without_a_prompt_use_the_first_songs_caption(turbo, demo_root, first_song,
                                                              tmp_path):
    assert first_song["caption"]
    r = _render(turbo, demo_root, first_song, tmp_path / "l.wav", lyrics="oh oh")
    assert (r.prompt, r.lyrics) == (first_song["caption"], "oh oh")
    assert sf.info(str(r.path)).frames == 96000


def test_render_needs_a_condition(turbo, demo_root, tmp_path):
    dec, null = turbo
    with pytest.raises(SampleError, match="prompt or a fallback"):
        render_sample(dec, null, demo_root / "checkpoints" / "acestep-v15-turbo",
                      SampleRequest(duration=1.0, steps=1), tmp_path / "x.wav", device="cpu",
                      dtype=torch.float32)
    assert not (tmp_path / "x.wav").exists()


def test_request_from_config(demo_root, small_tensors, tmp_path):
    from conftest import train_config

    cfg = train_config(demo_root, small_tensors, tmp_path / "out", sample_prompt="x",
                       sample_duration=12.0)
    req = SampleRequest.from_config(cfg)
    assert (req.prompt, req.duration, req.steps, req.shift, req.family) == \
        ("x", 12.0, 8, 3.0, "turbo")


# -- audio summary ----------------------------------------------------------------------------
def test_describe_a_rendered_sample(turbo, demo_root, first_song, tmp_path):
    r = _render(turbo, demo_root, first_song, tmp_path / "s.wav", steps=1)
    s = describe_audio(r.path, width=40)
    assert (s.duration, s.sample_rate, s.channels) == (2.0, 48000, 2)
    assert s.peak_dbfs is not None and s.peak_dbfs <= 0.0
    assert len(s.mel_db) == 24 and all(len(row) == 40 for row in s.mel_db)
    assert s.lufs is None or -120 < s.lufs < 10


def test_describe_tone_silence_and_garbage(tmp_path):
    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(str(tmp_path / "tone.wav"), np.stack([tone, tone], 1), rate)
    s = describe_audio(tmp_path / "tone.wav", width=16)
    assert s.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert s.lufs == pytest.approx(-6.0, abs=0.5)  # 1 kHz sine at -6 dBFS: -9 LUFS a channel
    low = _loudest_bands(s.mel_db)
    assert len(low) == 1 and 3 <= low.pop() <= 8  # 1 kHz: about a quarter up the mel scale
    high_tone = 0.5 * np.sin(2 * np.pi * 8000 * t)
    sf.write(str(tmp_path / "high.wav"), np.stack([high_tone, high_tone], 1), rate)
    high = _loudest_bands(describe_audio(tmp_path / "high.wav", width=16).mel_db)
    assert len(high) == 1 and high.pop() > 12

    sf.write(str(tmp_path / "silence.wav"), np.zeros((rate, 2)), rate)
    quiet = describe_audio(tmp_path / "silence.wav", width=8)
    assert quiet.lufs is None and quiet.peak_dbfs is None and quiet.silent
    assert len(quiet.mel_db) == 24 and len({v for row in quiet.mel_db for v in row}) == 1

    short = describe_audio_short(tmp_path)
    assert short.lufs is None and short.peak_dbfs is not None

    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.wav"):
        describe_audio(tmp_path / "bad.wav")
    with pytest.raises(AudioError):
        describe_audio(tmp_path / "missing.wav")


def describe_audio_short(folder):
    """A 0.1 s clip: too short for a loudness measurement, still described."""
    sf.write(str(folder / "short.wav"), np.full((4800, 1), 0.1), 48000)
    return describe_audio(folder / "short.wav", width=64)


def _loudest_bands(mel_db):
    """The row holding each column's maximum (row 0 = lowest band)."""
    return {max(range(len(mel_db)), key=lambda r: mel_db[r][c]) for c in range(len(mel_db[0]))}
