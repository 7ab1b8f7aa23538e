"""``sidestep gpu`` and ``sidestep vram-estimate``."""

from __future__ import annotations

import argparse

from sidestep.cli import EXIT_BAD_INPUT, EXIT_OK
from sidestep.cli.output import Out


def run_gpu(args: argparse.Namespace, out: Out) -> int:
    from sidestep.config.profiles import detect_gpus
    from sidestep.config.vram import GIB_MIB, pick_profile

    gpus = detect_gpus()
    suggested = pick_profile(gpus[0]["total_mib"]) if gpus else None
    if args.json:
        out.json({"gpus": gpus, "suggested_profile": suggested})
        return EXIT_OK
    if not gpus:
        out.info("no GPU detected (no NVIDIA driver or CUDA device); training runs on the CPU")
        return EXIT_OK
    rows = []
    for g in gpus:
        other = g.get("other_processes_mib")
        rows.append((g["index"], g.get("name") or "?", f"{g['total_mib'] / GIB_MIB:.1f}",
                     f"{g['free_mib'] / GIB_MIB:.1f}" if g.get("free_mib") is not None
                     else "N/A", f"{other / GIB_MIB:.1f}" if other is not None else "N/A"))
    out.table("GPUs", ("#", "name", "total GiB", "free GiB", "other processes GiB"), rows)
    out.info(f"suggested VRAM profile: {suggested} (--vram-profile {suggested})")
    return EXIT_OK


def free_mib_for(device: str) -> float | None:
    """Free memory of the GPU a run would use, or None without a GPU."""
    from sidestep.config.profiles import detect_gpus

    gpus = detect_gpus()
    if not gpus or device == "cpu":
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    match = [g for g in gpus if g["index"] == index] or gpus[:1]
    return match[0].get("free_mib")


def run_vram_estimate(resolved, args: argparse.Namespace, out: Out) -> int:
    from sidestep.config.profiles import model_config_dict
    from sidestep.config.vram import GIB_MIB, LATENT_RATE, estimate

    config = resolved.config
    model_cfg = model_config_dict(config.checkpoint_dir, config.model_variant)
    if model_cfg is None and resolved.sources.get("checkpoint_dir") == "explicit":
        # a folder the user named but that holds no model is a typo, not a wish for defaults
        out.error(f"--checkpoint-dir: {_no_model_config(config)}; give the folder that holds "
                  f"{_variant_folder(config)}/, or leave --checkpoint-dir out to estimate for "
                  "the 2B architecture")
        return EXIT_BAD_INPUT
    try:
        est = estimate(config, model_cfg)
    except ValueError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    free = free_mib_for(config.device)
    verdict = est.verdict(free) if free is not None else None
    if args.json:
        out.json({"peak_mib": round(est.total_mib, 1),
                  "breakdown_mib": {k: round(v, 1) for k, v in est.breakdown.items()},
                  "activation_terms_mib": {k: round(v, 1)
                                           for k, v in est.activation_terms.items()},
                  "frames": est.frames, "seq_len": est.seq_len, "batch_size": est.batch_size,
                  "dtype": est.dtype, "adapter_params": est.adapter_params,
                  "model_config": "config.json" if model_cfg else "2B defaults",
                  "free_mib": free, "verdict": verdict})
        return EXIT_OK
    rows = [(k, f"{v:,.0f}") for k, v in est.breakdown.items()]
    rows.append(("total", f"{est.total_mib:,.0f}"))
    out.table(f"Estimated peak training memory (MiB) — {est.frames} frames, batch "
              f"{est.batch_size}, {est.dtype}, {est.adapter_params:,} adapter parameters",
              ("part", "MiB"), rows)
    if model_cfg is None:
        out.warn(f"{_no_model_config(config)}; estimated for the 2B architecture (pass "
                 "--checkpoint-dir to estimate for your model)")
    if config.dataset_dir and not config.chunk_duration:
        # the songs are not read (that needs every tensor file): say what length is assumed
        seconds = est.frames / LATENT_RATE
        out.info(f"--dataset-dir is not read: each sample is taken as {seconds:.0f} s "
                 "(--max-duration, default 240 s); --chunk-duration caps it in training")
    if args.mode == "selective":
        out.info("selective trains a subset of these modules: this is its upper bound")
    if free is not None:
        msg = f"{verdict}: {est.total_gib:.1f} GiB needed, {free / GIB_MIB:.1f} GiB free"
        (out.warn if verdict == "will not fit" else out.info)(msg)
    return EXIT_OK


def _variant_folder(config) -> str:
    from sidestep.config.variants import VariantError, folder_for

    try:
        return folder_for(config.model_variant)
    except VariantError:
        return str(config.model_variant)


def _no_model_config(config) -> str:
    if not config.checkpoint_dir:
        return "no --checkpoint-dir given"
    return f"no ACE-Step config.json in {config.checkpoint_dir}/{_variant_folder(config)}"
