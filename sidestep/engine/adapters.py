"""Adapters on the DiT decoder: LoRA through PEFT, LoKR through LyCORIS.

Only the decoder's attention projections are adapted (``--attention-type`` picks self, cross or
both; ``--self/--cross-target-modules`` narrow each side). Saved formats:

- LoRA: ``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
  ``peft.PeftModel.from_pretrained(model.decoder, path)`` (what ACE-Step's inference does);
- LoKR: ``lokr_weights.safetensors`` with the LoKR settings in its metadata, loadable with
  ``lycoris.create_lycoris_from_weights``.

PEFT and LyCORIS are imported through ``import_peft`` / ``import_lycoris`` only, which keep
bitsandbytes out of the process (``_bitsandbytes_hidden``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sidestep.config.schema import PEFT_ADAPTERS, PROJECTIONS
from sidestep.engine.dropout import use_fast_dropout
from sidestep.model.quiet import BNB_LOCK as _BNB_LOCK
from sidestep.model.quiet import bitsandbytes_hidden as _bitsandbytes_hidden

LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"
LOKR_WEIGHTS = "lokr_weights.safetensors"
LOHA_WEIGHTS = "loha_weights.safetensors"   # LyCORIS keys (lycoris_*.hada_*), as LoKR's


class AdapterError(ValueError):
    pass


def import_peft():
    """``peft``, without bitsandbytes: every PEFT use in Side-Step starts here."""
    with _bitsandbytes_hidden():
        import peft

    return peft


def import_lycoris():
    """``lycoris`` (which imports PEFT too), without bitsandbytes."""
    with _bitsandbytes_hidden():
        import lycoris

    return lycoris


def load_bitsandbytes():
    """``bitsandbytes`` itself, for the ``adamw8bit`` optimizer: the one run that needs it."""
    with _BNB_LOCK:
        import bitsandbytes

    return bitsandbytes


def target_names(num_layers: int, attention_type: str, target_modules, self_modules=None,
                 cross_modules=None) -> list[str]:
    """Module names (relative to the decoder) that get an adapter, in layer order."""
    sides = {"self": ["self_attn"], "cross": ["cross_attn"],
             "both": ["self_attn", "cross_attn"]}[attention_type]
    names = []
    for i in range(num_layers):
        for side in sides:
            projs = target_modules
            if attention_type == "both":
                if side == "self_attn" and self_modules:
                    projs = self_modules
                if side == "cross_attn" and cross_modules:
                    projs = cross_modules
            for proj in PROJECTIONS:
                if proj in projs:
                    names.append(f"layers.{i}.{side}.{proj}")
    if not names:
        raise AdapterError("no decoder modules selected: check --attention-type and the target "
                           "projections")
    return names


def names_regex(names: list[str]) -> str:
    """A full-match regex for PEFT's ``target_modules`` matching exactly ``names``: per
    attention side, its layers and its projections when the names are that product (the usual
    case, and short), else the names themselves (a selective pick)."""
    by_side: dict[str, tuple[set[int], set[str]]] = {}
    for n in names:
        _, idx, side, proj = n.split(".")
        layers, projs = by_side.setdefault(side, (set(), set()))
        layers.add(int(idx))
        projs.add(proj)
    product = {f"layers.{i}.{side}.{p}" for side, (ls, ps) in by_side.items() for i in ls
               for p in ps}
    if product == set(names):
        parts = [rf"layers\.({'|'.join(str(i) for i in sorted(ls))})\.{side}\."
                 rf"({'|'.join(sorted(ps))})" for side, (ls, ps) in sorted(by_side.items())]
    else:
        parts = [re.escape(n) for n in names]
    pattern = "(" + "|".join(parts) + ")" if len(parts) > 1 else parts[0]
    regex = re.compile(pattern)
    assert all(regex.fullmatch(n) for n in names)
    return pattern


@dataclass(frozen=True)
class AdapterSpec:
    kind: str
    names: tuple[str, ...]
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.1
    bias: str = "none"
    lokr_factor: int = -1
    lokr_decompose_both: bool = False
    lokr_use_tucker: bool = False
    lokr_use_scalar: bool = False
    lokr_weight_decompose: bool = False

    @classmethod
    def from_config(cls, config, num_layers: int,
                    names: list[str] | None = None) -> "AdapterSpec":
        """``names``: exactly these modules (selective); otherwise the attention type and
        projection settings decide."""
        if names is None:
            names = target_names(num_layers, config.attention_type, config.target_modules,
                                 config.self_target_modules, config.cross_target_modules)
        names = tuple(names)
        if config.adapter_type == "lokr":
            return cls(kind="lokr", names=names, rank=config.lokr_linear_dim,
                       alpha=config.lokr_linear_alpha, dropout=0.0,
                       lokr_factor=config.lokr_factor,
                       lokr_decompose_both=config.lokr_decompose_both,
                       lokr_use_tucker=config.lokr_use_tucker,
                       lokr_use_scalar=config.lokr_use_scalar,
                       lokr_weight_decompose=config.lokr_weight_decompose)
        if config.adapter_type == "loha":
            return cls(kind="loha", names=names, rank=config.loha_linear_dim,
                       alpha=config.loha_linear_alpha, dropout=0.0)
        return cls(kind=config.adapter_type, names=names, rank=config.rank,
                   alpha=config.alpha, dropout=config.dropout, bias=config.bias)

    def lycoris_metadata(self) -> dict[str, Any]:
        if self.kind == "loha":
            return {"algo": "loha", "linear_dim": self.rank, "linear_alpha": self.alpha,
                    "target_modules": list(self.names)}
        return self.lokr_metadata()

    def lokr_metadata(self) -> dict[str, Any]:
        return {"algo": "lokr", "linear_dim": self.rank, "linear_alpha": self.alpha,
                "factor": self.lokr_factor, "decompose_both": self.lokr_decompose_both,
                "use_tucker": self.lokr_use_tucker, "use_scalar": self.lokr_use_scalar,
                "weight_decompose": self.lokr_weight_decompose,
                "target_modules": list(self.names)}


class Adapted(nn.Module):
    """What the trainer optimises: the decoder (with its adapter) and the null condition.

    One module, so Fabric places everything on the device together and the optimizer sees
    exactly the adapter's parameters.
    """

    def __init__(self, decoder: nn.Module, null_condition_emb: torch.Tensor, spec: AdapterSpec,
                 network: nn.Module | None = None):
        super().__init__()
        self.net = decoder          # a PeftModel for LoRA/DoRA, the plain decoder for LoKR
        self.lycoris = network      # LyCORIS network: LoKR or LoHA (None for PEFT)
        self.register_buffer("null_condition_emb", null_condition_emb.detach().clone(),
                             persistent=False)
        self.spec = spec

    def forward(self, **kwargs):
        return self.net(**kwargs)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Adapter weights only, with the key names the saved files use."""
        if self.kind in PEFT_ADAPTERS:
            peft = import_peft()
            return {k: v.detach() for k, v in peft.get_peft_model_state_dict(self.net).items()}
        return {k: v.detach() for k, v in self.lycoris.state_dict().items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Strict: keys and shapes must match this run's adapter exactly."""
        current = self.adapter_state()
        missing = sorted(set(current) - set(state))
        extra = sorted(set(state) - set(current))
        if missing or extra:
            detail = (f"missing {missing[:2]}" if missing else "") + \
                     (f" unexpected {extra[:2]}" if extra else "")
            raise AdapterError(f"{origin}: the saved adapter does not match this configuration "
                               f"({detail.strip()}); resume with the settings it was trained "
                               "with (adapter type, targets, attention type)")
        for key, value in state.items():
            if tuple(value.shape) != tuple(current[key].shape):
                raise AdapterError(f"{origin}: '{key}' has shape {tuple(value.shape)} but this "
                                   f"configuration needs {tuple(current[key].shape)} (different "
                                   "rank or linear dim?)")
        if self.kind in PEFT_ADAPTERS:
            import_peft().set_peft_model_state_dict(self.net, state)
        else:
            self.lycoris.load_state_dict(state, strict=True)

    def save(self, folder: Path, extra_metadata: dict[str, str] | None = None) -> Path:
        """Write the adapter in its inference format into ``folder``."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        if self.kind in PEFT_ADAPTERS:
            self.net.save_pretrained(str(folder), safe_serialization=True)
            _readable(folder)
            return folder / LORA_WEIGHTS
        state = {k: v.detach().float().cpu().contiguous()
                 for k, v in self.lycoris.state_dict().items()}
        kind = self.kind
        meta = {"format": "pt", "sidestep_adapter": kind,
                f"{kind}_config": json.dumps(self.spec.lycoris_metadata())}
        meta.update(extra_metadata or {})
        path = folder / (LOKR_WEIGHTS if kind == "lokr" else LOHA_WEIGHTS)
        save_file(state, str(path), metadata=meta)
        _readable(folder)
        return path


def _readable(folder: Path) -> None:
    """safetensors writes 0600 files: give them the mode other files get, so another user's
    runtime can load the adapter."""
    from sidestep.config.atomic import give_default_mode

    for path in folder.iterdir():
        if path.is_file():
            give_default_mode(path)


def attach(decoder: nn.Module, null_condition_emb: torch.Tensor, spec: AdapterSpec) -> Adapted:
    decoder.requires_grad_(False)
    if spec.kind in PEFT_ADAPTERS:
        return Adapted(_attach_lora(decoder, spec), null_condition_emb, spec)
    network = _attach_lycoris(decoder, spec)
    return Adapted(decoder, null_condition_emb, spec, network)


def _attach_lora(decoder: nn.Module, spec: AdapterSpec):
    peft = import_peft()
    # DoRA: PEFT adds a trainable magnitude per output row of each adapted weight
    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                             bias=spec.bias, target_modules=names_regex(list(spec.names)),
                             use_dora=spec.kind == "dora")
    with _bitsandbytes_hidden():  # its layer dispatch asks for bitsandbytes again
        model = peft.get_peft_model(decoder, config)
    use_fast_dropout(model)  # torch's CPU dropout draws 4x the random numbers it needs
    return model


def lycoris_preset(names) -> dict[str, Any]:
    return {"target_module": [], "target_name": [re.escape(n) + "$" for n in names],
            "module_algo_map": {}, "name_algo_map": {}, "enable_conv": False,
            "use_fnmatch": False, "exclude_name": [], "lora_prefix": "lycoris"}


def _lycoris_network_class():
    """LyCORIS logs through a coloured stdout handler of its own with propagation off, so its
    lines (ANSI codes and all) bypassed the run's log and landed in --plain output and on the
    app's screen. Its records go through the normal logging tree instead."""
    LycorisNetwork = import_lycoris().LycorisNetwork
    own = logging.getLogger("LyCORIS")
    for handler in list(own.handlers):
        own.removeHandler(handler)
    own.propagate = True
    return LycorisNetwork


def _attach_lycoris(decoder: nn.Module, spec: AdapterSpec):
    LycorisNetwork = _lycoris_network_class()

    # LyCORIS keeps its targeting as class state; set it for exactly this call.
    LycorisNetwork.apply_preset(lycoris_preset(spec.names))
    extra = {} if spec.kind == "loha" else dict(
        use_tucker=spec.lokr_use_tucker, use_scalar=spec.lokr_use_scalar,
        decompose_both=spec.lokr_decompose_both, factor=spec.lokr_factor,
        weight_decompose=spec.lokr_weight_decompose)
    network = LycorisNetwork(
        decoder, multiplier=1.0, lora_dim=spec.rank, alpha=spec.alpha, dropout=0.0,
        network_module=spec.kind, warn_on_unmatched=True, **extra)
    if len(network.loras) != len(spec.names):
        raise AdapterError(f"{spec.kind.upper()} wrapped {len(network.loras)} modules, "
                           f"expected {len(spec.names)}")
    network.apply_to()
    device = next(decoder.parameters()).device
    network.to(device=device, dtype=torch.float32)
    network.requires_grad_(True)
    return network


def read_adapter_dir(folder: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """(kind, weights, config) of a saved adapter folder; raises ``AdapterError``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / LORA_WEIGHTS).is_file():
        # the checks export and check-adapter make (a list or r: 0 passed here, or crashed)
        from sidestep.engine.adapter_keys import read_lora_config

        config = read_lora_config(folder / LORA_CONFIG)
        kind = "dora" if config.get("use_dora") else "lora"
        try:
            return kind, load_file(str(folder / LORA_WEIGHTS)), config
        except (OSError, ValueError, SafetensorError) as exc:
            raise AdapterError(f"{folder}: LoRA adapter files cannot be read ({exc})") from None
    for kind, name in (("lokr", LOKR_WEIGHTS), ("loha", LOHA_WEIGHTS)):  # LyCORIS files
        if (folder / name).is_file():
            try:
                with safe_open(str(folder / name), framework="pt") as fh:
                    meta = fh.metadata() or {}
                config = json.loads(meta.get(f"{kind}_config", "{}"))
                return kind, load_file(str(folder / name)), config
            except (OSError, ValueError, SafetensorError) as exc:
                raise AdapterError(f"{folder}: {name} cannot be read ({exc})") from None
    raise AdapterError(f"{folder}: no adapter found ({LORA_WEIGHTS}, {LOKR_WEIGHTS} or "
                       f"{LOHA_WEIGHTS})")
