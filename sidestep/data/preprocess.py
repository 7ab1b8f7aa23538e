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

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sidestep.config.paths import same_place
from sidestep.data.audio import AudioError
from sidestep.data.dataset_json import DatasetError, Sample, genre_indices

DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
TEXT_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 512
PASS1_DIR = ".sidestep-pass1"  # pass-1 results waiting for pass 2
STATE_FILE = ".sidestep-preprocess.json"  # id -> fingerprint of what each .pt was made from
TILE_SECONDS = 30.0          # VAE tile length on a GPU (bounded activation memory)
CPU_TILE_SECONDS = 10.0      # on a CPU: the encoder's first layers hold 128 x samples floats
TILE_OVERLAP_FRAMES = 25     # one second each side at 25 latent frames per second


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



def failure_reason(exc: Exception, path: str) -> str:
    """Why a song failed, said once: our own errors explain themselves (less the path the line
    already names); anything else keeps its type, which is the clue."""
    if isinstance(exc, (AudioError, DatasetError)):
        text = str(exc)
        return text[len(path) + 2:] if text.startswith(f"{path}: ") else text
    return f"{type(exc).__name__}: {exc}"

@dataclass
class PreprocessResult:
    written: list[Path] = field(default_factory=list)   # encoded by this call
    reused: list[Path] = field(default_factory=list)    # finished earlier, left untouched
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    manifest: Path | None = None
    cancelled: bool = False
    half_done: int = 0          # songs through pass 1 only: the next run starts them at pass 2
    total: int = 0                                      # songs asked for
    # cancelled: finished files of an earlier run that this one was to replace (other
    # settings or audio) and had not reached; they stay listed until a rerun replaces them
    earlier: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class PreprocessEvent:
    """Progress, as the CLI prints it and the app draws it.

    ``phase``: ``plan`` (what is already done), ``load`` (a model is loading), ``encode``
    (pass 1: VAE + text encoder), ``condition`` (pass 2: condition encoder), ``done`` or
    ``cancelled``. ``done``/``total`` count files in the current pass; ``eta_s`` is the time
    left in this pass at its rate so far (None until one file has finished).
    """
    phase: str
    done: int
    total: int
    file: str = ""
    message: str = ""
    eta_s: float | None = None


Progress = Callable[[PreprocessEvent], None]


def load_vae(path: Path, device, dtype):
    from sidestep.model.quiet import quiet_loading

    with quiet_loading("diffusers"):
        from diffusers import AutoencoderOobleck

        vae = AutoencoderOobleck.from_pretrained(str(path), local_files_only=True,
                                                 torch_dtype=dtype)
    return vae.to(device=device).eval()


def load_text_encoder(path: Path, device, dtype):
    from sidestep.model.quiet import quiet_loading

    with quiet_loading("transformers"):
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return tokenizer, model.to(device).eval()


