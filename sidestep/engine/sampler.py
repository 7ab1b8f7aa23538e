"""Audio samples during training (#17): render a clip with the adapter as it is now.

The trainer calls :func:`render_sample` after an epoch. It draws noise from the sample seed,
integrates the flow ODE with the decoder (t = 1 is noise, t = 0 is data; see
``golden_training.json``), decodes the latents with the checkpoint's VAE and writes a 48 kHz
stereo WAV atomically. The condition is either a prompt (text encoder and condition encoder are
loaded for it, then freed; a cache keeps the result for later epochs) or the first training
song's stored condition, which needs no extra model at all.

Training must not notice a render: it runs under ``no_grad`` (not ``inference_mode``, whose
tensors the decoder could not train with afterwards), puts every module's train/eval flag back
and leaves the global CPU and CUDA RNG states as they were, so a resumed run stays bit-exact.
"""

from __future__ import annotations

import contextlib
import gc
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from sidestep.engine.objective import shifted_schedule

FAMILIES = ("turbo", "base", "sft")


class SampleError(ValueError):
    """A sample that cannot be rendered as asked; the message says why."""


@dataclass(frozen=True)
class SampleRequest:
    prompt: str | None = None      # None/"": the fallback (first training song's) condition
    lyrics: str | None = None      # None/"": instrumental
    duration: float = 30.0         # seconds
    steps: int = 8
    seed: int = 42
    cfg: float = 7.0               # guidance scale, base/sft only
    shift: float = 3.0
    family: str = "turbo"

    @classmethod
    def from_config(cls, config, family: str | None = None) -> "SampleRequest":
        """The request a TrainingConfig's ``sample_*`` settings describe."""
        return cls(prompt=config.sample_prompt, lyrics=config.sample_lyrics,
                   duration=float(config.sample_duration), steps=int(config.sample_steps),
                   seed=int(config.sample_seed), cfg=float(config.sample_cfg),
                   shift=float(config.shift),
                   family=family or getattr(config, "model_family", None) or "turbo")

    @property
    def uses_cfg(self) -> bool:
        """Turbo is distilled without guidance; a scale of 1 is the conditional model alone."""
        return self.family != "turbo" and self.cfg != 1.0


@dataclass(frozen=True)
class SampleResult:
    path: Path
    duration: float                # seconds written (exactly the request's)
    sample_rate: int
    seconds: float                 # wall time of the whole render, model loads included
    prompt: str = ""               # the caption encoded; "" when the stored condition was used
    lyrics: str = ""
    seed: int = 0
    steps: int = 0
    cfg: float = 1.0               # 1.0 where no guidance was applied (turbo)

    def event_fields(self) -> dict:
        """Keyword arguments for ``events.SampleWritten`` (add epoch and step)."""
        return {"path": str(self.path), "prompt": self.prompt, "lyrics": self.lyrics,
                "seed": self.seed, "duration": self.duration, "sample_rate": self.sample_rate,
                "steps": self.steps, "cfg": self.cfg, "seconds": self.seconds}


# -- schedule and ODE -------------------------------------------------------------------------
def sample_timesteps(family: str, steps: int, shift: float) -> torch.Tensor:
    """The ``steps`` times at which the decoder is evaluated, from 1 down (float32).

    Turbo: s = linspace(1, 0, n+1)[:-1], t = shift*s / (1 + (shift-1)*s). Base/sft: upstream
    builds t = linspace(1, 0, n+1), shifted the same way when shift != 1, and steps from each t
    to the next; the final 0 is only the end point of the last step (x0 = x_t - v*t_{n-1}), so
    it is left out here too and :func:`ode_sample` ends every schedule at 0. The two families
    thus share one formula; they differ in their default steps, shift and CFG.
    """
    if family not in FAMILIES:
        raise SampleError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    if steps < 1:
        raise SampleError(f"sample steps must be at least 1, got {steps}")
    if not shift > 0:
        raise SampleError(f"shift must be positive, got {shift}")
    return shifted_schedule(int(steps), float(shift))


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_uncond + scale * (v_cond - v_uncond)."""
    return v_uncond + scale * (v_cond - v_uncond)


Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def ode_sample(velocity: Velocity, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Euler steps of the flow ODE from x_1 = noise: x_{t_{i+1}} = x_t - v * (t_i - t_{i+1}),
    the last step landing on t = 0 (x0 = x_t - v * t_i)."""
    ts = [float(t) for t in timesteps]
    x = noise
    for i, t in enumerate(ts):
        t_next = ts[i + 1] if i + 1 < len(ts) else 0.0
        x = x - velocity(x, t) * (t - t_next)
    return x


