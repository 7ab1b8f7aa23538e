"""``check-dataset``: find what would waste a training run before it starts.

Severity ``error`` means training on this folder would fail or skip the file (the command exits
2); ``warning`` means it trains, but probably not as the user wants; ``info`` is worth knowing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sidestep.data.audio import MIN_SECONDS
from sidestep.data.scan import (CLIP_FRACTION, SHORT_SECONDS, SILENCE_DBFS, AudioFacts,
                                FolderListing, TensorFacts, json_records, list_folder, audio_facts,
                                tensor_facts)

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Problem:
    file: str
    kind: str
    severity: str
    message: str


@dataclass
class CheckReport:
    folder: Path
    audio: list[AudioFacts] = field(default_factory=list)
    tensors: list[TensorFacts] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    cancelled: bool = False

    @property
    def usable(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)

    def to_json(self) -> dict:
        return {
            "version": 1, "folder": str(self.folder), "usable": self.usable,
            "audio_files": len(self.audio), "tensor_files": len(self.tensors),
            "problems": [asdict(p) for p in self.problems],
        }


def check_dataset(folder: Path | str, *, chunk_duration: float | None = None,
                  latent_width: int | None = None, cond_width: int | None = None,
                  on_file: Callable[[AudioFacts | TensorFacts, int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  listing: FolderListing | None = None) -> CheckReport:
    """Scan ``folder`` (audio, sidecars, dataset.json, ``.pt`` files) and list its problems.

    ``latent_width``/``cond_width``: the model's, when known; otherwise tensor files are
    compared with each other. ``on_file(facts, done, total)`` reports each file as it is read;
    ``listing``: the folder's files when the caller has listed them already.
    """
    root = Path(folder)
    report = CheckReport(folder=root)
    listing = listing or list_folder(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        report.problems.append(Problem(str(root), "not_a_folder" if root.exists() else "missing",
                                       ERROR, f"{root} {what}; give the folder that holds your "
                                              "audio files or your .pt files"))
        return report
    records = json_records(listing.dataset_json)
    total = len(listing.audio) + len(listing.tensors)
    for i, path in enumerate(listing.audio):
        if cancel and cancel():
            report.cancelled = True
            return report
        facts = audio_facts(path, records.get(str(path.resolve())))
        report.audio.append(facts)
        if on_file:
            on_file(facts, i + 1, total)
    for j, path in enumerate(listing.tensors):
        if cancel and cancel():
            report.cancelled = True
            return report
        facts = tensor_facts(path, latent_width, cond_width)
        report.tensors.append(facts)
        if on_file:
            on_file(facts, len(listing.audio) + j + 1, total)
    report.problems = problems_in(report, chunk_duration, latent_width, cond_width,
                                  listing.dataset_json)
    if listing.manifest_error:
        report.problems.insert(0, Problem(str(root / "manifest.json"), "bad_manifest", ERROR,
                                          listing.manifest_error))
    from sidestep.data.tensors import unfinished_note

    note = unfinished_note(root)
    if note:
        report.problems.append(Problem(str(root), "unfinished_preprocess", WARNING, note))
    return report


def problems_in(report: CheckReport, chunk_duration: float | None = None,
                latent_width: int | None = None, cond_width: int | None = None,
                dataset_json: Path | None = None) -> list[Problem]:
    """Every problem the facts show, files first in folder order, then the folder's own."""
    out: list[Problem] = []
    for a in report.audio:
        out.extend(audio_problems(a, chunk_duration))
    out.extend(_duplicates(report.audio))
    out.extend(_name_clashes(report.audio, report.folder))
    out.extend(_mixed_rates(report.audio, report.folder))
    out.extend(_dataset_json_problems(dataset_json))
    out.extend(_tensor_problems(report.tensors, latent_width, cond_width))
    if not report.audio and not report.tensors:
        out.append(Problem(str(report.folder), "no_data", ERROR,
                           f"{report.folder}: no audio files (.wav, .flac, .ogg, .mp3, .aiff, "
                           ".opus) and no .pt files found"))
    elif not any(a.ok for a in report.audio) and not any(t.ok for t in report.tensors):
        out.append(Problem(str(report.folder), "no_usable_files", ERROR,
                           f"{report.folder}: none of the files can be used"))
    return out


