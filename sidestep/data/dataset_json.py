"""``dataset.json``: one record per song (caption, lyrics, BPM, key, ...), built from sidecars.

Sidecar files next to ``song.wav`` (all optional):

- ``song.txt``: either plain text (the caption) or ``key: value`` lines (``caption``, ``genre``,
  ``bpm``, ``key``/``keyscale``, ``timesignature``, ``language``); a ``lyrics:`` line starts the
  lyrics, which run to the end of the file;
- ``song.lyrics.txt`` (or ``song_lyrics.txt``): the lyrics;
- ``song.json``: the same fields as a JSON object.

Songs without lyrics are instrumentals (``[Instrumental]``).
"""

from __future__ import annotations

import codecs
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sidestep.data.audio import MIN_SECONDS, AudioError, audio_info, find_audio

INSTRUMENTAL = "[Instrumental]"
_KEY_ALIASES = {
    "caption": "caption", "prompt": "caption", "description": "caption",
    "genre": "genre", "genres": "genre", "tags": "genre", "style": "genre",
    "bpm": "bpm", "tempo": "bpm",
    "key": "keyscale", "keyscale": "keyscale", "key_scale": "keyscale",
    "timesignature": "timesignature", "time_signature": "timesignature", "meter": "timesignature",
    "language": "language", "lang": "language", "vocal_language": "language",
    "lyrics": "lyrics",
}


class DatasetError(ValueError):
    pass


@dataclass
class Sample:
    id: str
    audio_path: str
    filename: str
    caption: str = ""
    genre: str = ""
    lyrics: str = ""
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float = 0.0
    language: str = "instrumental"
    is_instrumental: bool = True
    labeled: bool = True
    custom_tag: str = ""

    def training_caption(self, tag_position: str = "prepend", use_genre: bool = False) -> str:
        base = self.genre if (use_genre and self.genre) else self.caption
        tag = self.custom_tag.strip()
        if not tag:
            return base
        if tag_position == "replace" or not base:
            return tag
        return f"{base}, {tag}" if tag_position == "append" else f"{tag}, {base}"

    def lyrics_text(self) -> str:
        return self.lyrics.strip() or INSTRUMENTAL


@dataclass
class DatasetMeta:
    name: str = "local_dataset"
    custom_tag: str = ""
    tag_position: str = "prepend"
    genre_ratio: int = 0
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    num_samples: int = 0


def _parse_kv_text(text: str) -> dict[str, Any]:
    """``key: value`` sidecar; plain text (no known key on the first line) is the caption."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    m = re.match(r"^\s*([A-Za-z_ ]+)\s*:", first)
    if not m or m.group(1).strip().lower().replace(" ", "_") not in _KEY_ALIASES:
        return {"caption": text.strip()}
    out: dict[str, Any] = {}
    for i, line in enumerate(lines):
        m = re.match(r"^\s*([A-Za-z_ ]+)\s*:\s*(.*)$", line)
        if not m:
            continue
        key = _KEY_ALIASES.get(m.group(1).strip().lower().replace(" ", "_"))
        if key is None:
            continue
        if key == "lyrics":
            rest = [m.group(2)] + lines[i + 1:]
            out["lyrics"] = "\n".join(rest).strip()
            break
        out[key] = m.group(2).strip()
    return out


# UTF-32's marks first: UTF-16's little-endian one begins UTF-32's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _read_text(path: Path, warnings: list[str] | None) -> str:
    """A sidecar's text: UTF-8, or UTF-16/32 with their byte-order mark (Windows editors'
    "Unicode"). Bytes that are not UTF-8 become U+FFFD, with a warning naming the file: a
    garbled caption silently trained into an adapter is worse than a loud one."""
    data = path.read_bytes()
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break  # not that after all: read as UTF-8 below, with its warning
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if warnings is not None:
            warnings.append(f"{path}: not valid UTF-8 (byte {exc.start}); unreadable characters "
                            "were replaced with U+FFFD in the caption/lyrics. Re-save the file "
                            "as UTF-8 and run this again.")
        return data.decode("utf-8-sig", errors="replace")


def read_sidecars(audio: Path, warnings: list[str] | None = None) -> dict[str, Any]:
    """Fields from ``audio``'s sidecar files; text-decoding problems go to ``warnings``."""
    fields: dict[str, Any] = {}
    stem = audio.with_suffix("")  # "mix v1.2" of "mix v1.2.wav": name sidecars by adding to it
    js = Path(f"{stem}.json")
    if js.is_file():
        try:
            data = json.loads(js.read_bytes())  # (UTF-8, or UTF-16/32 by their marks)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{js}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{js}: expected a JSON object")
        for k, v in data.items():
            key = _KEY_ALIASES.get(str(k).lower())
            if key:
                fields[key] = v
    txt = Path(f"{stem}.txt")
    if txt.is_file():
        fields.update(_parse_kv_text(_read_text(txt, warnings)))
    for lyr in (Path(f"{stem}.lyrics.txt"), Path(f"{stem}_lyrics.txt")):
        if lyr.is_file():
            fields["lyrics"] = _read_text(lyr, warnings).strip()
    if "bpm" in fields:  # a bad tempo is left out, not the song with it
        try:
            _bpm(fields["bpm"], "")
        except DatasetError as exc:
            del fields["bpm"]
            if warnings is not None:
                warnings.append(f"{audio}: sidecar{exc}; the song is kept without a tempo "
                                "(fix the sidecar to give it one)")
    return fields