def decoder_velocity(decoder, null_condition_emb: torch.Tensor | None, ehs: torch.Tensor,
                     eam: torch.Tensor, context: torch.Tensor, *, cfg: float | None,
                     dtype: torch.dtype) -> Velocity:
    """v(x_t, t) from the decoder, called as training calls it (r = t). With ``cfg`` the
    conditional and unconditional (null embedding in place of the condition, as CFG dropout
    trains it) predictions share one batch-of-two forward."""
    device = context.device
    frames = context.shape[1]
    if cfg is not None:
        if null_condition_emb is None:
            raise SampleError("classifier-free guidance needs the model's null_condition_emb")
        null = null_condition_emb.detach().to(device, ehs.dtype).expand_as(ehs)
        ehs, eam, context = torch.cat([ehs, null]), torch.cat([eam, eam]), context.repeat(2, 1, 1)
    mask = torch.ones(context.shape[0], frames, device=device, dtype=dtype)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        xin = x.to(dtype)
        if cfg is not None:
            xin = xin.repeat(2, 1, 1)
        tt = torch.full((xin.shape[0],), t, device=device, dtype=torch.float32)
        out = decoder(hidden_states=xin, timestep=tt, timestep_r=tt, attention_mask=mask,
                      encoder_hidden_states=ehs, encoder_attention_mask=eam,
                      context_latents=context)[0].float()
        if cfg is None:
            return out
        v_cond, v_uncond = out.chunk(2)
        return cfg_combine(v_cond, v_uncond, cfg)

    return velocity


# -- conditions -------------------------------------------------------------------------------
def fallback_condition(path: Path | str) -> dict:
    """The stored condition of one preprocessed ``.pt`` file (the first training song's):
    encoder_hidden_states [L, H], encoder_attention_mask [L], context_latents [T, 2C] and its
    caption. Rendering with it loads no text encoder."""
    from sidestep.data.tensors import load_record

    data = load_record(Path(path))
    missing = [k for k in ("encoder_hidden_states", "encoder_attention_mask") if k not in data]
    if missing:
        raise SampleError(f"{path}: missing {', '.join(missing)}; not a preprocessed file")
    meta = data.get("metadata")
    out = {"encoder_hidden_states": data["encoder_hidden_states"],
           "encoder_attention_mask": data["encoder_attention_mask"],
           "caption": str(meta.get("caption", "")) if isinstance(meta, dict) else ""}
    if torch.is_tensor(data.get("context_latents")):
        out["context_latents"] = data["context_latents"]
    return out


def prompt_condition(checkpoint_root: Path | str, model_dir: Path | str, prompt: str,
                     lyrics: str | None, duration: float, *, device, dtype) -> dict:
    """Encode a caption (and lyrics) exactly as preprocessing encodes a song: the text encoder
    runs first and is freed, then the condition encoder; neither outlives this call."""
    from sidestep.data.dataset_json import Sample
    from sidestep.data.preprocess import (encode_condition, encode_text, load_text_encoder,
                                          text_prompt)
    from sidestep.model import load_acestep
    from sidestep.model.checkpoints import text_encoder_dir

    song = Sample(id="sample", audio_path="", filename="", caption=prompt,
                  lyrics=lyrics or "", duration=float(duration))
    tokenizer, text_encoder = load_text_encoder(text_encoder_dir(checkpoint_root), device, dtype)
    try:
        # lyrics_text(): empty lyrics become "[Instrumental]", as for an instrumental song
        texts = encode_text(tokenizer, text_encoder, text_prompt(song, prompt),
                            song.lyrics_text())
    finally:
        del tokenizer, text_encoder
        _release(device)
    model = load_acestep(model_dir, device=device, dtype=dtype, parts=("encoder",))
    try:
        ehs, eam = encode_condition(model.encoder.eval(), model.config.timbre_hidden_dim, *texts,
                                    device, dtype)
    finally:
        del model
        _release(device)
    return {"encoder_hidden_states": ehs, "encoder_attention_mask": eam, "caption": prompt}


