"""A run's settings and times as a person reads them: the CLI's summary table and the app's
review screen show the same rows."""

from __future__ import annotations


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
    targets = f"{c.attention_type} attention: {' '.join(c.target_modules)}"
    rows = [
        ("mode", c.mode + (" (discrete turbo timesteps, no CFG dropout)" if c.mode == "vanilla"
                           else "")),
        ("model", f"{c.model_variant} ({c.model_family or 'unknown family'}) in "
                  f"{c.checkpoint_dir}"),
        ("adapter", adapter),
        ("targets", targets),
        ("optimizer", f"{c.optimizer_type}, lr {c.learning_rate:g}, {c.scheduler_type} "
                      f"schedule, warmup {c.warmup_steps}"),
        ("batches", f"batch {c.batch_size} x accumulation {c.gradient_accumulation}, "
                    f"{c.epochs} epochs"),
        ("timesteps", f"shift {c.shift:g}, {c.num_inference_steps} steps"
         + (f", CFG dropout {c.cfg_ratio:g}" if c.mode != "vanilla" else "")),
        ("memory", f"gradient checkpointing {'on' if c.gradient_checkpointing else 'off'}"
                   + (f", {c.chunk_duration} s chunks" if c.chunk_duration else "")),
        ("device", f"{c.device} / {c.precision}"),
        ("data", str(c.dataset_dir)),
        ("output", str(c.output_dir) + (f" (resume from {c.resume_from})" if c.resume_from
                                        else "")),
    ]
    return rows
