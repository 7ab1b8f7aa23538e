"""``TrainingConfig`` is written out for readers; the schema stays the one definition. This
checks the class against the schema field for field."""

from __future__ import annotations

import dataclasses
import types
import typing

from sidestep.config import schema
from sidestep.config.resolve import resolve
from sidestep.config.training_config import TrainingConfig

TYPE_OF_KIND = {"int": int, "float": float, "str": str, "bool": bool, "path": str,
                "str_list": tuple[str, ...], "path_list": tuple[str, ...]}


def test_training_config_matches_the_schema():
    fields = dataclasses.fields(TrainingConfig)
    hints = typing.get_type_hints(TrainingConfig)
    settings = schema.training_settings()
    assert [f.name for f in fields] == [s.name for s in settings] + ["mode", "model_family"]
    for s, f in zip(settings, fields):
        always_set = all(m in s.commands for m in schema.TRAIN_MODES) and s.default is not None
        wanted = TYPE_OF_KIND[s.kind]
        if always_set:
            assert hints[s.name] == wanted, s.name
            assert f.default is dataclasses.MISSING, f"{s.name} is always set by resolve"
        else:
            assert hints[s.name] == (wanted | None), s.name
            assert f.default is None, s.name


def test_resolved_training_configs_have_the_declared_types(tmp_path):
    hints = typing.get_type_hints(TrainingConfig)
    for mode in schema.TRAIN_MODES:
        values = {"checkpoint_dir": str(tmp_path), "dataset_dir": str(tmp_path),
                  "output_dir": str(tmp_path / "out")}
        if mode == "selective":
            values["auto_estimate"] = True
        cfg = resolve(mode, values, require_paths=False).config
        assert isinstance(cfg, TrainingConfig) and cfg.mode == mode
        for name, hint in hints.items():
            value = getattr(cfg, name)
            if value is None:
                assert isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint), \
                    f"{mode}: {name} is None"
                continue
            union = isinstance(hint, types.UnionType)
            kinds = [t for t in typing.get_args(hint) if t is not type(None)] if union else [hint]
            base = [typing.get_origin(k) or k for k in kinds]
            if float in base and isinstance(value, int):
                continue  # an int default is a fine float
            assert isinstance(value, tuple(base)), f"{mode}: {name}={value!r} is not {hint}"
