"""Crash-safe file writes: write a sibling temp file, fsync it, rename over the target."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def give_default_mode(path: Path) -> None:
    """The mode any new file of this process gets (libraries that write through a private
    temporary file leave 0600, which another user, e.g. ComfyUI's, cannot read)."""
    os.chmod(path, _FILE_MODE)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``. An OSError names ``path``, never the temp file: the user
    knows the one, not the other (``.p.json.nm6ad57z.tmp: Read-only file system``)."""
    path = Path(path)
    if path.is_symlink():  # the file the link names is the one meant; the link stays
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, f"{path.parent} is a file, not a folder",
                                 str(path)) from None
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        # mkstemp makes the file 0600; the result gets the mode any other new file would
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _about(exc, path) from None
        raise
    fsync_dir(path.parent)


def _about(exc: OSError, path: Path) -> OSError:
    """The same error (class, errno, reason) about ``path``."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