def vae_encode(vae, audio, generator=None, tile_seconds: float = TILE_SECONDS):
    """[2, samples] -> [T, 64] latents (a sample of the posterior, as upstream does).

    Audio longer than ``tile_seconds`` is encoded in overlapping tiles (diffusers' own 1-D
    tiling; each tile's edges are trimmed away), so activation memory depends on the tile, not
    on the song. The noise is drawn once for the whole song, so tiling changes only the
    posterior's mean and scale near tile joins, by far less than the noise itself.
    """
    import torch

    hop = int(getattr(vae, "hop_length", 1920))
    tile_frames = max(int(tile_seconds * vae.config.sampling_rate / hop), 4 * TILE_OVERLAP_FRAMES)
    vae.use_tiling = True
    vae.tile_sample_min_length = tile_frames * hop
    vae.tile_sample_overlap = TILE_OVERLAP_FRAMES * hop
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
               progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
               tile_seconds: float | None = None,
               warn: Callable[[str], None] | None = None) -> PreprocessResult:
    """Encode ``samples`` into ``output_dir``; the CLI, the trainer and the app all call this.

    Resumable: a song whose ``.pt`` was finished from the same audio bytes and settings is
    left as it is, so a rerun after a crash or a cancel encodes only what is missing. Each file
    appears whole or not at all. ``cancel`` is polled between songs. A song that fails is
    reported and skipped; the others are written. Finished files about to be replaced (their
    captions or settings changed) are named to ``warn`` before any of them is touched.
    """
    import torch

    from sidestep.config import atomic
    from sidestep.data.audio import load_audio
    from sidestep.model import load_acestep
    from sidestep.model.checkpoints import (load_silence_latent, resolve_model,
                                            text_encoder_dir, vae_dir)

    say = progress or (lambda event: None)
    stopped = cancel or (lambda: False)
    out = Path(output_dir)
    check_output_dir(out)  # also refuses a folder of songs (the trainer's --preprocess)
    clash = _id_clashes(samples)
    if clash:
        raise PreprocessError(clash)
    model = resolve_model(checkpoint_dir, model_variant)  # a bad model fails before any write
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    tile = tile_seconds or (CPU_TILE_SECONDS if device == "cpu" else TILE_SECONDS)
    max_duration = max(max_duration, 0.0)
    settings = _settings(model.path.name, precision, normalize, max_duration, seed)
    captions = _captions(samples, tag_position, genre_ratio)
    state, made = _read_state(out), _read_made(out)
    problem = _other_songs_problem(out, samples, state,
                                   lambda s: _fingerprint(s, captions[s.id], settings), made)
    if problem:  # before anything is written: the folder is left as it was
        raise PreprocessError(problem)
    if device == "cpu":
        from sidestep.cpu_malloc import keep_freed_memory

        keep_freed_memory()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / PASS1_DIR
        for stale in [*out.glob(".*.pt.tmp"), *tmp.glob(".*.pt.tmp")]:  # ours: cut-off writes
            stale.unlink(missing_ok=True)
        tmp.mkdir(exist_ok=True)
    except OSError as exc:
        raise PreprocessError(f"--tensor-output {out}: cannot create it "
                              f"({exc.strerror or exc}); choose another folder") from None

    result = PreprocessResult(total=len(samples))
    todo: list[tuple[Sample, str]] = []
    records: dict[str, dict] = {}
    replaced: dict[str, list[str]] = {}  # what changed -> finished files encoded again
    for sample in samples:
        target = out / f"{sample.id}.pt"
        try:
            fp, records[sample.id] = _fingerprints(sample, captions[sample.id], settings)
        except OSError as exc:
            result.failed.append((sample.audio_path, f"cannot read it ({exc.strerror or exc})"))
            continue
        if target.is_file() and state.get(sample.id) == fp:
            result.reused.append(target)
        else:
            todo.append((sample, fp))
            if target.is_file():
                why = _what_changed(made.get(sample.id), records[sample.id], target,
                                    captions[sample.id])
                replaced.setdefault(why, []).append(target.name)
    if replaced and warn:  # said before the first is replaced: a cancel then keeps the rest
        n = sum(len(v) for v in replaced.values())
        whys = "; ".join(f"{why} ({len(names)}: {_some(names)})"
                         for why, names in replaced.items())
        warn(f"{n} finished tensor files in {out} will be encoded again and replaced: {whys}. "
             "Stop now (Ctrl+C) to keep them, or give another --tensor-output")

    # Pass 1: VAE and text encoder. Their results wait in files named by fingerprint, and stay until pass 2 has used them:
    # a song encoded before a cancel or a crash is not encoded again.
    parts = {fp: tmp / f"{fp}.pt" for _, fp in todo}
    for stale in set(tmp.glob("*.pt")) - set(parts.values()):
        stale.unlink(missing_ok=True)
    pending = [(s, fp) for s, fp in todo if not parts[fp].is_file()]
    say(PreprocessEvent("plan", len(result.reused), len(samples),
                        message=f"{len(samples)} songs on {device} ({precision}) into {out}: "
                                f"{len(result.reused)} already done, {len(todo)} to encode"
                                + (f" ({len(todo) - len(pending)} half-done earlier)"
                                   if len(pending) < len(todo) else "")))
    if pending and not stopped():
        say(PreprocessEvent("load", 0, len(pending), message="loading VAE and text encoder"))
        vae = load_vae(vae_dir(checkpoint_dir), device, dtype)
        tokenizer, text_encoder = load_text_encoder(text_encoder_dir(checkpoint_dir), device,
                                                    dtype)
        clock = _Clock([_encoded_seconds(s, max_duration) for s, _ in pending])
        for i, (sample, fp) in enumerate(pending):
            if stopped():
                break
            say(PreprocessEvent("encode", i, len(pending), sample.filename,
                                eta_s=clock.eta(i)))
            try:
                audio = load_audio(sample.audio_path, max_duration or None, normalize)
                gen = torch.Generator(device="cpu").manual_seed(_song_seed(seed, sample.id))
                latents = vae_encode(vae, audio, gen if device == "cpu" else None, tile)
                del audio
                th, tm, lh, lm = encode_text(tokenizer, text_encoder,
                                             text_prompt(sample, captions[sample.id]),
                                             sample.lyrics_text())
                _save_atomic({"target_latents": latents, "text_hidden_states": th,
                              "text_attention_mask": tm, "lyric_hidden_states": lh,
                              "lyric_attention_mask": lm}, parts[fp])
            except Exception as exc:  # one bad song must not lose the others
                result.failed.append((sample.audio_path, failure_reason(exc, sample.audio_path)))
            clock.tick()
        del vae, text_encoder
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    pass1 = [(s, fp, parts[fp]) for s, fp in todo if parts[fp].is_file()]

    # Pass 2: condition encoder, loaded only now that the VAE and text encoder are gone.
    if pass1 and not stopped():
        say(PreprocessEvent("load", 0, len(pass1), message="loading condition encoder"))
        encoder_model = load_acestep(model.path, device=device, dtype=dtype, parts=("encoder",))
        enc = encoder_model.encoder.eval()
        timbre_dim = encoder_model.config.timbre_hidden_dim
        silence = load_silence_latent(model.path)
        clock = _Clock([_encoded_seconds(s, max_duration) for s, _, _ in pass1])
        for j, (sample, fp, part) in enumerate(pass1):
            if stopped():
                break
            say(PreprocessEvent("condition", j, len(pass1), sample.filename, eta_s=clock.eta(j)))
            try:
                record = _condition(enc, timbre_dim, silence, part, sample,
                                    captions[sample.id], device, dtype)
                target = out / f"{sample.id}.pt"
                _save_atomic(record, target)
                state[sample.id] = fp
                made[sample.id] = records[sample.id]
                _write_state(out, state, made)
                result.written.append(target)
                part.unlink(missing_ok=True)
            except Exception as exc:
                result.failed.append((sample.audio_path, failure_reason(exc, sample.audio_path)))
            clock.tick()
        del encoder_model, enc
    result.cancelled = stopped()
    result.half_done = len(list(tmp.glob("*.pt")))
    if not result.half_done:
        shutil.rmtree(tmp, ignore_errors=True)

    done = {p.name for p in result.written + result.reused}
    if result.cancelled:  # a cancel never leaves a folder's good tensors out of its manifest
        result.earlier = [out / f"{s.id}.pt" for s, _ in todo
                          if f"{s.id}.pt" not in done and (out / f"{s.id}.pt").is_file()]
        done |= {p.name for p in result.earlier}
    manifest = {
        # the dataset's own (tag, name, ...), less its song count: the tensors made are counted
        # below, and two different counts read as a bug
        "metadata": {k: v for k, v in (dataset_meta or {}).items() if k != "num_samples"},
        # relative to the folder, so a copied or moved folder trains on its own files
        "samples": [f"{s.id}.pt" for s in samples if f"{s.id}.pt" in done],
        "num_samples": len(done),
    }
    result.manifest = out / "manifest.json"
    try:
        atomic.write_json(result.manifest, manifest)
    except OSError as exc:
        raise PreprocessError(f"{result.manifest}: cannot write it ({exc.strerror or exc}); "
                              "free space or fix the folder's permissions and run this "
                              "again") from None
    phase = "cancelled" if result.cancelled else "done"
    say(PreprocessEvent(phase, len(done), len(samples),
                        message=f"wrote {len(result.written)}, kept {len(result.reused)}, "
                                f"failed {len(result.failed)}"))
    return result