def _bpm(value: Any, where: str) -> int | None:
    if value in (None, "", "N/A"):
        return None
    try:
        bpm = int(round(float(str(value).split()[0])))
    except (ValueError, IndexError, OverflowError):
        raise DatasetError(f"{where}: bpm {value!r} is not a number") from None
    if not 20 <= bpm <= 400:
        raise DatasetError(f"{where}: bpm {bpm} is outside 20-400")
    return bpm


def sample_id(audio: Path, root: Path) -> str:
    """The song's id, which names its ``.pt``: the path under the root, made file-name safe
    (so ``my song.wav`` and ``my_song.wav`` collide, which preprocessing refuses)."""
    import unicodedata

    rel = audio.relative_to(root)
    # letters and digits of any script stay (Japanese or Cyrillic names all became "_"); NFC
    # first, so an accent macOS stores apart from its letter stays with it
    name = unicodedata.normalize("NFC", str(rel.with_suffix("")))
    return re.sub(r"[^\w.-]+", "_", name)


def sample_for(audio: Path, root: Path, tag: str = "",
               warnings: list[str] | None = None) -> Sample:
    duration, _rate, _ch = audio_info(audio)
    if duration < MIN_SECONDS:  # preprocessing would fail it on every run
        raise DatasetError(f"{audio}: only {duration:.2f} s long; the VAE needs at least "
                           f"{MIN_SECONDS} s. Remove it or use a longer clip.")
    fields = read_sidecars(audio, warnings)
    lyrics = str(fields.get("lyrics") or "").strip()
    if lyrics.lower() in ("[instrumental]", "instrumental"):
        lyrics = ""
    sid = sample_id(audio, root)
    return Sample(
        id=sid, audio_path=str(audio.resolve()), filename=audio.name,
        caption=str(fields.get("caption") or audio.stem.replace("_", " ")),
        genre=str(fields.get("genre") or ""), lyrics=lyrics,
        bpm=_bpm(fields.get("bpm"), str(audio)),
        keyscale=str(fields.get("keyscale") or ""),
        timesignature=str(fields.get("timesignature") or ""),
        duration=round(duration, 3),
        language=str(fields.get("language") or ("instrumental" if not lyrics else "unknown")),
        is_instrumental=not lyrics, custom_tag=tag,
    )


def default_output(input_dir: Path | str) -> Path:
    """Where ``build-dataset`` writes without ``--output``: the songs folder's dataset.json."""
    return Path(input_dir) / "dataset.json"


def build_dataset(input_dir: Path | str, *, tag: str = "", tag_position: str = "prepend",
                  genre_ratio: int = 0, name: str = "local_dataset",
                  output: Path | str | None = None,
                  replace: bool = False) -> tuple[Path, dict[str, Any], list[str]]:
    """Scan ``input_dir`` and write dataset.json.

    Returns (path, document, warnings): songs skipped (``skipped: ...``) and sidecar problems.
    The output path is checked before the scan, so a bad one changes nothing; an existing file
    (captions the user edited) is replaced only with ``replace``.
    """
    from sidestep.config import atomic
    from sidestep.data.paths import output_file_problem

    root = Path(input_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: input folder not found" if not root.exists() else
                           f"{root}: is a file; give the folder that holds the audio files")
    out = Path(output) if output else default_output(root)
    problem = output_file_problem(out, "--output", "dataset.json", replace=replace,
                                  default=not output)
    if problem:
        raise DatasetError(problem)
    files = find_audio(root)
    if not files:
        raise DatasetError(f"{root}: no audio files found (looked for .wav, .flac, .ogg, "
                           ".mp3, .aiff, .opus)")
    samples, skipped, warnings = [], [], []
    for f in files:
        try:
            samples.append(sample_for(f, root, tag, warnings))
        except (AudioError, DatasetError) as exc:
            skipped.append(str(exc))
    if not samples:
        raise DatasetError(f"{root}: none of the {len(files)} audio files could be read: "
                           f"{skipped[0]}")
    meta = DatasetMeta(name=name, custom_tag=tag, tag_position=tag_position,
                       genre_ratio=genre_ratio, num_samples=len(samples))
    doc = {"metadata": asdict(meta), "samples": [asdict(s) for s in samples]}
    try:
        atomic.write_json(out, doc)
    except OSError as exc:  # what the check cannot foresee (read-only mount, disk full, ...)
        raise DatasetError(f"--output {out}: cannot write it ({exc.strerror or exc}); choose "
                           "another path") from None
    return out, doc, [f"skipped: {m}" for m in skipped] + warnings


