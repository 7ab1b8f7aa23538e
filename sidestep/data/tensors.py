"""The training dataset: preprocessed ``.pt`` files, validated before training starts.

Files come from ``manifest.json`` when it lists them, otherwise from a scan of the folder.
Manifest entries are relative to the folder and must stay inside it, so a copied folder trains
on its own files; older manifests held absolute paths, which are taken by file name from the
folder. Every file is opened once with ``weights_only=True`` and checked (keys, shapes, dtypes,
finite values) so a bad file fails the run at the start with its name, not hours in.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

REQUIRED_KEYS = ("target_latents", "attention_mask", "encoder_hidden_states",
                 "encoder_attention_mask", "context_latents")


class DataError(ValueError):
    """A dataset problem; the message names the file and what to do."""


@dataclass(frozen=True)
class SampleInfo:
    path: Path
    frames: int
    cond_tokens: int
    caption: str = ""


def list_files(dataset_dir: Path | str) -> list[Path]:
    root = Path(dataset_dir)
    if not root.is_dir():
        from sidestep.config.resolve import DATASET_DIR_FIX, not_a_folder

        # a file said "not found" here and "is a file, not a folder" in resolve's check
        problem = not_a_folder(root, DATASET_DIR_FIX)
        if problem:
            raise DataError(problem)
        raise DataError(f"{root}: dataset folder not found (--dataset-dir should hold the "
                        "preprocessed .pt files)")
    manifest = root / "manifest.json"
    files: list[Path] = []
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            entries = data.get("samples") if isinstance(data, dict) else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{manifest}: not valid JSON ({exc}); fix or delete it (the folder "
                            "is scanned without it)") from None
        if entries is not None and not isinstance(entries, list):
            raise DataError(f"{manifest}: 'samples' should be a list of file names; fix or "
                            "delete it (the folder is scanned without it)")
        for entry in entries or ():
            files.append(_manifest_entry(root, manifest, str(entry)))
        if entries is not None:
            _refuse_unlisted(root, manifest, files)
    if not files:
        files = sorted(p for p in root.glob("*.pt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{root}: no .pt files found; preprocess your audio first "
                        "(`sidestep preprocess` or the --preprocess flag)")
    return files


def _refuse_unlisted(root: Path, manifest: Path, listed: list[Path]) -> None:
    """``.pt`` files the manifest does not list: finished tensors that a later preprocessing
    (other captions or settings) was stopped before it replaced. Training on them, or on the
    folder less them, is not what either run asked for."""
    names = {p.name for p in listed}
    stale = sorted(p.name for p in root.glob("*.pt")
                   if p.is_file() and not p.name.startswith(".") and p.name not in names)
    if not stale:
        return
    shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
    raise DataError(f"{root}: {len(stale)} of its .pt files ({shown}) are not in {manifest.name}, "
                    f"which lists {len(listed)}: they are left from an earlier preprocessing "
                    "whose rerun (other captions or settings) did not finish. Run the same "
                    "`sidestep preprocess` again to finish it, or move those files away")


def unfinished_note(dataset_dir: Path | str) -> str | None:
    """Songs a preprocessing of this folder took through its first pass only (it was stopped,
    or a song failed): they are not in the dataset until a rerun finishes them."""
    from sidestep.data.preprocess import PASS1_DIR

    try:
        half = sum(1 for p in (Path(dataset_dir) / PASS1_DIR).glob("*.pt") if p.is_file())
    except OSError:
        return None
    if not half:
        return None
    return (f"{dataset_dir}: preprocessing is unfinished ({half} songs half-done are not in the "
            "dataset); run the same `sidestep preprocess` again to finish it")


def not_tensor_files(files: list[Path]) -> list[Path]:
    """Of ``files``, those that are not torch.save archives at all (truncated, or something
    else under a .pt name): a cheap look at each file's end, not a load, so a form can ask it
    of 1,000 songs as it is typed."""
    import zipfile

    bad = []
    for f in files:
        try:
            ok = zipfile.is_zipfile(f)
        except OSError:
            ok = False
        if not ok:
            bad.append(f)
    return bad


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder``, judged on the paths as written and as resolved
    (a folder reached through a symlink is still itself)."""
    plain = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))
    return plain or path.resolve().is_relative_to(folder.resolve())