def preprocess_config(config, *, progress: Progress | None = None,
                      cancel: Callable[[], bool] | None = None,
                      warn: Callable[[str], None] | None = None) -> PreprocessResult:
    """The ``preprocess`` command for a resolved config: the CLI and the app both call this.

    Checks the output folder before anything slow, picks the device and precision, reads the
    songs (dataset.json or a folder scan), then runs :func:`preprocess`. Notes that are not
    errors (a precision fallback, an unreadable sidecar) go to ``warn``.
    """
    from sidestep.config.device import probe, resolve_device, resolve_precision
    from sidestep.data.dataset_json import samples_from

    say_warning = warn or (lambda message: None)
    check_output_dir(config.tensor_output, (config.audio_dir,))
    info = probe()
    device = resolve_device(config.device, info)
    precision, note = resolve_precision(config.precision, device, info)
    if note:
        say_warning(note)
    notes: list[str] = []
    meta, samples = samples_from(config.audio_dir, config.dataset_json, notes)
    for message in notes:
        say_warning(message)
    return preprocess(samples, config.checkpoint_dir, config.model_variant,
                      config.tensor_output, device=device, precision=precision,
                      max_duration=config.max_duration, normalize=config.normalize,
                      dataset_meta=meta.__dict__, tag_position=meta.tag_position,
                      genre_ratio=meta.genre_ratio, progress=progress, cancel=cancel,
                      warn=say_warning)


