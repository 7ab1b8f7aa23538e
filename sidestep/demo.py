"""A tiny but complete ACE-Step checkpoint root, and a small synthetic dataset, made locally.

Tests and ``sidestep-tui --demo`` run on these: the same file formats and code paths as the real
models (safetensors DiT folders with config.json and silence_latent.pt, a diffusers
AutoencoderOobleck with the real 1920-sample hop, a transformers Qwen3 text encoder with a
locally trained byte-level BPE tokenizer), just small enough for a CPU.

Layout written by ``make_demo(DIR)``::

    DIR/checkpoints/{acestep-v15-turbo,acestep-v15-base,vae,Qwen3-Embedding-0.6B}/
    DIR/audio/clip_NN.wav + clip_NN.txt (+ clip_NN.lyrics.txt), dataset.json
    DIR/tensors/clip_NN.pt + manifest.json     (made by the real preprocessing pipeline)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sidestep.model.acestep import build_acestep, init_weights
from sidestep.model.config import AceStepConfig

DEMO_MARKER = "sidestep-demo.json"
DEMO_VERSION = 2  # 2: the checkpoint holds the tokenizer and detokenizer too

# A small DiT with the real latent width (64, so in_channels 192) and the real patch size.
TINY_DIT: dict = {
    "model_type": "acestep",
    "architectures": ["AceStepConditionGenerationModel"],
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
    "use_sliding_window": True, "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention"] * 2,
    "patch_size": 2, "in_channels": 192, "audio_acoustic_hidden_dim": 64,
    "text_hidden_dim": 64, "timbre_hidden_dim": 64,
    "num_lyric_encoder_hidden_layers": 2, "num_timbre_encoder_hidden_layers": 2,
    "rms_norm_eps": 1e-6, "rope_theta": 1_000_000, "attention_bias": False,
    "timestep_mu": -0.4, "timestep_sigma": 1.0, "data_proportion": 0.5,
    "max_position_embeddings": 32768, "dtype": "float32",
}

# diffusers AutoencoderOobleck: 64-channel latents need an encoder width of 128. Strides are
# ordered large-first (product 1920, like the real [2, 4, 4, 6, 10]) so the full-rate layers
# are the only expensive ones on a CPU.
TINY_VAE: dict = {
    "encoder_hidden_size": 128, "downsampling_ratios": [10, 6, 4, 4, 2],
    "channel_multiples": [1, 1, 1, 1, 1], "decoder_channels": 16,
    "decoder_input_channels": 64, "audio_channels": 2, "sampling_rate": 48000,
}

TINY_TEXT: dict = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
}

SILENCE_FRAMES = 1500  # 60 s at 25 frames/s (the real file holds 15000)

_STYLES = [
    # (caption, genre, bpm, key, root Hz, chord intervals in semitones)
    ("warm lo-fi piano loop with soft vinyl crackle", "lo-fi", 84, "A minor", 220.0,
     (0, 3, 7, 10)),
    ("bright synth arpeggio over a steady four-on-the-floor kick", "electronic", 124,
     "C major", 261.6, (0, 4, 7, 11)),
    ("slow ambient pad with a deep drone", "ambient", 70, "D minor", 146.8, (0, 7, 12, 15)),
]
_LYRICS = [
    "[verse]\nneon rain on the window pane\nwe keep on walking just the same",
    "[chorus]\nla la la under the midnight sun\nla la la till the night is done",
]

Progress = Callable[[str], None]


def demo_complete(root: Path | str) -> bool:
    marker = Path(root) / DEMO_MARKER
    try:
        return json.loads(marker.read_text())["version"] == DEMO_VERSION
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- checkpoint pieces ------------------------------------------------------------------------
def write_dit(folder: Path, overrides: dict, seed: int, std: float = 0.05) -> AceStepConfig:
    """A randomly initialised DiT folder: config.json, model.safetensors, silence_latent.pt."""
    from safetensors.torch import save_file

    from sidestep.model.codec_keys import codec_shapes

    folder.mkdir(parents=True, exist_ok=True)
    config = AceStepConfig.from_dict({**TINY_DIT, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # module defaults (convs, modulation tables) draw from it
        model = build_acestep(config, device="cpu")
    init_weights(model, std=std, generator=gen)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # The parts training never runs, so that ACE-Step's own code loads the folder strictly.
    for name, shape in codec_shapes(config).items():
        norm = name.endswith(("norm.weight", "layernorm.weight"))
        state[name] = torch.ones(shape) if norm else torch.randn(shape, generator=gen) * std
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    silence = torch.randn(1, config.audio_acoustic_hidden_dim, SILENCE_FRAMES, generator=gen)
    torch.save(silence * 0.5 - 0.2, folder / "silence_latent.pt")
    return config


def write_vae(folder: Path, seed: int) -> None:
    """A random Oobleck VAE made to behave like a trained one: latents of unit scale that
    follow the audio, and a near-deterministic posterior (a random init gives std ~0.7 noise
    around a tiny mean, which no adapter could learn)."""
    from diffusers import AutoencoderOobleck

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(**TINY_VAE)
    latent = TINY_VAE["decoder_input_channels"]
    probe, _ = synth_clip(0, seed)
    out = vae.encoder.conv2
    with torch.no_grad():
        mean = vae.encoder(torch.from_numpy(probe[:, :24000])[None])[:, :latent]
        out.weight_g[:latent] *= 1.0 / float(mean.std().clamp_min(1e-6))
        out.bias[:latent] -= float(mean.mean()) / float(mean.std().clamp_min(1e-6))
        out.weight_g[latent:] *= 0.01
        out.bias[latent:] = -7.0  # softplus(-7) ~ 1e-3: posterior std
    vae.save_pretrained(str(folder))


def _corpus() -> list[str]:
    from sidestep.data.preprocess import DIT_INSTRUCTION

    lines = [f"# Instruction\n{DIT_INSTRUCTION}\n\n# Caption\n", "# Metas\n- bpm: N/A\n",
             "- timesignature: 4\n- keyscale: C major\n- duration: 3.0 seconds\n",
             "[Instrumental]", "[verse] [chorus] [bridge] [intro] [outro]"]
    lines += [s[0] + ", " + s[1] for s in _STYLES] + _LYRICS
    lines += ["0123456789 . , : ; - _ ( ) [ ] # ' \" ! ?",
              "major minor sharp flat A B C D E F G bpm seconds"]
    return lines * 4


def write_text_encoder(folder: Path, seed: int) -> None:
    """Qwen3 text encoder with a byte-level BPE tokenizer trained here on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", padding_side="left",
                                   model_max_length=32768)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    config = Qwen3Config(vocab_size=len(fast), pad_token_id=fast.pad_token_id,
                         eos_token_id=fast.eos_token_id, **TINY_TEXT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3Model(config)
    model.save_pretrained(str(folder))


def write_checkpoint_root(root: Path, seed: int = 0) -> Path:
    from sidestep.model.checkpoints import TEXT_ENCODER_FOLDER, VAE_FOLDER
    from sidestep.model.quiet import quiet_loading

    root.mkdir(parents=True, exist_ok=True)
    write_dit(root / "acestep-v15-turbo", {"is_turbo": True, "model_version": "turbo"}, seed)
    write_dit(root / "acestep-v15-base", {"is_turbo": False, "model_version": "base"}, seed + 1)
    # diffusers' import pulls in bitsandbytes (a kernels warning on a CPU), the Oobleck VAE
    # uses the deprecated weight_norm, and save_pretrained draws a progress bar
    with quiet_loading("diffusers", "transformers"):
        write_vae(root / VAE_FOLDER, seed + 2)
        write_text_encoder(root / TEXT_ENCODER_FOLDER, seed + 3)
    return root


# -- synthetic audio --------------------------------------------------------------------------
def synth_clip(index: int, seed: int, rate: int = 48000) -> tuple[np.ndarray, dict]:
    """A short stereo clip: a chord with a rhythmic envelope, in one of three styles."""
    rng = np.random.default_rng(seed * 1000 + index)
    caption, genre, bpm, key, root, chord = _STYLES[index % len(_STYLES)]
    duration = 1.6 + 0.2 * (index % 5)  # 1.6-2.4 s: the tiny VAE costs ~1 s per second
    t = np.arange(int(duration * rate)) / rate
    beat = 60.0 / bpm
    env = np.exp(-((t % beat) / (0.35 * beat)))
    left = np.zeros_like(t)
    right = np.zeros_like(t)
    for n, semis in enumerate(chord):
        f = root * 2 ** (semis / 12) * (1 + 0.002 * rng.standard_normal())
        phase = rng.uniform(0, 2 * np.pi)
        tone = np.sin(2 * np.pi * f * t + phase) + 0.3 * np.sin(4 * np.pi * f * t + phase)
        pan = 0.5 + 0.3 * np.sin(n)
        left += (1 - pan) * tone
        right += pan * tone
    audio = np.stack([left, right]) * env * 0.25
    audio += 0.01 * rng.standard_normal(audio.shape)
    meta = {"caption": caption, "genre": genre, "bpm": bpm, "keyscale": key,
            "timesignature": "4", "language": "en" if index % 4 == 3 else "instrumental",
            "lyrics": _LYRICS[index % 2] if index % 4 == 3 else ""}
    return audio.astype(np.float32), meta


def write_audio(folder: Path, count: int, seed: int) -> list[Path]:
    from sidestep.data.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        audio, meta = synth_clip(i, seed)
        path = folder / f"clip_{i:02d}.wav"
        write_wav(path, audio)
        lines = [f"caption: {meta['caption']}", f"genre: {meta['genre']}",
                 f"bpm: {meta['bpm']}", f"key: {meta['keyscale']}",
                 f"timesignature: {meta['timesignature']}", f"language: {meta['language']}"]
        path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        if meta["lyrics"]:
            Path(f"{path.with_suffix('')}.lyrics.txt").write_text(meta["lyrics"] + "\n")
        files.append(path)
    return files


# -- everything -------------------------------------------------------------------------------
CLIP_FILE = re.compile(r"clip_(\d{2,})(\.wav|\.txt|\.lyrics\.txt|\.pt)")


def foreign_tensors(root: Path | str) -> list[str]:
    """The .pt files in ``root``/tensors that are not a demo's clips: a demo written over
    them would make its tensor folder a mix of two datasets, which preprocessing refuses
    (after the model and the audio were written)."""
    folder = Path(root) / "tensors"
    try:
        found = sorted(p.name for p in folder.glob("*.pt") if p.is_file())
    except OSError:
        return []
    if not (Path(root) / DEMO_MARKER).is_file():
        return found
    return [name for name in found if not CLIP_FILE.fullmatch(name)]


def _forget_old_clips(root: Path, clips: int, seed: int) -> None:
    """Over a demo made earlier (its marker is there): remove its clips that this one does not
    write, and its tensors when the seed changes (their audio does). Else the old clips stayed
    in audio/ and were encoded again ('--clips 2' over 12 made 12), and tensors made elsewhere
    (a copied demo) from other audio were refused as another dataset's. Only files named as
    the demo names them go (clip_NN.wav, .txt, .lyrics.txt, .pt); a folder without the marker
    is left as it is."""
    try:
        old_seed = json.loads((root / DEMO_MARKER).read_text()).get("seed")
    except (OSError, ValueError, AttributeError):
        return
    for folder, suffixes in ((root / "audio", (".wav", ".txt", ".lyrics.txt")),
                             (root / "tensors", (".pt",))):
        try:
            found = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
        except OSError:
            continue  # not there (or unreadable: the writes will say so)
        for path in found:
            m = CLIP_FILE.fullmatch(path.name)
            if not m or m.group(2) not in suffixes or m.group(1) != f"{int(m.group(1)):02d}":
                continue  # not a name the demo writes (clip_5.wav, clip_007.wav)
            if int(m.group(1)) >= clips or (m.group(2) == ".pt" and old_seed != seed):
                path.unlink()


def make_demo(root: Path | str, seed: int = 0, clips: int = 12,
              progress: Progress | None = None) -> Path:
    """Write the checkpoint root, audio and preprocessed tensors. Deterministic per seed."""
    from sidestep.data.dataset_json import build_dataset, load_dataset_json
    from sidestep.data.preprocess import preprocess

    say = progress or (lambda msg: None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _forget_old_clips(root, clips, seed)
    prev_threads = torch.get_num_threads()
    try:
        say("writing tiny checkpoints")
        write_checkpoint_root(root / "checkpoints", seed)
        say("synthesising audio")
        write_audio(root / "audio", clips, seed)
        dataset_path, _doc, _skipped = build_dataset(root / "audio", name="sidestep_demo",
                                                     replace=True)  # the demo's own file
        meta, samples = load_dataset_json(dataset_path)
        say("preprocessing audio into tensors")
        result = preprocess(samples, root / "checkpoints", "turbo", root / "tensors",
                            seed=seed, dataset_meta=meta.__dict__,
                            progress=lambda e: say(
                                f"preprocess {e.phase} {e.done}/{e.total} {e.file or e.message}"))
        if result.failed:
            raise RuntimeError(f"demo preprocessing failed: {result.failed[0]}")
        (root / DEMO_MARKER).write_text(json.dumps({"version": DEMO_VERSION, "seed": seed,
                                                    "clips": clips}))
    finally:
        torch.set_num_threads(prev_threads)
    return root
