"""Audio in: decode (soundfile), make stereo, resample to 48 kHz (torchaudio), normalise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 48_000
MIN_SECONDS = 0.5                      # shorter audio is too short for the VAE to encode
LATENT_HOP = 1920                      # VAE samples per latent frame
LATENT_RATE = SAMPLE_RATE / LATENT_HOP  # 25 frames per second
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
PEAK_TARGET_DBFS = -1.0
LUFS_TARGET = -14.0


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def audio_info(path: Path | str) -> tuple[float, int, int]:
    """(duration seconds, sample rate, channels) from the header only."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
    return info.frames / float(info.samplerate), info.samplerate, info.channels


def load_audio(path: Path | str, max_duration: float | None = None,
               normalize: str = "none"):
    """[2, samples] float32 torch tensor at 48 kHz."""
    import soundfile as sf
    import torch

    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode ({exc}). Convert it to WAV or FLAC.") from None
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if data.shape[0] < MIN_SECONDS * rate:
        raise AudioError(f"{path}: only {data.shape[0] / rate:.2f} s long; the VAE needs at "
                         f"least {MIN_SECONDS} s. Remove it or use a longer clip.")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))  # [channels, samples]
    if audio.shape[0] == 1:
        audio = audio.repeat(2, 1)
    elif audio.shape[0] > 2:
        audio = audio[:2]
    if max_duration and max_duration > 0:
        audio = audio[:, : int(round(max_duration * rate))]
    if rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        audio = AF.resample(audio, rate, SAMPLE_RATE)
    return normalize_audio(audio, normalize, path)


def normalize_audio(audio, mode: str, path: Path | str = "audio"):
    """``none``, ``peak`` (-1 dBFS) or ``lufs`` (-14 LUFS integrated, then peak-limited)."""
    import torch

    if mode == "none":
        return audio
    if mode == "peak":
        peak = float(audio.abs().max())
        if peak <= 0:
            return audio
        return audio * (10 ** (PEAK_TARGET_DBFS / 20) / peak)
    if mode == "lufs":
        import pyloudnorm

        meter = pyloudnorm.Meter(SAMPLE_RATE)
        block = audio.T.double().numpy()
        if block.shape[0] < int(0.4 * SAMPLE_RATE):
            raise AudioError(f"{path}: too short for LUFS normalisation (needs 0.4 s); use "
                             "--normalize peak")
        loudness = meter.integrated_loudness(block)
        if not np.isfinite(loudness):  # digital silence
            return audio
        out = audio * float(10 ** ((LUFS_TARGET - loudness) / 20))
        peak = float(out.abs().max())
        ceiling = 10 ** (PEAK_TARGET_DBFS / 20)
        if peak > ceiling:  # never clip: a gain increase stops at -1 dBFS
            out = out * (ceiling / peak)
        return out.to(torch.float32)
    raise AudioError(f"unknown normalisation {mode!r}; use none, peak or lufs")


def find_audio(root: Path | str) -> list[Path]:
    """Audio files under ``root``, skipping hidden files and everything in hidden folders
    (``.venv``, ``.git``, a DAW's ``.stems``): not the user's songs."""
    import os

    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # not walked at all
        found.extend(Path(folder) / f for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(found)


def write_wav(path: Path | str, audio, rate: int = SAMPLE_RATE) -> None:
    """[channels, samples] float array or tensor -> 16-bit PCM WAV."""
    import soundfile as sf

    arr = audio.numpy() if hasattr(audio, "numpy") else np.asarray(audio)
    sf.write(str(path), np.ascontiguousarray(arr.T), rate, subtype="PCM_16")