def check_training_preprocess(config) -> list[str]:
    """What training with ``--preprocess`` would refuse about its songs and its
    ``--tensor-output``, checked before the CLI prints its summary (a refusal after the
    settings table and the memory estimate read as a run that had started): the folder's use,
    the songs (read as the trainer reads them), two songs of one name, and a folder of other
    songs' tensors. The trainer's :func:`preprocess` checks the same again. Returns the notes
    on the songs the trainer will log (an unreadable sidecar, an unused dataset.json), for the
    CLI to say with its summary."""
    from sidestep.data.dataset_json import samples_from
    from sidestep.model.checkpoints import resolve_model

    out = Path(config.tensor_output)
    check_output_dir(out, (config.audio_dir,))
    notes: list[str] = []
    meta, samples = samples_from(config.audio_dir, config.dataset_json, notes)
    clash = _id_clashes(samples)
    if clash:
        raise PreprocessError(clash)
    model = resolve_model(config.checkpoint_dir, config.model_variant)
    captions = _captions(samples, meta.tag_position, meta.genre_ratio)
    settings: dict = {}

    def fingerprint(sample: Sample) -> str:
        if not settings:  # only for a same-named file made from other audio: rare
            from sidestep.config.device import probe, resolve_device, resolve_precision

            info = probe()
            precision, _note = resolve_precision(config.precision,
                                                 resolve_device(config.device, info), info)
            settings.update(_settings(model.path.name, precision, config.normalize,
                                      max(config.max_duration, 0.0), 0))
        return _fingerprint(sample, captions[sample.id], settings)

    problem = _other_songs_problem(out, samples, _read_state(out), fingerprint, _read_made(out))
    if problem:
        raise PreprocessError(problem)
    return notes


def input_errors() -> tuple[type[Exception], ...]:
    """What :func:`preprocess_config` raises for bad input (shown as a message, exit 2)."""
    from sidestep.config.device import DeviceError
    from sidestep.data.audio import AudioError
    from sidestep.data.dataset_json import DatasetError
    from sidestep.model.checkpoints import DiscoveryError
    from sidestep.model.loading import CheckpointError

    return (DeviceError, DatasetError, PreprocessError, DiscoveryError, CheckpointError,
            AudioError)


