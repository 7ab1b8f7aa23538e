"""The ACE-Step DiT's dimensions, declared once.

``sidestep.model.config.AceStepConfig`` extends ``ModelDims`` with what only the model needs, so
the estimator (which must not import the model: that would import torch) reads the same fields
and the same layer-type rule the model is built from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelDims:
    """The ``config.json`` fields that size the decoder. Defaults are the 2B model's."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    attention_bias: bool = False
    use_sliding_window: bool = True
    sliding_window: int = 128
    layer_types: tuple[str, ...] = ()
    patch_size: int = 2
    in_channels: int = 192
    audio_acoustic_hidden_dim: int = 64
    # XL: the condition encoder runs at its own width (absent on 2B configs).
    encoder_hidden_size: int | None = None

    @classmethod
    def of(cls, model_config: Any) -> "ModelDims":
        """From an ``AceStepConfig``, a ``config.json`` dict (optionally wrapped under "config",
        as the reference files are), another ``ModelDims``, or None (the 2B model)."""
        if model_config is None:
            return cls()
        if type(model_config) is cls:
            return model_config
        if isinstance(model_config, Mapping):
            data = model_config
            if "hidden_size" not in data and isinstance(data.get("config"), Mapping):
                data = data["config"]
            get = data.get
        else:
            def get(name):
                return getattr(model_config, name, None)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = get(f.name)
            if value is None:
                continue
            values[f.name] = tuple(value) if f.name == "layer_types" else value
        return cls(**values)

    @property
    def is_xl(self) -> bool:
        """XL checkpoints name an encoder width; their timbre encoder prepends a CLS token."""
        return self.encoder_hidden_size is not None

    @property
    def attn_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def enc_hidden(self) -> int:
        return self.encoder_hidden_size or self.hidden_size

    def layer_type(self, index: int) -> str:
        if not self.use_sliding_window:
            return "full_attention"
        if self.layer_types and index < len(self.layer_types):
            return self.layer_types[index]
        return "sliding_attention" if index % 2 == 0 else "full_attention"

    def is_sliding(self, index: int) -> bool:
        return self.layer_type(index) == "sliding_attention"

    def window_for(self, index: int) -> int | None:
        return self.sliding_window if self.is_sliding(index) else None

    def proj_shape(self, proj: str) -> tuple[int, int]:
        """(out_features, in_features) of an attention projection (self and cross alike: the
        condition is embedded to ``hidden_size`` before cross-attention)."""
        h, a, k = self.hidden_size, self.attn_width, self.kv_width
        return {"q_proj": (a, h), "k_proj": (k, h), "v_proj": (k, h), "o_proj": (h, a)}[proj]