def audio_problems(a: AudioFacts, chunk_duration: float | None = None) -> list[Problem]:
    """One audio file's own problems (the browser shows these on its row)."""
    f = str(a.path)
    if a.error:
        kind = "empty" if "no audio samples" in a.error else "unreadable"
        return [Problem(f, kind, ERROR, f"{a.path.name}: {a.error}; fix or remove the file")]
    out = []
    if a.peak_dbfs is not None and a.peak_dbfs < SILENCE_DBFS:
        level = ("digital silence" if a.peak_dbfs == float("-inf")
                 else f"peak {a.peak_dbfs:.0f} dBFS")
        out.append(Problem(f, "silence", WARNING,
                           f"{a.path.name}: silent ({level}); it would teach the adapter "
                           "silence: remove it"))
    if a.clipped >= CLIP_FRACTION:
        out.append(Problem(f, "clipping", WARNING,
                           f"{a.path.name}: {a.clipped:.1%} of samples at full scale (clipped); "
                           "the adapter learns the distortion: use an unclipped master"))
    if a.duration < MIN_SECONDS:
        out.append(Problem(f, "too_short", ERROR,
                           f"{a.path.name}: only {a.duration:.2f} s long, too short to encode "
                           f"(at least {MIN_SECONDS} s): remove it"))
    elif a.duration < SHORT_SECONDS:
        out.append(Problem(f, "too_short", WARNING,
                           f"{a.path.name}: only {a.duration:.1f} s long; clips under "
                           f"{SHORT_SECONDS:.0f} s teach little about a song"))
    elif chunk_duration and a.duration < chunk_duration:
        out.append(Problem(f, "shorter_than_chunk", WARNING,
                           f"{a.path.name}: {a.duration:.1f} s, shorter than --chunk-duration "
                           f"{chunk_duration:g}; it is trained whole (a smaller batch "
                           "window), or lower --chunk-duration"))
    if a.sidecar_error:
        out.append(Problem(f, "bad_sidecar", ERROR if a.sidecar_fatal else WARNING,
                           a.sidecar_error + ("; fix the file, or build-dataset and preprocess "
                                              "skip this song" if a.sidecar_fatal else "")))
    elif not a.caption:
        out.append(Problem(f, "missing_sidecar", INFO,
                           f"{a.path.name}: no caption sidecar ({a.path.stem}.txt or .json); "
                           "the file name becomes its caption"))
    if a.lyrics and a.marked_instrumental:
        out.append(Problem(f, "lyrics_on_instrumental", WARNING,
                           f"{a.path.name}: has lyrics but is marked instrumental; remove the "
                           "lyrics or the instrumental mark, or the model learns both"))
    return out


def _duplicates(audio: list[AudioFacts]) -> list[Problem]:
    first: dict[str, AudioFacts] = {}
    out = []
    for a in audio:
        if not a.content_hash:
            continue
        if a.content_hash in first:
            out.append(Problem(str(a.path), "duplicate", WARNING,
                               f"{a.path.name}: the same audio as {first[a.content_hash].path.name}"
                               "; a duplicate is trained twice as often: remove one"))
        else:
            first[a.content_hash] = a
    return out


def _name_clashes(audio: list[AudioFacts], root: Path) -> list[Problem]:
    """Two songs that preprocessing would write to one ``.pt`` (``a.wav`` and ``a.flac``,
    ``my song.wav`` and ``my_song.wav``): it refuses the folder."""
    from sidestep.data.dataset_json import sample_id

    seen: dict[str, Path] = {}
    out = []
    for a in audio:
        key = sample_id(a.path, root)
        if key in seen:
            out.append(Problem(str(a.path), "name_clash", ERROR,
                               f"{a.path.name} and {seen[key].name} would both be preprocessed "
                               f"into {key}.pt: rename one"))
        else:
            seen[key] = a.path
    return out


def _mixed_rates(audio: list[AudioFacts], root: Path) -> list[Problem]:
    rates = Counter(a.sample_rate for a in audio if a.sample_rate)
    if len(rates) < 2:
        return []
    listed = ", ".join(f"{n} at {r} Hz" for r, n in rates.most_common())
    return [Problem(str(root), "mixed_sample_rates", INFO,
                    f"mixed sample rates ({listed}); all are resampled to 48 kHz, which is fine, "
                    "but a low rate caps the highest frequency the adapter can learn")]


def _dataset_json_problems(path: Path | None) -> list[Problem]:
    if path is None:
        return []
    from sidestep.data.dataset_json import DatasetError, load_dataset_json

    try:
        _meta, samples = load_dataset_json(path)
    except DatasetError as exc:
        return [Problem(str(path), "bad_dataset_json", ERROR, str(exc))]
    return [Problem(s.audio_path, "missing_audio", ERROR,
                    f"{path.name} lists {s.audio_path}, which does not exist; rebuild it with "
                    "build-dataset") for s in samples if not Path(s.audio_path).is_file()]


def _tensor_problems(tensors: list[TensorFacts], latent_width: int | None,
                     cond_width: int | None) -> list[Problem]:
    """Broken files, and files made for another model: against the model's widths when they
    are known, otherwise against what most of the folder's files have."""
    def usual(widths: list[int]) -> int | None:
        counts = Counter(w for w in widths if w)
        return counts.most_common(1)[0][0] if counts else None

    lat = latent_width or usual([t.latent_width for t in tensors if t.ok])
    cond = cond_width or usual([t.cond_width for t in tensors if t.ok])
    out = []
    for t in tensors:
        if (lat and t.latent_width and t.latent_width != lat) or (
                cond and t.cond_width and t.cond_width != cond):
            out.append(Problem(str(t.path), "latent_width", ERROR,
                               f"{t.path.name}: latent width {t.latent_width} and condition "
                               f"width {t.cond_width}, but the model needs {lat} and {cond}: it "
                               "was preprocessed for another model; preprocess it again"))
        elif t.error:
            out.append(Problem(str(t.path), "bad_tensor", ERROR, f"{t.path.name}: {t.error}"))
    return out