def _condition(enc, timbre_dim: int, silence, part: Path, sample: Sample, caption: str,
               device: str, dtype) -> dict:
    """One song's training record from its pass-1 tensors."""
    import torch

    d = torch.load(part, map_location="cpu", weights_only=True)
    ehs, eam = encode_condition(enc, timbre_dim, d["text_hidden_states"],
                                d["text_attention_mask"], d["lyric_hidden_states"],
                                d["lyric_attention_mask"], device, dtype)
    latents = d["target_latents"]
    return {
        "target_latents": latents,
        "attention_mask": torch.ones(latents.shape[0]),
        "encoder_hidden_states": ehs,
        "encoder_attention_mask": eam,
        "context_latents": context_latents(silence, latents.shape[0]),
        "metadata": {
            "audio_path": sample.audio_path, "filename": sample.filename,
            "caption": caption, "lyrics": sample.lyrics_text(),
            "duration": sample.duration, "bpm": sample.bpm,
            "keyscale": sample.keyscale, "timesignature": sample.timesignature,
            "language": sample.language, "is_instrumental": sample.is_instrumental,
        },
    }


def encode_condition(enc, timbre_dim: int, text_hidden, text_mask, lyric_hidden, lyric_mask,
                     device: str, dtype):
    """encode_text's four tensors -> (encoder_hidden_states [L, H] float32 on the CPU,
    encoder_attention_mask [L]): one song's text2music condition (the sampler uses it too)."""
    import torch

    with torch.no_grad():
        ehs, eam = enc(
            text_hidden_states=text_hidden[None].to(device, dtype),
            text_attention_mask=text_mask[None].to(device),
            lyric_hidden_states=lyric_hidden[None].to(device, dtype),
            lyric_attention_mask=lyric_mask[None].to(device),
            # text2music: one all-zero reference frame, as upstream preprocessing does
            refer_audio_acoustic_hidden_states_packed=torch.zeros(
                1, 1, timbre_dim, device=device, dtype=dtype),
            refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=device))
    return ehs[0].float().cpu(), eam[0].cpu()


class _Clock:
    """Time left in a pass, from the pace so far per second of audio: a 10-minute song
    takes twenty times a 30-second one, and a count of files would say 50 s before it."""

    def __init__(self, seconds: list[float]):
        self.weights = [s if s > 0 else 1.0 for s in seconds]
        self.start = time.monotonic()
        self.finished = 0

    def tick(self) -> None:
        self.finished += 1

    def eta(self, done: int) -> float | None:
        if not self.finished:
            return None
        per_second = (time.monotonic() - self.start) / sum(self.weights[:self.finished])
        return per_second * sum(self.weights[done:])


def _encoded_seconds(sample: Sample, max_duration: float | None) -> float:
    """How much of the song is encoded (0 when its length is not known)."""
    seconds = float(sample.duration or 0.0)
    return min(seconds, max_duration) if max_duration else seconds


def _id_clashes(samples: list[Sample]) -> str | None:
    """Songs that would write the same ``.pt`` (``a.wav`` and ``a.flac``): every such group
    at once, not one per run."""
    by_id: dict[str, list[str]] = {}
    for s in samples:
        by_id.setdefault(s.id, []).append(str(s.audio_path))
    clashes = [f"{' and '.join(paths)} would all be written as {sid}.pt" if len(paths) > 2
               else f"{' and '.join(paths)} would both be written as {sid}.pt"
               for sid, paths in by_id.items() if len(paths) > 1]
    if not clashes:
        return None
    return f"{'; '.join(clashes)}; rename them so that no two share a name (or remove the " \
           "duplicates) and run this again"


def _song_seed(seed: int, song_id: str) -> int:
    """A per-song seed, so a song's latents do not depend on which others were encoded."""
    digest = hashlib.blake2b(f"{seed}:{song_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _settings(model_name: str, precision: str, normalize: str, max_duration: float,
              seed: int) -> dict:
    """The settings a ``.pt`` was encoded with (part of its fingerprint)."""
    return {"model": model_name, "precision": precision, "normalize": normalize,
            "max_duration": max_duration, "seed": seed, "version": 1}


