"""From defaults, a preset and explicit values to one frozen, checked config.

Precedence, lowest first: schema default -> platform default (Windows) -> model-family default
(turbo vs base/sft) -> VRAM profile -> preset -> explicit values (CLI flags or form fields),
decided in one place, ``layered_values``: ``resolve`` checks its result, and the form shows it
while its fields are still invalid. Cross-field rules run last and either fix a value with a
warning (Prodigy's schedule) or refuse with an error that names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from sidestep.config import schema
from sidestep.config.paths import same_place
from sidestep.config.schema import BY_NAME, FieldProblem, Problems, Setting
from sidestep.config.training_config import ConfigBase, TrainingConfig
from sidestep.config.values import bounds_problem, to_json
from sidestep.config.variants import (VariantError, check_variant_name, detect_family,
                                      folder_for, official_family)

IS_WINDOWS = sys.platform.startswith("win")

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")
_LOKR_FIELDS = tuple(s.name for s in schema.SETTINGS if s.group == "LoKR")
_LOHA_FIELDS = tuple(s.name for s in schema.SETTINGS if s.group == "LoHA")
_LORA_ONLY_FIELDS = tuple(s.name for s in schema.SETTINGS
                          if s.shown_when == ("adapter_type", schema.PEFT_ADAPTERS))


class ConfigError(ValueError):
    """One or more settings are invalid. ``problems`` name each field."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def _config_class(class_name: str, settings: tuple[Setting, ...], extra: list[tuple]) -> type:
    """A frozen config class made from a command's settings (the smaller commands)."""
    fields = [(s.name, Any, dataclasses.field(default=None)) for s in settings]
    fields += extra
    cls = dataclasses.make_dataclass(class_name, fields, frozen=True, bases=(ConfigBase,))
    cls.__module__ = __name__
    return cls


EstimateConfig = _config_class("EstimateConfig", schema.settings_for("estimate"), [
    ("model_family", Any, dataclasses.field(default=None)),
])
PreprocessConfig = _config_class("PreprocessConfig", schema.settings_for("preprocess"), [])
BuildDatasetConfig = _config_class("BuildDatasetConfig", schema.settings_for("build-dataset"), [])
CompareConfigsConfig = _config_class("CompareConfigsConfig",
                                     schema.settings_for("compare-configs"), [])

_CLASS_FOR = {
    "fixed": TrainingConfig, "vanilla": TrainingConfig, "selective": TrainingConfig,
    "estimate": EstimateConfig, "preprocess": PreprocessConfig,
    "build-dataset": BuildDatasetConfig, "compare-configs": CompareConfigsConfig,
}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A checked config, the warnings to show, and where each value came from."""

    config: Any
    warnings: tuple[FieldProblem, ...]
    sources: Mapping[str, str]

    def public_dict(self, command: str) -> dict[str, Any]:
        """The config as ``--print-config`` shows it: the command's own settings."""
        names = {s.name for s in schema.settings_for(command)}
        full = self.config.to_dict()
        return {k: v for k, v in full.items() if k in names or k in ("mode", "model_family")}


def _settings_of(command: str) -> tuple[Setting, ...]:
    return (schema.training_settings() if command in schema.TRAIN_MODES
            else schema.settings_for(command))


def layered_values(command: str, explicit: Mapping[str, Any],
                   preset: Mapping[str, Any] | None = None,
                   profile: Mapping[str, Any] | None = None, *, windows: bool | None = None
                   ) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """The precedence, decided once: (values, where each came from, model family), before
    the cross-field rules and checks. Names the command does not take are left out."""
    preset, profile = dict(preset or {}), dict(profile or {})
    windows = IS_WINDOWS if windows is None else windows
    settings = _settings_of(command)
    names = {s.name for s in settings}
    family = None
    if "model_variant" in names:
        variant = explicit.get("model_variant", preset.get(
            "model_variant", profile.get("model_variant", BY_NAME["model_variant"].default)))
        family, _how = detect_family(variant, explicit.get("base_model"),
                                     explicit.get("checkpoint_dir"))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    # An unknown fine-tune (no --base-model, no readable config.json) gets base/sft defaults:
    # CFG dropout on is the safe side for a model that may not be distilled.
    defaults_family = family or "base"
    for s in settings:
        value = s.default_for(windows=windows, family=defaults_family)
        source = "default"
        if value != s.default:
            source = "variant" if s.variant_defaults else "platform"
        if s.name in profile and s.preset:
            value, source = profile[s.name], "profile"
        if s.name in preset and s.preset:
            value, source = preset[s.name], "preset"
        if s.name in explicit:
            value, source = explicit[s.name], "explicit"
        values[s.name] = value
        sources[s.name] = source
    return values, sources, family