def sample_context(model_dir: Path | str, frames: int, fallback: dict | None = None):
    """[1, T, 2C] text2music context: the silence latent plus a chunk mask of ones, as
    preprocessing builds it (from the fallback's own context if the model has no silence)."""
    from sidestep.data.preprocess import context_latents
    from sidestep.model.checkpoints import SILENCE_LATENT, load_silence_latent

    if not (Path(model_dir) / SILENCE_LATENT).is_file() and fallback is not None \
            and torch.is_tensor(fallback.get("context_latents")):
        ctx = fallback["context_latents"].float()
        silence = ctx[None, :, : ctx.shape[1] // 2]
    else:
        silence = load_silence_latent(model_dir)
    return context_latents(silence, frames)[None]


# -- VAE --------------------------------------------------------------------------------------
def vae_decode(vae, latents: torch.Tensor, tile_seconds: float) -> torch.Tensor:
    """[1, T, 64] latents -> [2, samples] float32 audio on the CPU. The VAE wants channels
    first ([B, 64, T], the inverse of preprocessing's transpose); long clips are decoded in
    overlapping tiles, so memory depends on the tile, not the clip."""
    from sidestep.data.audio import LATENT_RATE
    from sidestep.data.preprocess import TILE_OVERLAP_FRAMES

    vae.use_tiling = True
    vae.tile_latent_min_length = max(int(tile_seconds * LATENT_RATE), 4 * TILE_OVERLAP_FRAMES)
    vae.tile_latent_overlap = TILE_OVERLAP_FRAMES
    z = latents.transpose(1, 2).to(device=vae.device, dtype=vae.dtype)
    with torch.no_grad():
        audio = vae.decode(z).sample
    return audio[0].float().cpu()


def wav_bytes(audio: torch.Tensor, rate: int) -> bytes:
    """[channels, samples] -> 16-bit PCM WAV bytes, clipped to full scale (never wrapped)."""
    import numpy as np
    import soundfile as sf

    arr = torch.nan_to_num(audio.float(), nan=0.0).clamp(-1.0, 1.0).numpy()
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(arr.T), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def fit_length(audio: torch.Tensor, samples: int) -> torch.Tensor:
    """Trim, or pad with silence, to exactly ``samples``."""
    if audio.shape[-1] >= samples:
        return audio[..., :samples]
    return torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))


