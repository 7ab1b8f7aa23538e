"""What is in a dataset folder, file by file: the facts the browser lists and the check reads.

Every function here reports a problem in the returned facts instead of raising, so one bad file
shows as a row with a reason rather than ending a scan of 500 songs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from sidestep.data.audio import LATENT_RATE, find_audio

SILENCE_DBFS = -60.0        # a peak below this is silence for training purposes
CLIP_LEVEL = 0.999          # |sample| at or above this is at full scale
CLIP_FRACTION = 0.001       # more than 0.1 % of samples at full scale: audibly clipped
SHORT_SECONDS = 5.0         # a clip this short teaches the model little about a song
LUFS_MIN_SECONDS = 0.4      # the BS.1770 gating block


@dataclass
class AudioFacts:
    path: Path
    duration: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    peak_dbfs: float | None = None     # None: not decoded
    lufs: float | None = None          # None: too short, silent or not decoded
    clipped: float = 0.0               # fraction of samples at full scale
    content_hash: str = ""             # of the decoded samples: same audio, any file name
    caption: bool = False              # a sidecar gives a caption
    lyrics: bool = False               # a sidecar gives lyrics
    marked_instrumental: bool = False  # a sidecar or dataset.json says instrumental
    sidecar_error: str = ""            # a sidecar that cannot be read
    sidecar_fatal: bool = False        # ... so that build-dataset and preprocess skip the song
    error: str = ""                    # the audio cannot be used at all

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class TensorFacts:
    path: Path
    frames: int = 0
    tokens: int = 0
    latent_width: int = 0
    cond_width: int = 0
    caption: str = ""
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / LATENT_RATE

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class FolderListing:
    """The dataset files under a folder, before any of them is opened."""
    root: Path
    audio: list[Path] = field(default_factory=list)
    tensors: list[Path] = field(default_factory=list)
    dataset_json: Path | None = None
    manifest_error: str = ""       # manifest.json names files training could not use


def list_folder(root: Path | str) -> FolderListing:
    root = Path(root)
    listing = FolderListing(root=root)
    if not root.is_dir():
        return listing
    listing.audio = find_audio(root)
    listing.tensors = sorted(p for p in root.glob("*.pt")
                             if p.is_file() and not p.name.startswith("."))
    if (root / "manifest.json").is_file():  # training reads what the manifest lists: so do we
        from sidestep.data.tensors import DataError, list_files

        try:
            listing.tensors = list_files(root)
        except DataError as exc:
            listing.manifest_error = str(exc)
    if (root / "dataset.json").is_file():
        listing.dataset_json = root / "dataset.json"
    return listing


def audio_facts(path: Path, record: dict | None = None) -> AudioFacts:
    """Decode one file and measure it. ``record``: its entry in dataset.json, if any."""
    import soundfile as sf

    facts = AudioFacts(path=path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError or its own LibsndfileError
        facts.error = f"cannot read the audio header ({_first_line(exc)})"
        return facts
    facts.sample_rate, facts.channels = int(info.samplerate), int(info.channels)
    facts.duration = info.frames / float(info.samplerate) if info.samplerate else 0.0
    _sidecar_facts(facts, record or {})
    if info.frames == 0:
        facts.error = "contains no audio samples"
        return facts
    try:
        data, _rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        facts.error = f"cannot decode it ({_first_line(exc)}); convert it to WAV or FLAC"
        return facts
    if data.size == 0:
        facts.error = "contains no audio samples"
        return facts
    if not np.isfinite(data).all():
        facts.error = "contains NaN or infinite samples"
        return facts
    peak = float(np.abs(data).max())
    facts.peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    facts.clipped = float((np.abs(data) >= CLIP_LEVEL).mean())
    facts.content_hash = hashlib.blake2b(np.ascontiguousarray(data).tobytes(),
                                         digest_size=16).hexdigest()
    if facts.duration >= LUFS_MIN_SECONDS and peak > 0:
        facts.lufs = _loudness(data, facts.sample_rate)
    return facts


def _loudness(data: np.ndarray, rate: int) -> float | None:
    import pyloudnorm

    try:
        value = pyloudnorm.Meter(rate).integrated_loudness(data.astype(np.float64))
    except ValueError:
        return None
    return float(value) if math.isfinite(value) else None


def _sidecar_facts(facts: AudioFacts, record: dict) -> None:
    from sidestep.data.dataset_json import DatasetError, read_sidecars

    stem = facts.path.with_suffix("")
    warnings: list[str] = []
    try:
        fields = read_sidecars(facts.path, warnings)
    except DatasetError as exc:
        facts.sidecar_error, facts.sidecar_fatal = str(exc), True
        fields = {}
    if warnings and not facts.sidecar_error:
        facts.sidecar_error = warnings[0]
    lyrics = str(fields.get("lyrics") or record.get("lyrics") or "").strip()
    tagged = lyrics.lower().startswith("[instrumental]")
    facts.lyrics = bool(lyrics) and not (tagged and len(lyrics.splitlines()) == 1)
    facts.caption = bool(fields.get("caption") or fields.get("genre"))
    marked = record.get("is_instrumental") is True or tagged
    js = Path(f"{stem}.json")
    if js.is_file() and not facts.sidecar_error:
        try:
            raw = json.loads(js.read_text(encoding="utf-8"))
            marked = marked or any(raw.get(k) is True for k in ("is_instrumental", "instrumental"))
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
    caption = str(fields.get("caption") or "") + " " + str(fields.get("genre") or "")
    facts.marked_instrumental = marked or "instrumental" in caption.lower()


def tensor_facts(path: Path, latent_width: int | None = None,
                 cond_width: int | None = None) -> TensorFacts:
    """Open one ``.pt`` and check it as training will. Widths: what the model expects (None:
    take the file's own, so the check can compare files with each other afterwards)."""
    import torch

    from sidestep.data.tensors import DataError, check_record, load_record

    facts = TensorFacts(path=path)
    try:
        data = load_record(path)
        lat, ehs = data.get("target_latents"), data.get("encoder_hidden_states")
        if torch.is_tensor(lat) and lat.dim() == 2:
            facts.frames, facts.latent_width = int(lat.shape[0]), int(lat.shape[1])
        if torch.is_tensor(ehs) and ehs.dim() == 2:
            facts.tokens, facts.cond_width = int(ehs.shape[0]), int(ehs.shape[1])
        info = check_record(path, data, latent_width or facts.latent_width,
                            cond_width or facts.cond_width)
        facts.caption = info.caption
    except DataError as exc:
        facts.error = str(exc).removeprefix(f"{path}: ")
    return facts


def json_records(dataset_json: Path | None) -> dict[str, dict]:
    """Audio path (resolved) -> its dataset.json record; {} when there is none or it is
    unreadable (the check reports that separately)."""
    if dataset_json is None:
        return {}
    try:
        doc = json.loads(dataset_json.read_text(encoding="utf-8"))
        records = {}
        for rec in doc.get("samples", []):
            path = Path(rec["audio_path"])
            if not path.is_absolute():
                path = dataset_json.parent / path
            records[str(path.resolve())] = rec
        return records
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