def load_dataset_json(path: Path | str, audio_dir: Path | str | None = None,
                      ) -> tuple[DatasetMeta, list[Sample]]:
    """``audio_dir`` (``--audio-dir`` next to a dataset.json: the songs were moved to another
    machine or folder): each song is taken from there, under its path as written when relative,
    else under its file name; one not found there keeps the dataset.json's path."""
    path = Path(path)
    moved_to = Path(audio_dir) if audio_dir else None
    if moved_to is not None and not moved_to.is_dir():
        raise DatasetError(f"{moved_to}: audio folder not found (--audio-dir)")
    try:
        doc = json.loads(path.read_bytes())  # (UTF-8 with or without its mark, UTF-16/32)
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder; give its dataset.json (`sidestep "
                           "build-dataset` writes one)") from None
    except OSError as exc:  # unreadable: permissions, I/O
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        raise DatasetError(f"{path}: expected an object with a 'samples' list")
    meta_raw = doc.get("metadata") or {}
    meta = DatasetMeta(**{k: v for k, v in meta_raw.items()
                          if k in DatasetMeta.__dataclass_fields__})
    samples = []
    known = Sample.__dataclass_fields__
    for i, raw in enumerate(doc["samples"]):
        if not isinstance(raw, dict) or "audio_path" not in raw:
            raise DatasetError(f"{path}: samples[{i}] needs an 'audio_path'")
        rec = {k: v for k, v in raw.items() if k in known}
        rec.setdefault("id", Path(raw["audio_path"]).stem)
        rec.setdefault("filename", Path(raw["audio_path"]).name)
        audio = Path(rec["audio_path"])
        there = moved_to / (audio.name if audio.is_absolute() else audio) if moved_to else None
        if there is not None and there.is_file():
            rec["audio_path"] = str(there.resolve())
        elif not audio.is_absolute():
            rec["audio_path"] = str((path.parent / audio).resolve())
        rec["bpm"] = _bpm(rec.get("bpm"), f"{path}: samples[{i}]")
        rec.setdefault("custom_tag", meta.custom_tag)
        samples.append(Sample(**rec))
    return meta, samples


def genre_indices(count: int, genre_ratio: int, seed: int = 42) -> set[int]:
    """Which samples use their genre instead of the caption (a seeded, fixed choice)."""
    chosen = list(range(count))
    random.Random(seed).shuffle(chosen)
    return set(chosen[: int(count * genre_ratio / 100)])


def _left_out(root: Path, dataset_json: str, samples: list[Sample]) -> list[str]:
    """Songs in ``root`` that the given dataset.json does not list: not encoded, unsaid."""
    listed = {os.path.normcase(os.path.realpath(s.audio_path)) for s in samples}
    left = [f for f in find_audio(root) if os.path.normcase(os.path.realpath(f)) not in listed]
    if not left:
        return []
    names = ", ".join(str(f.relative_to(root)) for f in left[:3]) + \
        (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return [f"{len(left)} audio file{'s' if len(left) > 1 else ''} in {root} "
            f"{'are' if len(left) > 1 else 'is'} not in {dataset_json} and will not be encoded "
            f"({names}); to include them, run `sidestep build-dataset --input {root} --force` "
            "again (it replaces that dataset.json: copy any captions you edited first), or leave "
            "out --dataset-json to read the songs' sidecars"]


def samples_from(audio_dir: str | None, dataset_json: str | None,
                 warnings: list[str] | None = None):
    """(meta, samples) from a dataset.json, or by scanning a folder and its sidecars (whose
    decoding problems are appended to ``warnings``)."""
    if dataset_json:
        meta, samples = load_dataset_json(dataset_json, audio_dir)
        if warnings is not None and audio_dir and Path(audio_dir).is_dir():
            warnings.extend(_left_out(Path(audio_dir), dataset_json, samples))
        return meta, samples
    root = Path(audio_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: audio folder not found")
    files = find_audio(root)
    if not files:
        raise DatasetError(f"{root}: no audio files found")
    samples, skipped = [], []
    for f in files:  # one unreadable song must not stop the others
        try:
            samples.append(sample_for(f, root, warnings=warnings))
        except (AudioError, DatasetError) as exc:
            skipped.append(str(exc))
    if not samples:
        raise DatasetError(f"{root}: none of the {len(files)} audio files could be read: "
                           f"{skipped[0]}")
    if warnings is not None:
        warnings.extend(f"skipped: {m}" for m in skipped)
        labelled = root / "dataset.json"
        if labelled.is_file():  # a build-dataset's captions, lyrics and BPM, left unread
            warnings.append(f"{labelled} is not used: each song's caption and lyrics come from "
                            f"its sidecar files; give --dataset-json {labelled} to use it")
    return DatasetMeta(name=root.name, num_samples=len(samples)), samples
