"""ACE-Step 1.5 model configuration, read from a checkpoint's ``config.json``.

Only the fields the DiT and the condition encoder need are typed here; everything else in the
file is kept in ``raw`` untouched. Defaults are the 2B values (see tests/reference/).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from sidestep.config.dims import ModelDims


class ModelConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AceStepConfig(ModelDims):
    """``ModelDims`` (the sizes, declared once in the config layer for the VRAM estimate) and
    what only the model needs."""

    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None
    # Training objective parameters (the fixed mode's logit-normal timestep sampler).
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    data_proportion: float = 0.5
    is_turbo: bool = False
    model_version: str = ""
    model_type: str = "acestep"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- derived ------------------------------------------------------------------------------
    @property
    def enc_intermediate(self) -> int:
        return self.encoder_intermediate_size or self.intermediate_size

    @property
    def enc_heads(self) -> int:
        return self.encoder_num_attention_heads or self.num_attention_heads

    @property
    def enc_kv_heads(self) -> int:
        return self.encoder_num_key_value_heads or self.num_key_value_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "config.json") -> "AceStepConfig":
        if not isinstance(data, Mapping):
            raise ModelConfigError(f"{origin}: expected a JSON object")
        if "config" in data and isinstance(data["config"], Mapping) and "hidden_size" not in data:
            data = data["config"]  # the reference files wrap the config with provenance
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "raw" or f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            try:
                if f.name == "layer_types":
                    value = tuple(str(v) for v in value)
                elif f.type in ("int", "int | None"):
                    if isinstance(value, bool) or int(value) != value:
                        raise TypeError
                    value = int(value)
                elif f.type == "float":
                    value = float(value)
                elif f.type == "bool":
                    if not isinstance(value, bool):
                        raise TypeError
                elif f.type == "str":
                    value = str(value)
            except (TypeError, ValueError):
                raise ModelConfigError(f"{origin}: '{f.name}' has an invalid value "
                                       f"{value!r}") from None
            kwargs[f.name] = value
        config = cls(raw=dict(data), **kwargs)
        config.check(origin)
        return config

    def check(self, origin: str = "config") -> None:
        if self.model_type != "acestep":
            raise ModelConfigError(f"{origin}: model_type is {self.model_type!r}, not 'acestep'; "
                                   "this folder does not hold an ACE-Step DiT")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelConfigError(f"{origin}: num_attention_heads must be a multiple of "
                                   "num_key_value_heads")
        if self.in_channels != 3 * self.audio_acoustic_hidden_dim:
            raise ModelConfigError(f"{origin}: in_channels ({self.in_channels}) must be 3 x "
                                   f"audio_acoustic_hidden_dim ({self.audio_acoustic_hidden_dim})")
        if self.enc_heads % self.enc_kv_heads:
            raise ModelConfigError(f"{origin}: encoder heads must be a multiple of encoder "
                                   "key/value heads")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.raw)
        for f in dataclasses.fields(self):
            if f.name == "raw":
                continue
            value = getattr(self, f.name)
            if value is None and f.name.startswith("encoder_"):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        if not out.get("layer_types"):
            out["layer_types"] = [self.layer_type(i) for i in range(self.num_hidden_layers)]
        out.setdefault("architectures", ["AceStepConditionGenerationModel"])
        return out
