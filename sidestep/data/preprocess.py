"""Audio -> training tensors, in the format ACE-Step's own dataset builder writes.

Each song becomes ``<id>.pt`` holding::

    target_latents          [T, 64]   VAE latents (25 frames per second of 48 kHz audio)
    attention_mask          [T]       ones
    encoder_hidden_states   [L, H]    condition encoder output (lyrics | timbre | text, packed)
    encoder_attention_mask  [L]       bool
    context_latents         [T, 128]  silence latent frames + chunk mask of ones
    metadata                {...}     caption, lyrics, bpm, key, ...

plus ``manifest.json``. Two passes keep peak memory low: the VAE and the text encoder run first
(their outputs go to temporary files), then they are freed and the condition encoder runs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sidestep.data.dataset_json import Sample, genre_indices

DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
TEXT_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 512
_PASS1_DIR = ".sidestep-pass1"


class PreprocessError(ValueError):
    pass


def metas_text(sample: Sample) -> str:
    def na(v):
        return v if v not in (None, "") else "N/A"
    return (f"- bpm: {na(sample.bpm)}\n- timesignature: {na(sample.timesignature)}\n"
            f"- keyscale: {na(sample.keyscale)}\n- duration: {sample.duration} seconds\n")


def text_prompt(sample: Sample, caption: str) -> str:
    """The prompt the text encoder sees (ACE-Step's SFT generation template)."""
    return (f"# Instruction\n{DIT_INSTRUCTION}\n\n# Caption\n{caption}\n\n"
            f"# Metas\n{metas_text(sample)}<|endoftext|>\n")


@dataclass
class PreprocessResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    manifest: Path | None = None


Progress = Callable[[str, int, int, str], None]  # (phase, done, total, message)


def load_vae(path: Path, device, dtype):
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(str(path), local_files_only=True,
                                             torch_dtype=dtype)
    return vae.to(device=device).eval()


def load_text_encoder(path: Path, device, dtype):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return tokenizer, model.to(device).eval()


def vae_encode(vae, audio, generator=None):
    """[2, samples] -> [T, 64] latents (a sample of the posterior, as upstream does)."""
    import torch

    with torch.no_grad():
        dist = vae.encode(audio[None].to(device=vae.device, dtype=vae.dtype)).latent_dist
        latents = dist.sample(generator=generator)
    return latents[0].transpose(0, 1).float().cpu()


def encode_text(tokenizer, text_encoder, prompt: str, lyrics: str):
    """Text: encoder's last hidden state (256 tokens); lyrics: token embeddings (512 tokens)."""
    import torch

    dev = next(text_encoder.parameters()).device
    tok = tokenizer(prompt, padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True,
                    return_tensors="pt")
    lyr = tokenizer(lyrics, padding="max_length", max_length=LYRIC_MAX_TOKENS, truncation=True,
                    return_tensors="pt")
    with torch.no_grad():
        # Upstream passes no attention mask here; the condition encoder gets it separately.
        text_hidden = text_encoder(tok.input_ids.to(dev)).last_hidden_state
        lyric_hidden = text_encoder.embed_tokens(lyr.input_ids.to(dev))
    return (text_hidden[0].float().cpu(), tok.attention_mask[0].float(),
            lyric_hidden[0].float().cpu(), lyr.attention_mask[0].float())


def context_latents(silence, length: int):
    """[T, 2C]: silence latent frames (tiled if the song is longer) + a chunk mask of ones."""
    import torch

    src = silence[0]
    if src.shape[0] < length:
        reps = -(-length // src.shape[0])
        src = src.repeat(reps, 1)
    src = src[:length]
    return torch.cat([src, torch.ones_like(src)], dim=-1)


def preprocess(samples: list[Sample], checkpoint_dir: Path | str, model_variant: str,
               output_dir: Path | str, *, device: str = "cpu", precision: str = "fp32",
               max_duration: float = 0.0, normalize: str = "none", tag_position: str = "prepend",
               genre_ratio: int = 0, seed: int = 0, dataset_meta: dict | None = None,
               progress: Progress | None = None) -> PreprocessResult:
    """Run both passes. A song that fails is reported and skipped; the others are written."""
    import torch

    from sidestep.config import atomic
    from sidestep.data.audio import load_audio
    from sidestep.model import load_acestep
    from sidestep.model.checkpoints import (load_silence_latent, resolve_model,
                                            text_encoder_dir, vae_dir)

    say = progress or (lambda *a: None)
    if device == "cpu":
        from sidestep.cpu_malloc import keep_freed_memory

        keep_freed_memory()
    out = Path(output_dir)
    check_output_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / _PASS1_DIR
        tmp.mkdir(exist_ok=True)
    except OSError as exc:
        raise PreprocessError(f"--tensor-output {out}: cannot create it "
                              f"({exc.strerror or exc}); choose another folder") from None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = resolve_model(checkpoint_dir, model_variant)
    silence = load_silence_latent(model.path)
    result = PreprocessResult()
    use_genre = genre_indices(len(samples), genre_ratio)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if max_duration <= 0:
        max_duration = 0.0

    # Pass 1: VAE and text encoder.
    say("load", 0, len(samples), "loading VAE and text encoder")
    vae = load_vae(vae_dir(checkpoint_dir), device, dtype)
    tokenizer, text_encoder = load_text_encoder(text_encoder_dir(checkpoint_dir), device, dtype)
    pass1: list[tuple[Sample, Path, str]] = []
    for i, sample in enumerate(samples):
        say("encode", i, len(samples), sample.filename)
        try:
            audio = load_audio(sample.audio_path, max_duration or None, normalize)
            latents = vae_encode(vae, audio, generator if device == "cpu" else None)
            caption = sample.training_caption(tag_position, use_genre=i in use_genre)
            th, tm, lh, lm = encode_text(tokenizer, text_encoder, text_prompt(sample, caption),
                                         sample.lyrics_text())
            part = tmp / f"{i:05d}.pt"
            torch.save({"target_latents": latents, "text_hidden_states": th,
                        "text_attention_mask": tm, "lyric_hidden_states": lh,
                        "lyric_attention_mask": lm}, part)
            pass1.append((sample, part, caption))
        except Exception as exc:  # one bad song must not lose the others
            result.failed.append((sample.audio_path, f"{type(exc).__name__}: {exc}"))
    del vae, text_encoder
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

    # Pass 2: condition encoder.
    say("load", 0, len(pass1), "loading condition encoder")
    encoder_model = load_acestep(model.path, device=device, dtype=dtype, parts=("encoder",))
    enc = encoder_model.encoder.eval()
    timbre_dim = encoder_model.config.timbre_hidden_dim
    for j, (sample, part, caption) in enumerate(pass1):
        say("condition", j, len(pass1), sample.filename)
        try:
            d = torch.load(part, map_location="cpu", weights_only=True)
            with torch.no_grad():
                ehs, eam = enc(
                    text_hidden_states=d["text_hidden_states"][None].to(device, dtype),
                    text_attention_mask=d["text_attention_mask"][None].to(device),
                    lyric_hidden_states=d["lyric_hidden_states"][None].to(device, dtype),
                    lyric_attention_mask=d["lyric_attention_mask"][None].to(device),
                    # text2music: one all-zero reference frame, as upstream preprocessing does
                    refer_audio_acoustic_hidden_states_packed=torch.zeros(
                        1, 1, timbre_dim, device=device, dtype=dtype),
                    refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=device))
            latents = d["target_latents"]
            record = {
                "target_latents": latents,
                "attention_mask": torch.ones(latents.shape[0]),
                "encoder_hidden_states": ehs[0].float().cpu(),
                "encoder_attention_mask": eam[0].cpu(),
                "context_latents": context_latents(silence, latents.shape[0]),
                "metadata": {
                    "audio_path": sample.audio_path, "filename": sample.filename,
                    "caption": caption, "lyrics": sample.lyrics_text(),
                    "duration": sample.duration, "bpm": sample.bpm,
                    "keyscale": sample.keyscale, "timesignature": sample.timesignature,
                    "language": sample.language, "is_instrumental": sample.is_instrumental,
                },
            }
            target = out / f"{sample.id}.pt"
            _save_atomic(record, target)
            result.written.append(target)
        except Exception as exc:
            result.failed.append((sample.audio_path, f"{type(exc).__name__}: {exc}"))
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = {
        "metadata": dataset_meta or {},
        # relative to the folder, so a copied or moved folder trains on its own files
        "samples": [p.relative_to(out).as_posix() for p in result.written],
        "num_samples": len(result.written),
    }
    result.manifest = out / "manifest.json"
    try:
        atomic.write_json(result.manifest, manifest)
    except OSError as exc:
        raise PreprocessError(f"{result.manifest}: cannot write it ({exc.strerror or exc}); "
                              "free space or fix the folder's permissions and run this "
                              "again") from None
    say("done", len(result.written), len(samples), f"wrote {len(result.written)} files")
    return result


def check_output_dir(path: Path | str) -> None:
    """Refuse an unusable ``--tensor-output`` before anything is loaded or written."""
    from sidestep.data.paths import output_dir_problem

    problem = output_dir_problem(path, "--tensor-output")
    if problem:
        raise PreprocessError(problem)


def _save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