def resolve(command: str, explicit: Mapping[str, Any] | None = None,
            preset: Mapping[str, Any] | None = None, *, profile: Mapping[str, Any] | None = None,
            windows: bool | None = None, require_paths: bool = True) -> Resolved:
    """Resolve the config of a subcommand. Raises ``ConfigError`` listing every problem.

    ``explicit``, ``preset`` and ``profile`` (a VRAM profile's values, under the preset) hold
    already-typed values keyed by schema name (the CLI and the form parse text with
    ``values.parse_text``; presets are checked by the preset store).
    """
    if command not in _CLASS_FOR:
        raise KeyError(f"unknown command {command!r}")
    explicit = dict(explicit or {})
    settings = _settings_of(command)
    names = {s.name for s in settings}
    problems = Problems()

    for name in list(explicit) + list(preset or {}) + list(profile or {}):
        if name not in BY_NAME:
            raise KeyError(f"{name!r} is not a setting")
    unknown = [n for n in explicit if n not in names]
    for n in unknown:
        problems.error(n, f"not a setting of `{command}`")
        explicit.pop(n)

    values, sources, family = layered_values(command, explicit, preset, profile,
                                             windows=windows)
    if command in schema.TRAIN_MODES and not values.get("output_dir") and \
            values.get("resume_from"):
        # a resumed run continues in its checkpoint's own run folder unless told otherwise
        values["output_dir"] = str(Path(values["resume_from"]).parent)
        sources["output_dir"] = "resume"

    for s in settings:
        problem = bounds_problem(s, values[s.name])
        if problem and not (values[s.name] is None and s.required):
            problems.error(s.name, problem)
        if s.required and values[s.name] in (None, "", ()) and require_paths and \
                not (s.required_unless and values.get(s.required_unless)):
            problems.error(s.name, "is required")

    if command in schema.TRAIN_MODES:
        _training_rules(command, values, sources, family, problems)
    elif command == "estimate":
        _device_rule(values, problems)
    elif command == "preprocess":
        _device_rule(values, problems)
        if not values.get("audio_dir") and not values.get("dataset_json"):
            problems.error("audio_dir", "is required for preprocessing (or give --dataset-json)")
        if not values.get("tensor_output"):
            problems.error("tensor_output", "is required for preprocessing")
    elif command == "compare-configs":
        if values["configs"] is not None and len(values["configs"]) < 2:
            problems.error("configs", "give at least two module config files to compare")

    _folder_rule(values, names, problems)
    if "model_variant" in values:
        try:
            check_variant_name(values["model_variant"])
        except VariantError as exc:
            problems.error("model_variant", str(exc))

    if problems.errors:
        raise ConfigError(problems.errors)

    cls = _CLASS_FOR[command]
    extra: dict[str, Any] = {}
    field_names = {f.name for f in dataclasses.fields(cls)}
    if "mode" in field_names:
        extra["mode"] = command
    if "model_family" in field_names:
        extra["model_family"] = family
    config = cls(**values, **extra)
    return Resolved(config=config, warnings=tuple(problems.warnings), sources=sources)


def alpha_warning(values: Mapping[str, Any], explicit: Mapping[str, Any]) -> str | None:
    """A rank changed without alpha (default 128, for rank 64) scales the update by far more
    than the usual 2: a rank-4 run stepped 16x as far as intended. Not said when both were
    given (then it is meant)."""
    rank, alpha = values.get("rank"), values.get("alpha")
    if values.get("adapter_type", "lora") not in ("lora", "dora") or not rank or not alpha:
        return None
    ratio = alpha / rank
    if 0.5 <= ratio <= 4 or ("alpha" in explicit and "rank" in explicit):
        return None
    return (f"alpha {alpha} with rank {rank} scales the adapter by {ratio:g} (alpha / rank); "
            f"the usual is 2: --alpha {2 * rank}")


def _device_rule(values: dict, problems: Problems) -> None:
    dev = str(values.get("device", "auto")).strip().lower()
    if not _DEVICE_RE.match(dev):
        problems.error("device", f"{values['device']!r} is not a device; use auto, cpu, cuda, "
                                 "cuda:N, mps, xpu or xpu:N")
    else:
        values["device"] = dev


