"""A small summary of an audio file for the app to show: length, loudness, peak and a coarse
mel spectrogram (rows of dB values a terminal widget draws as coloured cells)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sidestep.data.audio import AudioError

N_MELS = 24
WIDTH = 64
N_FFT = 2048
FLOOR_DB = -100.0              # power floor (1e-10): what digital silence shows as
TOP_DB = 80.0                  # nothing is drawn more than this far below the loudest cell
MIN_LUFS_SECONDS = 0.4         # one gating block of BS.1770


@dataclass(frozen=True)
class AudioSummary:
    path: Path
    duration: float            # seconds
    sample_rate: int
    channels: int
    lufs: float | None         # integrated loudness; None for silence or under 0.4 s
    peak_dbfs: float | None    # None for digital silence
    mel_db: list[list[float]]  # n_mels rows (row 0 = lowest band) x up to `width` columns

    @property
    def silent(self) -> bool:
        return self.peak_dbfs is None


def describe_audio(path: Path | str, width: int = WIDTH, n_mels: int = N_MELS) -> AudioSummary:
    """Read ``path`` and summarise it. Raises :class:`AudioError` when it cannot be read."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(data).max())
    return AudioSummary(
        path=path, duration=data.shape[0] / float(rate), sample_rate=int(rate),
        channels=int(data.shape[1]), lufs=_loudness(data, rate),
        peak_dbfs=20 * math.log10(peak) if peak > 0 else None,
        mel_db=mel_grid(data.mean(axis=1), rate, width, n_mels))


def _loudness(data, rate: int) -> float | None:
    import pyloudnorm

    if data.shape[0] < MIN_LUFS_SECONDS * rate:
        return None
    block = data if data.shape[1] <= 5 else data.mean(axis=1, keepdims=True)  # BS.1770: <= 5
    value = pyloudnorm.Meter(rate).integrated_loudness(block.astype("float64"))
    return float(value) if math.isfinite(value) else None


def mel_grid(mono, rate: int, width: int = WIDTH, n_mels: int = N_MELS) -> list[list[float]]:
    """Mel power in dB of a mono signal, averaged (in power) into at most ``width`` columns;
    rounded to 0.1 dB and floored TOP_DB below the loudest cell."""
    import numpy as np
    import torch
    import torchaudio

    if width < 1 or n_mels < 1:
        raise ValueError("width and n_mels must be at least 1")
    x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    n_fft = min(N_FFT, max(16, 1 << (max(x.shape[0], 16) - 1).bit_length() - 1))
    # A hop for about four frames per column: a long file costs no more than a short one.
    hop = max(n_fft // 4, x.shape[0] // (4 * width) or 1)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=20.0,
        f_max=rate / 2, power=2.0, center=True)
    power = mel(x).double()                                  # [n_mels, frames]
    cols = min(width, power.shape[1])
    pooled = torch.nn.functional.adaptive_avg_pool1d(power[None], cols)[0]
    db = 10 * torch.log10(pooled.clamp_min(10 ** (FLOOR_DB / 10)))
    db = db.clamp_min(float(db.max()) - TOP_DB)
    return [[round(float(v), 1) for v in row] for row in db]
