"""Checks on output paths, run before anything is written.

A mistyped output path should cost the user one clear line, not a traceback half-way through a
job with some files already replaced. Each check returns a message naming the path and the fix,
or None; callers raise their own error type so the CLI and the trainer report it as bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

from sidestep.config.paths import same_place


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (as a file, folder or link)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _ancestor_problem(path: Path, flag: str, start: Path) -> str | None:
    anc = _nearest_existing(start)
    if not anc.is_dir():
        return (f"{flag} {path}: {anc} is a file, not a folder, so nothing can be written "
                f"there; choose a path in a folder")
    if not _writable(anc):
        if _read_only_mount(anc):  # no permission change helps there
            return (f"{flag} {path}: {anc} is on a read-only file system; choose a folder on "
                    "a writable disk")
        return (f"{flag} {path}: no permission to write in {anc}; choose a folder you can "
                f"write to, or fix its permissions")
    return None


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs on Windows)
        return False


def output_file_problem(path: Path | str, flag: str, example_name: str,
                        replace: bool = True, default: bool = False) -> str | None:
    """Why a file cannot be written at ``path``: it must be named like ``example_name``
    (``dataset.json``: a *.json file, so a slip can never turn a song or a checkpoint into
    JSON), its folder must exist (a typo must not make folders anywhere), and an existing file
    is replaced only with ``replace``. ``default``: the path is the command's default, not one
    given with ``flag``."""
    path = Path(path)
    name = f"{path} (the default {flag})" if default else f"{flag} {path}"
    if path.is_dir():
        return (f"{name} is a folder; give a file path such as "
                f"{path / example_name}")
    suffix = Path(example_name).suffix
    if suffix and path.suffix.lower() != suffix:
        return (f"{flag} {path}: the file written is {suffix[1:].upper()}; give a path ending "
                f"in {suffix}, such as {path.parent / example_name}")
    if os.path.lexists(path) and not path.is_file():
        return f"{name} exists and is not a regular file; choose another file name"
    if path.is_file() and not replace:
        if default:  # the user typed no --output: do not quote one back at them
            return (f"{path} already exists (the default {flag}); pass --force to replace it "
                    f"or {flag} to write elsewhere")
        return (f"{flag} {path} already exists; pass --force to replace it, or choose another "
                "file name")
    if not path.parent.exists():
        return (f"{flag} {path}: the folder {path.parent} does not exist; create it first, or "
                "fix the path")
    return _ancestor_problem(path, flag, path.parent)


def output_dir_problem(path: Path | str, flag: str) -> str | None:
    """Why ``path`` cannot be used (and created if missing) as an output folder."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        return (f"{flag} {path} is a file, not a folder; give a folder path (it is created "
                f"if missing), or move that file away")
    return _ancestor_problem(path, flag, path) or _creation_problem(path, flag)


def cannot_create(path: Path | str, flag: str, exc: OSError) -> str:
    """The one line for a folder that could not be made (the pre-flight's try, or the run's
    own mkdir when the disk changed in between)."""
    return (f"{flag} {path}: cannot create this folder ({exc.strerror or exc}); choose a "
            "folder on a disk you can write to")


def _creation_problem(path: Path, flag: str) -> str | None:
    """Make the missing folders of ``path`` and take them away again: permission bits say
    yes to root everywhere, and /proc or a full or odd mount refuses only the real mkdir."""
    missing = []
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    made = []
    try:
        for folder in reversed(missing):
            os.mkdir(folder)
            made.append(folder)
    except FileExistsError:  # made meanwhile by someone else: it can be
        pass
    except OSError as exc:
        return cannot_create(path, flag, exc)
    finally:
        for folder in reversed(made):  # only what this check made, and only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                pass
    return None


def _separate_folder(path: Path) -> Path:
    """A sibling to suggest in place of ``path``."""
    return path.parent / "tensors" if path.name != "tensors" else path.parent / "tensors-pt"


_RUN_FILES = ("run.json", "events.jsonl", "training_state.pt", "adapter_config.json")


def _model_folder(folder: Path) -> bool:
    """A model folder of a checkpoint root: its config.json and safetensors weights."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def other_use_folder_problem(path: Path | str, flag: str) -> str | None:
    """Why ``path`` must not take generated files: it belongs to something else the user
    keeps, a training run (or one of its checkpoints or adapters), a model folder or a
    checkpoint root. Files dropped there are clutter at best, and a later run, resume or model
    scan would trip over them."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        what = None
        marker = next((n for n in _RUN_FILES if (path / n).is_file()), None)
        if marker:
            what = f"belongs to a training run (it holds {marker})"
        elif _model_folder(path):
            what = "is a model folder (config.json and .safetensors weights)"
        else:
            models = sorted(d.name for d in path.iterdir() if d.is_dir() and _model_folder(d))
            if models:
                what = (f"is a checkpoint folder (model folders {', '.join(models[:2])}"
                        f"{', ...' if len(models) > 2 else ''})")
    except OSError:
        return None  # unreadable: the write itself will say so
    if what is None:
        return None
    return (f"{flag} {path} {what}; the .pt files and manifest.json would be mixed into it. "
            f"Give a separate folder, such as {_separate_folder(path)}")


def songs_folder_problem(path: Path | str, flag: str, songs: tuple = ()) -> str | None:
    """Why ``path`` must not take generated files: it is a folder of songs (one of ``songs``,
    or audio files lie in it). Bookkeeping next to the user's audio is clutter that a later
    scan, copy or sync trips over; a folder of earlier output (.pt files) is fine."""
    from sidestep.data.audio import AUDIO_EXTENSIONS

    path = Path(path)
    if not path.is_dir():
        return None
    try:
        audio = sorted(p.name for p in path.iterdir()
                       if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))
    except OSError:
        return None  # unreadable: the write itself will say so
    if not audio and not any(same_place(path, s) for s in songs if s):
        return None
    what = (f"holds audio files ({', '.join(audio[:2])}{', ...' if len(audio) > 2 else ''})"
            if audio else "is the songs folder")
    return (f"{flag} {path} {what}; the .pt files, manifest.json and bookkeeping would be "
            f"written among your songs. Give a separate folder, such as "
            f"{_separate_folder(path)}")