def _manifest_entry(root: Path, manifest: Path, entry: str) -> Path:
    """The file one manifest entry names, always inside ``root``."""
    p = Path(entry)
    if p.is_absolute() and not _inside(p, root):
        # An old manifest (absolute paths) in a copied or moved folder: the folder's own file.
        if (root / p.name).is_file():
            return root / p.name
        raise DataError(f"{manifest}: lists {entry}, which is outside the dataset folder {root} "
                        f"(and {root} has no {p.name}); put the file in the folder, or delete "
                        f"{manifest} to use the folder's .pt files")
    path = p if p.is_absolute() else root / p
    if not _inside(path, root):
        raise DataError(f"{manifest}: lists {entry}, which points outside the dataset folder "
                        f"{root}; entries must name files in the folder. Fix the entry, or "
                        f"delete {manifest} to use the folder's .pt files")
    if not path.is_file():
        raise DataError(f"{manifest}: lists {entry}, which is missing from {root}; restore it, "
                        f"or delete {manifest} to use the folder's .pt files")
    return path


def load_record(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot be loaded safely ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}). Re-run "
                        "preprocessing for this song.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def check_record(path: Path, data: dict, latent_dim: int, cond_dim: int) -> SampleInfo:
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; this is not a Side-Step/ACE-Step "
                        "preprocessed file (re-run preprocessing)")
    for key in REQUIRED_KEYS:
        if not torch.is_tensor(data[key]):
            raise DataError(f"{path}: '{key}' is not a tensor")
    lat, am = data["target_latents"], data["attention_mask"]
    ehs, eam = data["encoder_hidden_states"], data["encoder_attention_mask"]
    ctx = data["context_latents"]

    def bad(msg: str) -> DataError:
        return DataError(f"{path}: {msg}")

    if lat.dim() != 2 or lat.shape[1] != latent_dim:
        raise bad(f"target_latents has shape {tuple(lat.shape)}, expected [frames, {latent_dim}]")
    frames = lat.shape[0]
    if frames < 1:
        raise bad("target_latents has no frames")
    if am.dim() != 1 or am.shape[0] != frames:
        raise bad(f"attention_mask has shape {tuple(am.shape)}, expected [{frames}]")
    if ctx.dim() != 2 or ctx.shape != (frames, 2 * latent_dim):
        raise bad(f"context_latents has shape {tuple(ctx.shape)}, expected "
                  f"[{frames}, {2 * latent_dim}]")
    if ehs.dim() != 2 or ehs.shape[1] != cond_dim:
        raise bad(f"encoder_hidden_states has shape {tuple(ehs.shape)}, expected [tokens, "
                  f"{cond_dim}]; it was preprocessed for a different model size")
    if eam.dim() != 1 or eam.shape[0] != ehs.shape[0]:
        raise bad(f"encoder_attention_mask has shape {tuple(eam.shape)}, expected "
                  f"[{ehs.shape[0]}]")
    for key in ("target_latents", "encoder_hidden_states", "context_latents"):
        if not data[key].is_floating_point():
            raise bad(f"{key} has dtype {data[key].dtype}; expected a floating-point tensor")
        if not bool(torch.isfinite(data[key]).all()):
            raise bad(f"{key} contains NaN or infinite values; re-run preprocessing")
    for key in ("attention_mask", "encoder_attention_mask"):
        if data[key].is_complex():
            raise bad(f"{key} has dtype {data[key].dtype}")
    meta = data.get("metadata")
    caption = meta.get("caption", "") if isinstance(meta, dict) else ""
    return SampleInfo(path=path, frames=frames, cond_tokens=ehs.shape[0], caption=str(caption))