def _devices_rule(values: dict, problems: Problems) -> None:
    """``--devices N|auto``: data parallel over N devices of one kind (not one picked device)."""
    raw = str(values.get("devices", "1")).strip().lower()
    if raw != "auto" and not (raw.isdigit() and 1 <= int(raw) <= 1024):
        problems.error("devices", f"{values['devices']!r} is not a device count; use a number "
                                  "from 1 to 1024, or auto")
        return
    values["devices"] = raw
    dev = str(values.get("device", "auto"))
    if raw != "1" and ":" in dev:
        problems.error("devices", f"{raw} devices cannot run on the one device {dev}; use "
                                  f"--device {dev.split(':')[0]} (or auto) with --devices")
    if raw != "1" and dev == "mps":
        problems.error("devices", "Apple MPS has one device; use --devices 1")


def _training_rules(mode: str, v: dict, src: dict, family: str | None, p: Problems) -> None:
    explicit = {k for k, s in src.items() if s == "explicit"}
    _device_rule(v, p)
    _devices_rule(v, p)

    if v["optimizer_type"] == "prodigy":
        if v["scheduler_type"] != "constant":
            if src["scheduler_type"] in ("explicit", "preset", "profile"):
                p.warn("scheduler_type", f"Prodigy adapts the step size itself, so the "
                       f"'{v['scheduler_type']}' schedule is replaced by 'constant'")
            v["scheduler_type"] = "constant"
            src["scheduler_type"] = "rule"
        if v["learning_rate"] != 1.0:
            p.warn("learning_rate", f"Prodigy expects a learning rate of 1.0 (it scales its own "
                   f"estimate by it); {v['learning_rate']:g} was given")

    for kind, label, fields in (("lokr", "LoKR", _LOKR_FIELDS), ("loha", "LoHA", _LOHA_FIELDS)):
        if v["adapter_type"] != kind:
            for n in (n for n in fields if n in explicit):
                p.error(n, f"{label} settings need --adapter-type {kind}")
    if v["adapter_type"] in schema.LYCORIS_ADAPTERS:
        kind = v["adapter_type"]
        for n in _LORA_ONLY_FIELDS:
            if n in explicit:
                p.warn(n, f"is a LoRA setting and is ignored with --adapter-type {kind} "
                          f"(use the --{kind}-* settings)")

    if v["attention_type"] != "both":
        for n in ("self_target_modules", "cross_target_modules"):
            if v[n] is not None:
                p.error(n, "only applies with --attention-type both "
                           f"(it is '{v['attention_type']}')")
    if not v["target_modules"]:
        p.error("target_modules", "name at least one projection (q_proj k_proj v_proj o_proj)")

    warning = alpha_warning(v, explicit)
    if warning:
        p.warn("alpha", warning)

    chunk = v["chunk_duration"]
    if chunk is not None and chunk < 60:
        p.warn("chunk_duration", f"{chunk} s windows are short; below 60 s the adapter may "
                                 "learn less song structure")

    if mode == "vanilla":
        if v.get("cfg_ratio"):
            if "cfg_ratio" in explicit:
                p.error("cfg_ratio", "vanilla training never drops conditions; use `fixed` for "
                                     "CFG dropout")
            v["cfg_ratio"] = 0.0
            src["cfg_ratio"] = "rule"
    if mode == "selective" and not v["module_config"] and not v["auto_estimate"]:
        p.error("module_config", "selective training needs --module-config FILE (from "
                                 "`sidestep estimate`) or --auto-estimate")
    if mode == "selective":
        if v["module_config"] and v["auto_estimate"] and "auto_estimate" in explicit:
            p.error("auto_estimate", "cannot go with --module-config: both choose the modules; "
                                     "give one (--auto-estimate runs a new estimate, "
                                     "--module-config uses a saved one)")

    if v["preprocess"]:
        if not v["audio_dir"] and not v["dataset_json"]:
            p.error("audio_dir", "is required with --preprocess (or give --dataset-json)")
        if not v["tensor_output"]:
            p.error("tensor_output", "is required with --preprocess")
        if v["tensor_output"] and v["dataset_dir"] and "dataset_dir" in explicit and \
                not same_place(v["dataset_dir"], v["tensor_output"]):
            # checked before any song is encoded: else all were, and the run then failed on
            # (or trained on) another folder
            p.error("dataset_dir", f"{v['dataset_dir']}: with --preprocess, training reads the "
                                   f"tensors it writes to --tensor-output {v['tensor_output']}; "
                                   "leave --dataset-dir out (or give that same folder)")
        elif v["tensor_output"]:
            v["dataset_dir"] = v["tensor_output"]
            src["dataset_dir"] = "rule"

    else:  # each flag of preprocessing given without it: it would do nothing, unsaid
        for s in schema.settings_for(mode):
            if s.group == "Preprocessing" and s.name != "preprocess" and s.name in explicit:
                p.warn(s.name, "is used only with --preprocess (this run trains on the "
                               "--dataset-dir tensors as they are); add --preprocess to make "
                               "the tensors first, or leave it out")

    if v["loss_weighting"] != "min_snr" and "snr_gamma" in explicit:
        p.warn("snr_gamma", "only used with --loss-weighting min_snr")

    if v["log_dir"] is None and v["output_dir"]:
        v["log_dir"] = _join(v["output_dir"], "runs")
        src["log_dir"] = "rule"

    if family is None and "model_variant" in v and _model_folder_exists(v):
        # a missing folder is reported by the model check, with the folders there are
        p.warn("base_model", f"cannot tell whether '{v['model_variant']}' is a turbo or a "
                             "base/sft model; base/sft defaults are used. Pass --base-model.")
    if v.get("base_model") and "base_model" in explicit:
        try:
            official = official_family(str(v["model_variant"]))
        except VariantError:
            official = None
        if official and official != v["base_model"]:  # it would train with the wrong schedule
            p.error("base_model", f"is for fine-tunes; '{v['model_variant']}' is the official "
                                  f"{official} model, so --base-model {v['base_model']} would "
                                  "train it with the wrong timesteps and CFG defaults. Leave "
                                  "it out")


