"""``build-dataset``, ``preprocess`` and ``make-demo``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sidestep.cli.output import Out


def run_build_dataset(config, out: Out) -> int:
    from sidestep.data.dataset_json import DatasetError, build_dataset

    try:
        path, doc, warnings = build_dataset(config.input, tag=config.tag,
                                            tag_position=config.tag_position,
                                            genre_ratio=config.genre_ratio, name=config.name,
                                            output=config.output)
    except DatasetError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    for msg in warnings:
        out.warn(msg)
    n = len(doc["samples"])
    vocal = sum(1 for s in doc["samples"] if not s["is_instrumental"])
    out.info(f"wrote {path}: {n} songs ({vocal} with lyrics, {n - vocal} instrumental)")
    return EXIT_OK


def run_preprocess(config, out: Out) -> int:
    from sidestep.config.device import DeviceError, probe, resolve_device, resolve_precision
    from sidestep.data.audio import AudioError
    from sidestep.data.dataset_json import DatasetError
    from sidestep.data.dataset_json import samples_from
    from sidestep.data.preprocess import PreprocessError, check_output_dir, preprocess
    from sidestep.model.checkpoints import DiscoveryError
    from sidestep.model.loading import CheckpointError

    warnings: list[str] = []
    try:
        check_output_dir(config.tensor_output)  # before the slow parts
        info = probe()
        device = resolve_device(config.device, info)
        precision, note = resolve_precision(config.precision, device, info)
        if note:
            out.warn(note)
        meta, samples = samples_from(config.audio_dir, config.dataset_json, warnings)
        for msg in warnings:
            out.warn(msg)
        out.info(f"preprocessing {len(samples)} songs on {device} ({precision}) into "
                 f"{config.tensor_output}")
        t0 = time.monotonic()
        result = preprocess(
            samples, config.checkpoint_dir, config.model_variant, config.tensor_output,
            device=device, precision=precision, max_duration=config.max_duration,
            normalize=config.normalize, dataset_meta=meta.__dict__,
            tag_position=meta.tag_position, genre_ratio=meta.genre_ratio,
            progress=lambda phase, done, total, msg: out.info(
                f"[{phase} {done + (phase not in ('load', 'done'))}/{total}] {msg}"))
    except (DeviceError, DatasetError, PreprocessError, DiscoveryError, CheckpointError,
            AudioError) as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    for path, reason in result.failed:
        out.warn(f"failed: {path}: {reason}")
    out.info(f"wrote {len(result.written)} tensor files and {result.manifest} in "
             f"{time.monotonic() - t0:.1f} s")
    return EXIT_OK if result.written else EXIT_FAILED


def run_make_demo(args: argparse.Namespace, out: Out) -> int:
    from sidestep.demo import make_demo

    root = Path(args.dir)
    if root.exists() and any(root.iterdir()) and not args.force:
        out.error(f"{root} is not empty; pick a new folder or pass --force")
        return EXIT_BAD_INPUT
    t0 = time.monotonic()
    if args.clips < 1:
        out.error("--clips must be at least 1")
        return EXIT_BAD_INPUT
    make_demo(root, seed=args.seed, clips=args.clips,
              progress=lambda msg: out.info(f"[{time.monotonic() - t0:5.1f}s] {msg}"))
    out.info(f"demo written to {root}: checkpoints/ audio/ tensors/")
    return EXIT_OK
