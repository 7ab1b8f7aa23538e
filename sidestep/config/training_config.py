"""The configuration the training engine takes, written out so a reader (and an editor) can
follow ``cfg.learning_rate`` to its type.

The settings themselves are defined once, in ``schema.py`` (flag, default, range, help);
``tests/test_config_class.py`` checks this class against the schema field for field, in order,
with the type each value kind has. Fields every training mode takes, with a default, are always
set by ``resolve``; the rest may be None (settings of one mode only, paths not given yet).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any


class ConfigBase:
    """What every resolved config offers: a JSON-ready dict and a changed copy."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        """``to_dict`` with every path made absolute (against the current folder): what run
        files keep, so History's resume, ``check-adapter`` and a resumed run find the same
        folders from anywhere."""
        from sidestep.config.schema import BY_NAME

        out = self.to_dict()
        for name, value in out.items():
            kind = BY_NAME[name].kind if name in BY_NAME else None
            if kind == "path" and value:
                out[name] = os.path.abspath(os.path.expanduser(str(value)))
            elif kind == "path_list" and value:
                out[name] = [os.path.abspath(os.path.expanduser(str(v))) for v in value]
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingConfig(ConfigBase):
    """Every setting of ``fixed``, ``vanilla`` and ``selective``, plus what resolving decided."""

    # -- Model / Paths -----------------------------------------------------------------------------
    checkpoint_dir: str | None = None
    model_variant: str
    base_model: str | None = None
    # -- Device / Platform -------------------------------------------------------------------------
    device: str
    precision: str
    devices: str
    num_nodes: int
    strategy: str
    # -- Data --------------------------------------------------------------------------------------
    dataset_dir: str | None = None
    num_workers: int
    pin_memory: bool
    prefetch_factor: int
    persistent_workers: bool
    # -- Training ----------------------------------------------------------------------------------
    learning_rate: float
    batch_size: int
    gradient_accumulation: int
    epochs: int
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    chunk_duration: int | None = None
    shift: float
    num_inference_steps: int
    optimizer_type: str
    scheduler_type: str
    gradient_checkpointing: bool
    offload_encoder: bool
    # -- Adapter -----------------------------------------------------------------------------------
    adapter_type: str
    # -- LoRA --------------------------------------------------------------------------------------
    rank: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    bias: str
    attention_type: str
    self_target_modules: tuple[str, ...] | None = None
    cross_target_modules: tuple[str, ...] | None = None
    # -- LoKR --------------------------------------------------------------------------------------
    lokr_linear_dim: int
    lokr_linear_alpha: int
    lokr_factor: int
    lokr_decompose_both: bool
    lokr_use_tucker: bool
    lokr_use_scalar: bool
    lokr_weight_decompose: bool
    # -- LoHA --------------------------------------------------------------------------------------
    loha_linear_dim: int
    loha_linear_alpha: int
    # -- Checkpointing -----------------------------------------------------------------------------
    output_dir: str | None = None
    save_every: int
    resume_from: str | None = None
    # -- Logging / TensorBoard ---------------------------------------------------------------------
    log_dir: str | None = None
    log_every: int
    log_heavy_every: int
    sample_every_n_epochs: int
    # -- Validation / EMA --------------------------------------------------------------------------
    ema_decay: float
    val_split: float
    save_best_after: int
    early_stop_patience: int
    # -- Samples -----------------------------------------------------------------------------------
    sample_prompt: str | None = None
    sample_lyrics: str | None = None
    sample_duration: float
    sample_steps: int
    sample_seed: int
    sample_cfg: float
    # -- Run control -------------------------------------------------------------------------------
    detach: bool
    notify_command: str | None = None
    # -- Preprocessing -----------------------------------------------------------------------------
    preprocess: bool
    audio_dir: str | None = None
    dataset_json: str | None = None
    tensor_output: str | None = None
    max_duration: float
    normalize: str
    # -- Corrected Training ------------------------------------------------------------------------
    cfg_ratio: float | None = None
    loss_weighting: str
    snr_gamma: float
    # -- Selective ---------------------------------------------------------------------------------
    module_config: str | None = None
    auto_estimate: bool | None = None
    # -- Estimation --------------------------------------------------------------------------------
    estimate_batches: int | None = None
    top_k: int | None = None
    granularity: str | None = None
    # -- decided by resolve ----------------------------------------------------------------------
    mode: str = "fixed"
    model_family: str | None = None