def _captions(samples: list[Sample], tag_position: str, genre_ratio: int) -> dict[str, str]:
    use_genre = genre_indices(len(samples), genre_ratio)
    return {s.id: s.training_caption(tag_position, use_genre=i in use_genre)
            for i, s in enumerate(samples)}


def _fingerprint(sample: Sample, caption: str, settings: dict) -> str:
    return _fingerprints(sample, caption, settings)[0]


def _fingerprints(sample: Sample, caption: str, settings: dict) -> tuple[str, dict]:
    """What a finished ``.pt`` was made from: the audio's bytes, its text, the settings.
    Content, not mtimes, so a copied folder still counts as done. Also its parts (hashes of
    the audio and of the text, and the settings), so a rerun can say what changed."""
    h = hashlib.blake2b(digest_size=16)
    audio = hashlib.blake2b(digest_size=16)
    for block in _blocks(sample.audio_path):
        h.update(block)
        audio.update(block)
    words = {"caption": caption, "lyrics": sample.lyrics_text(), "bpm": sample.bpm,
             "keyscale": sample.keyscale, "timesignature": sample.timesignature}
    h.update(json.dumps({**words, "duration": sample.duration, "settings": settings},
                        sort_keys=True).encode())
    text = hashlib.blake2b(json.dumps(words, sort_keys=True).encode(), digest_size=16)
    return h.hexdigest(), {"audio": audio.hexdigest(), "text": text.hexdigest(),
                           "settings": settings}


def _blocks(path: str):
    """A file's bytes in 1 MiB blocks (songs are hashed, not held in memory)."""
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(1 << 20), b"")


def _audio_hash(path: str) -> str | None:
    """The hash :func:`_fingerprints` records for an audio file (None: unreadable)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        for block in _blocks(path):
            h.update(block)
    except OSError:
        return None
    return h.hexdigest()


_SETTING_NAMES = {"model": "the model", "precision": "--precision", "normalize": "--normalize",
                  "max_duration": "--max-duration", "seed": "the seed",
                  "version": "the tensor format"}


def _what_changed(was: dict | None, now: dict, pt: Path | None = None,
                  caption: str | None = None) -> str:
    """Why a finished ``.pt`` no longer matches its song, in the user's words: from the parts
    recorded when it was made, or (older folders) from the caption the file holds."""
    if not isinstance(was, dict):
        old = (_metadata(pt) or {}).get("caption") if pt else None
        if old is not None and caption is not None and old != caption:
            return "captions changed"
        return "settings, captions or audio changed"
    changed = []
    old_settings = was.get("settings") if isinstance(was.get("settings"), dict) else {}
    for key, value in now["settings"].items():
        if old_settings.get(key) != value:
            name = _SETTING_NAMES.get(key, key)
            changed.append(f"{name} {old_settings.get(key)} -> {value}" if key in (
                "precision", "normalize", "max_duration") else f"{name} changed")
    if was.get("text") != now["text"]:
        changed.append("captions or lyrics changed")
    if was.get("audio") != now["audio"]:
        changed.append("audio changed")
    return ", ".join(changed) or "settings changed"


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _other_songs_problem(out: Path, samples: list[Sample], state: dict[str, str],
                         fingerprint: Callable[[Sample], str],
                         made: dict[str, dict] | None = None) -> str | None:
    """Why ``out`` holds another dataset's tensors: a ``.pt`` none of ``samples`` writes, or
    one of their names made from another audio file (a song of the same name elsewhere).
    Writing there replaced those files (hours of encoding) or left them beside a manifest
    that no longer lists them. A same-named file made from the same audio path (other
    settings, an edited caption) is this dataset's own, re-encoded as before; so is one made
    from the same bytes and text elsewhere (songs moved since). One made from the same bytes
    elsewhere with other text or settings is refused too (a copy of the songs may be another
    dataset), but the refusal says so: "other songs" would send the user looking for them."""
    if not out.is_dir():
        return None
    ours = {s.id: s for s in samples}
    other, copies = [], []
    where: set[str] = set()
    try:
        found = sorted(p for p in out.glob("*.pt") if p.is_file() and not p.name.startswith("."))
    except OSError:
        return None  # unreadable: the write itself will say so
    for f in found:
        sample = ours.get(f.stem)
        if sample is None:
            other.append(f.name)
            continue
        made_from = _made_from(f)
        if made_from is None or (made_from and same_place(made_from, sample.audio_path)):
            continue  # (unreadable: a broken file, encoded again as before)
        try:
            if state.get(sample.id) == fingerprint(sample):
                continue
        except OSError:
            pass
        if _same_bytes(made_from, (made or {}).get(sample.id), sample.audio_path):
            copies.append(f.name)
            where.add(str(Path(made_from).parent))
        else:
            other.append(f.name)
    if not other and not copies:
        return None
    fix = (f"Give a separate folder, such as {out.with_name(out.name + '-2')}, or move those "
           "files away if they are no longer wanted")
    if not other:
        return (f"--tensor-output {out} holds tensors of these songs made from copies of them "
                f"in {_some(sorted(where))} ({_some(copies)}: {len(copies)} of its .pt files) "
                "with other captions or settings; writing there would replace them. " + fix)
    return (f"--tensor-output {out} holds tensors of other songs ({_some(other)}: {len(other)} "
            f"of its .pt files were not made from these {len(samples)} songs); writing there "
            f"would replace them or mix two datasets. " + fix)


def _same_bytes(made_from: str, record: dict | None, audio_path: str) -> bool:
    """Whether a ``.pt`` made from ``made_from`` was made from the same audio bytes as
    ``audio_path``: by the hash recorded when it was made, else by the file if it is still
    there."""
    recorded = record.get("audio") if isinstance(record, dict) else None
    then = recorded or (_audio_hash(made_from) if made_from else None)
    return bool(then) and then == _audio_hash(audio_path)


def _metadata(pt: Path) -> dict | None:
    """A ``.pt``'s metadata (None when the file cannot be read)."""
    import torch

    try:
        meta = torch.load(pt, map_location="cpu", weights_only=True, mmap=True).get("metadata")
    except Exception:  # a truncated or foreign file: nothing to tell
        return None
    return meta if isinstance(meta, dict) else {}