def validate(files: list[Path], latent_dim: int, cond_dim: int,
             progress: Callable[[int, int], None] | None = None) -> list[SampleInfo]:
    infos = []
    for i, path in enumerate(files):
        infos.append(check_record(path, load_record(path), latent_dim, cond_dim))
        if progress:
            progress(i + 1, len(files))
    return infos


class TensorDataset(Dataset):
    """Items are dicts of tensors plus ``file`` (its path, for error messages)."""

    def __init__(self, files: list[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        data = load_record(path)
        item = {k: data[k] for k in REQUIRED_KEYS}
        item["file"] = str(path)
        return item


def collate(items: list[dict]) -> dict:
    """Pad to the longest song (frames) and the longest condition (tokens) in the batch."""
    frames = max(it["target_latents"].shape[0] for it in items)
    tokens = max(it["encoder_hidden_states"].shape[0] for it in items)

    def pad(t: torch.Tensor, length: int, dtype=None) -> torch.Tensor:
        t = t if dtype is None else t.to(dtype)
        if t.shape[0] == length:
            return t
        shape = (length - t.shape[0],) + tuple(t.shape[1:])
        return torch.cat([t, t.new_zeros(shape)], dim=0)

    return {
        "target_latents": torch.stack([pad(it["target_latents"].float(), frames)
                                       for it in items]),
        "attention_mask": torch.stack([pad(it["attention_mask"], frames, torch.float32)
                                       for it in items]),
        "context_latents": torch.stack([pad(it["context_latents"].float(), frames)
                                        for it in items]),
        "encoder_hidden_states": torch.stack([pad(it["encoder_hidden_states"].float(), tokens)
                                              for it in items]),
        "encoder_attention_mask": torch.stack([pad(it["encoder_attention_mask"], tokens,
                                                   torch.float32) for it in items]),
        "files": [it["file"] for it in items],
    }


def random_window(batch: dict, frames: int,
                  generator: torch.Generator | list[torch.Generator] | None = None) -> dict:
    """Crop every song to a random ``frames``-long window of its valid frames (chunking)."""
    lengths = batch["attention_mask"].sum(dim=1).long()
    width = int(min(frames, int(lengths.max())))
    if width >= batch["target_latents"].shape[1]:
        return batch
    out = dict(batch)
    rows = []
    for i, length in enumerate(lengths.tolist()):
        span = max(length - width, 0)
        g = generator[i] if isinstance(generator, list) else generator  # or one per song
        start = int(torch.randint(0, span + 1, (1,), generator=g)) if span else 0
        rows.append(start)
    idx = torch.tensor(rows)[:, None] + torch.arange(width)[None, :]
    for key in ("target_latents", "context_latents"):
        t = batch[key]
        out[key] = torch.gather(t, 1, idx[:, :, None].expand(-1, -1, t.shape[-1]))
    out["attention_mask"] = torch.gather(batch["attention_mask"], 1, idx)
    return out


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch: a permutation seeded by (seed, epoch), resumable mid-epoch.

    The order never touches the global RNG, so a resumed run sees the same batches as an
    uninterrupted one. Call ``set_epoch`` before iterating. With ``world`` > 1 (data parallel)
    the epoch is cut into global batches of ``batch_size * world`` and rank ``rank`` takes its
    contiguous share of each, so the global batch sequence is that of one process with the
    larger batch. A rank whose share of a short last batch is empty repeats the batch's first
    song (every rank must take part in each step).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start = start_batch

    def positions(self, epoch: int) -> list[list[int]]:
        """This rank's batches as positions in the epoch's order (a repeated song gets a
        position past the end, so its random draws stay its own)."""
        step = self.batch_size * self.world
        out = []
        for first in range(0, self.size, step):
            n = min(step, self.size - first)
            base, extra = divmod(n, self.world)
            begin = first + self.rank * base + min(self.rank, extra)
            mine = list(range(begin, begin + base + (self.rank < extra)))
            out.append(mine or [first + self.size])
        return out

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        if self.world == 1:
            return [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        return [[order[p % self.size] for p in batch] for batch in self.positions(epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)[self.start:]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.size / (self.batch_size * self.world))