def _model_folder_exists(v: dict) -> bool:
    if not v.get("checkpoint_dir"):
        return False
    try:
        return (Path(v["checkpoint_dir"]) / folder_for(str(v["model_variant"]))).is_dir()
    except VariantError:
        return False


# Settings that name a folder, and the fix when a file is given: an input folder's contents,
# or None for a folder the command writes into (and creates).
_FOLDER_SETTINGS: dict[str, str | None] = {
    "checkpoint_dir": "give the folder that holds the model folders (acestep-v15-turbo/, "
                      "vae/, ...)",
    "dataset_dir": "give the folder that holds the preprocessed .pt files",
    "audio_dir": "give the folder that holds the audio files",
    "resume_from": "give a checkpoint folder (<run>/checkpoint-step-N)",
    "output_dir": None, "tensor_output": None, "log_dir": None,
}
CHECKPOINT_DIR_FIX = _FOLDER_SETTINGS["checkpoint_dir"]
DATASET_DIR_FIX = _FOLDER_SETTINGS["dataset_dir"]


def not_a_folder(path: str | Path, fix: str | None) -> str | None:
    """The message for a file given where a folder is expected, else None (a missing path
    is left to the command, which knows whether it creates it)."""
    if not Path(path).is_file():
        return None
    return (f"{path} is a file, not a folder; "
            + (fix or "give a folder path (it is created if missing), or move that file away"))


def _folder_rule(values: dict, names: set[str], problems: Problems) -> None:
    for name, fix in _FOLDER_SETTINGS.items():
        if name in names and values.get(name):
            problem = not_a_folder(values[name], fix)
            if problem:
                problems.error(name, problem)


def _join(a: str, b: str) -> str:
    sep = "\\" if ("\\" in a and "/" not in a) else "/"
    return a.rstrip("/\\") + sep + b


def config_to_json(config: Any) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=False)


def training_config_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a ``TrainingConfig`` from ``to_dict()`` output (run.json), checking types."""
    from sidestep.config.values import check_json_value

    values: dict[str, Any] = {}
    problems = Problems()
    for s in schema.training_settings():
        if s.name in data:
            try:
                values[s.name] = check_json_value(s, data[s.name])
            except ValueError as exc:
                problems.error(s.name, str(exc))
        else:
            values[s.name] = s.default
    if problems.errors:
        raise ConfigError(problems.errors)
    return TrainingConfig(**values, mode=str(data.get("mode", "fixed")),
                          model_family=data.get("model_family"))


def json_ready(setting_name: str, value: Any) -> Any:
    return to_json(BY_NAME[setting_name], value)
