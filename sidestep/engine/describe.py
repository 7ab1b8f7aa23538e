"""A run's settings and times as a person reads them: the CLI's summary table and the app's
review screen show the same rows."""

from __future__ import annotations

from sidestep.config.plural import counted
from sidestep.config.schema import PROJECTIONS


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def summary_rows(config) -> list[tuple[str, str]]:
    c = config
    if c.adapter_type in ("lora", "dora"):
        adapter = (f"{'DoRA' if c.adapter_type == 'dora' else 'LoRA'} rank {c.rank}, alpha "
                   f"{c.alpha}, dropout {c.dropout:g}")
    elif c.adapter_type == "loha":
        adapter = f"LoHA dim {c.loha_linear_dim}, alpha {c.loha_linear_alpha}"
    else:
        adapter = (f"LoKR dim {c.lokr_linear_dim}, alpha {c.lokr_linear_alpha}, "
                   f"factor {c.lokr_factor}")
    targets = targets_text(c)
    rows = [
        ("mode", c.mode + (" (the model's discrete timesteps, no CFG dropout)"
                           if c.mode == "vanilla" else "")),
        ("model", f"{c.model_variant} ({c.model_family or 'unknown family'}) in "
                  f"{c.checkpoint_dir}"),
        ("adapter", adapter),
        ("targets", targets),
        ("optimizer", f"{c.optimizer_type}, lr {c.learning_rate:g}, {c.scheduler_type} "
                      f"schedule, warmup {c.warmup_steps}"),
        ("batches", batches_text(c)),
        ("timesteps", f"shift {c.shift:g}, {c.num_inference_steps} steps"
         + (f", CFG dropout {c.cfg_ratio:g}" if c.mode != "vanilla" else "")),
        ("memory", f"gradient checkpointing {'on' if c.gradient_checkpointing else 'off'}"
                   + (f", {c.chunk_duration} s chunks" if c.chunk_duration else "")),
        ("device", device_text(c) + devices_text(c)),
        ("data", str(c.dataset_dir)),
        ("output", str(c.output_dir) + (f" (resume from {c.resume_from})" if c.resume_from
                                        else "")),
    ]
    extras = [("EMA", f"decay {c.ema_decay:g} (the EMA weights are saved)")
              if c.ema_decay else None,
              ("validation", f"{c.val_split:g} of the files held out; best/adapter from epoch "
                             f"{c.save_best_after}") if c.val_split else None,
              ("samples", f"{c.sample_duration:g} s every {c.sample_every_n_epochs} epoch(s), "
                          f"{c.sample_steps} steps, seed {c.sample_seed}")
              if c.sample_every_n_epochs else None,
              ("background", "its own process: closing the terminal leaves it training")
              if c.detach else None,
              ("notify", f"runs {c.notify_command!r} when it ends or needs you")
              if c.notify_command else None]
    return rows + [row for row in extras if row is not None]


def targets_text(c) -> str:
    """The modules that get an adapter, as the engine chooses them (adapters.target_names)."""
    if c.attention_type == "both" and (c.self_target_modules or c.cross_target_modules):
        own = " ".join(c.self_target_modules or c.target_modules)
        cross = " ".join(c.cross_target_modules or c.target_modules)
        targets = f"self attention: {own}; cross attention: {cross}"
    else:
        targets = f"{c.attention_type} attention: {' '.join(c.target_modules)}"
    if c.mode != "selective":
        return targets
    every = c.attention_type == "both" and not c.self_target_modules and \
        not c.cross_target_modules and set(c.target_modules) == set(PROJECTIONS)
    within = "" if every else f", within {targets}"
    if c.module_config:
        return f"the modules {c.module_config} lists{within}"
    top = f"top {c.top_k} " if c.top_k else ""
    return f"the {top}modules of an estimate run first (--auto-estimate){within}"


def batches_text(c) -> str:
    """Per-device batch, accumulation and, with several devices, the effective batch."""
    text = f"batch {c.batch_size} x accumulation {c.gradient_accumulation}"
    devices = str(c.devices)
    if devices.isdigit() and int(devices) * c.num_nodes > 1:
        world = int(devices) * c.num_nodes
        text += (f" x {world} devices = {c.batch_size * c.gradient_accumulation * world} "
                 "songs per step")
    elif devices == "auto":
        text += " x every device (auto)"
    return f"{text}, {counted(c.epochs, 'epoch')}"


def device_text(c) -> str:
    """The device and precision the run will use: "auto / auto" told nothing, and a box
    whose GPU torch cannot see trains on the CPU, a hundred times slower, without a word."""
    text = f"{c.device} / {c.precision}"
    if "auto" not in (c.device, c.precision):
        return text
    from sidestep.config.device import DeviceError, probe, resolve_device, resolve_precision

    try:
        info = probe()
        device = resolve_device(c.device, info)
        precision, _ = resolve_precision(c.precision, device, info)
    except DeviceError:  # refused with its reason when the run starts
        return text
    auto = " (auto)" if c.device == c.precision == "auto" else ""
    text = f"{device}{' (auto)' if c.device == 'auto' and not auto else ''} / " \
           f"{precision}{' (auto)' if c.precision == 'auto' and not auto else ''}{auto}"
    if device == "cpu" and c.device == "auto":
        text += "; no GPU was found, so this run trains on the CPU"
    return text


def devices_text(c) -> str:
    devices = str(c.devices)
    if devices == "1" and c.num_nodes == 1 and c.strategy != "ddp":
        return ""
    nodes = f" on each of {c.num_nodes} machines" if c.num_nodes > 1 else ""
    return f", {devices} devices{nodes} (data parallel)"