def _made_from(pt: Path) -> str | None:
    """The audio path a ``.pt`` records in its metadata (None when it cannot be read)."""
    meta = _metadata(pt)
    return None if meta is None else str(meta.get("audio_path") or "")


def _read_state(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
        files = data.get("files", {})
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}  # no record: every file is encoded again, which is always safe


def _read_made(out: Path) -> dict[str, dict]:
    """Each finished file's parts (see :func:`_fingerprints`); older folders have none."""
    try:
        made = json.loads((out / STATE_FILE).read_text(encoding="utf-8")).get("made", {})
        return {str(k): v for k, v in made.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_state(out: Path, state: dict[str, str], made: dict[str, dict]) -> None:
    from sidestep.config import atomic

    atomic.write_json(out / STATE_FILE, {"version": 1, "files": dict(sorted(state.items())),
                                         "made": {k: made[k] for k in sorted(made)
                                                  if k in state}})


def check_output_dir(path: Path | str, songs: tuple = ()) -> None:
    """Refuse an unusable ``--tensor-output`` before anything is loaded or written: not a
    folder we can write, a folder of songs (``songs``: the folders they are read from), a
    training run's folder, a model folder or a checkpoint root."""
    from sidestep.data.paths import (other_use_folder_problem, output_dir_problem,
                                     songs_folder_problem)

    problem = (output_dir_problem(path, "--tensor-output")
               or songs_folder_problem(path, "--tensor-output", songs)
               or other_use_folder_problem(path, "--tensor-output"))
    if problem:
        raise PreprocessError(problem)


def _save_atomic(obj, path: Path) -> None:
    import torch

    from sidestep.config.atomic import fsync_dir

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave half a file behind
        raise
    fsync_dir(path.parent)