# -- the render -------------------------------------------------------------------------------
def render_sample(decoder, null_condition_emb: torch.Tensor | None, model_dir: Path | str,
                  request: SampleRequest, out_path: Path | str, *, device, dtype: torch.dtype,
                  fallback: dict | None = None, checkpoint_root: Path | str | None = None,
                  cache: dict | None = None) -> SampleResult:
    """Render ``request`` with ``decoder`` (adapter attached, any wrapper that takes the
    decoder's keyword arguments) and write it to ``out_path``.

    ``model_dir`` is the DiT folder (silence latent, condition encoder); the VAE and text
    encoder come from ``checkpoint_root`` (default: its parent). ``fallback`` is
    :func:`fallback_condition`'s dict, used when the request has no prompt; lyrics without a
    prompt are sung over the fallback song's caption. ``cache`` (a dict the caller keeps)
    holds an encoded prompt, so later epochs load no text encoder.
    """
    from sidestep.config.atomic import write_bytes
    from sidestep.data.audio import LATENT_RATE, SAMPLE_RATE
    from sidestep.data.preprocess import CPU_TILE_SECONDS, TILE_SECONDS, load_vae
    from sidestep.model.checkpoints import vae_dir

    start = time.monotonic()
    device = torch.device(device)
    if not request.duration > 0:
        raise SampleError(f"sample duration must be positive, got {request.duration}")
    timesteps = sample_timesteps(request.family, request.steps, request.shift)
    model_dir = Path(model_dir)
    root = Path(checkpoint_root) if checkpoint_root is not None else model_dir.parent
    vae_path = vae_dir(root)  # a missing VAE fails now, not after the sampling steps
    frames = max(1, round(request.duration * LATENT_RATE))
    samples = round(request.duration * SAMPLE_RATE)

    prompt = (request.prompt or "").strip()
    lyrics = (request.lyrics or "").strip()
    if not prompt and lyrics and fallback and fallback.get("caption"):
        prompt = str(fallback["caption"])
    if not prompt and fallback is None:
        raise SampleError("a sample needs a prompt or a fallback condition (the first "
                          "training song's tensors)")

    with _rng_kept(device), torch.no_grad():
        if prompt:
            key = (prompt, lyrics, float(request.duration), str(model_dir))
            cond = cache.get(key) if cache is not None else None
            if cond is None:
                cond = prompt_condition(root, model_dir, prompt, lyrics, request.duration,
                                        device=device, dtype=dtype)
                if cache is not None:
                    cache[key] = cond
        else:
            cond = fallback
            lyrics = ""  # the stored condition has the song's own lyrics
        ehs = _batched(cond["encoder_hidden_states"], 2).to(device, dtype)
        eam = _batched(cond["encoder_attention_mask"], 1).to(device)
        context = sample_context(model_dir, frames, fallback).to(device, dtype)
        latent_dim = context.shape[-1] // 2

        # Noise from the sample's own generator on the CPU: the same on every device and
        # the global RNG is not touched.
        gen = torch.Generator(device="cpu").manual_seed(int(request.seed))
        noise = torch.randn(1, frames, latent_dim, generator=gen).to(device)
        with _eval_mode(decoder):
            velocity = decoder_velocity(decoder, null_condition_emb, ehs, eam, context,
                                        cfg=request.cfg if request.uses_cfg else None,
                                        dtype=dtype)
            latents = ode_sample(velocity, noise, timesteps)
        del ehs, eam, context, noise, velocity

        with warnings.catch_warnings():  # diffusers' weight_norm deprecation, every render
            warnings.simplefilter("ignore", FutureWarning)
            vae = load_vae(vae_path, device, dtype)
        try:
            tile = CPU_TILE_SECONDS if device.type == "cpu" else TILE_SECONDS
            audio = vae_decode(vae, latents, tile)
        finally:
            del vae
            _release(device)
    audio = fit_length(audio, samples)
    out_path = Path(out_path)
    write_bytes(out_path, wav_bytes(audio, SAMPLE_RATE))
    return SampleResult(path=out_path, duration=samples / SAMPLE_RATE, sample_rate=SAMPLE_RATE,
                        seconds=time.monotonic() - start, prompt=prompt, lyrics=lyrics,
                        seed=int(request.seed), steps=int(request.steps),
                        cfg=float(request.cfg) if request.uses_cfg else 1.0)


def sample_event(result: SampleResult, epoch: int, step: int):
    """The ``SampleWritten`` event for a finished render."""
    from sidestep.engine.events import SampleWritten

    return SampleWritten(epoch=epoch, step=step, **result.event_fields())


# -- helpers ----------------------------------------------------------------------------------
def _batched(t: torch.Tensor, dims: int) -> torch.Tensor:
    """A song's [L, H] states or [L] mask, with a batch of one in front if it has none."""
    return t[None] if t.dim() == dims else t


@contextlib.contextmanager
def _eval_mode(module) -> Iterator[None]:
    """eval() for the render, then every submodule's own train/eval flag back."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _rng_kept(device: torch.device) -> Iterator[None]:
    """Whatever a model load or decode might draw, the global RNG comes back as it was."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _release(device: torch.device | str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
