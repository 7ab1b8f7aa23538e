"""Preset store: fields round-trip, priority order, import rules, read-only built-ins."""

from __future__ import annotations

import json

import pytest

from sidestep.cli import main
from sidestep.config import schema
from sidestep.config.presets import PresetError, PresetStore, sanitize_name

BUILTINS = {"recommended", "quick_test", "high_quality", "vram_24gb_plus", "vram_16gb",
            "vram_12gb", "vram_8gb"}


@pytest.fixture
def store(tmp_path):
    return PresetStore(local_dir=tmp_path / "local", global_dir=tmp_path / "global")


def _non_default(s):
    """A valid value different from the default, for each preset field."""
    if s.kind == "bool":
        return not s.default
    if s.kind == "int":
        return (s.default or 0) + 3 if s.maximum is None or (s.default or 0) + 3 <= s.maximum \
            else s.minimum
    if s.kind == "float":
        lo = s.minimum or 0.0
        return round(lo + 0.37, 4)
    if s.kind == "str_list":
        return ("q_proj", "v_proj")
    if s.kind == "str":
        return next(c for c in s.choices if c != s.default)
    raise AssertionError(s)


def test_every_preset_field_round_trips(store):
    values = {s.name: _non_default(s) for s in schema.PRESET_FIELDS}
    store.save("all_fields", values, "everything changed")
    loaded = store.load("all_fields")
    assert dict(loaded.values) == values
    assert loaded.description == "everything changed" and loaded.source == "local"
    raw = json.loads((store.dirs["local"] / "all_fields.json").read_text())
    assert raw["target_modules_str"] == "q_proj v_proj"  # spec 000 stores a string
    # spec 000's 38 fields plus the validation/EMA four (#17) and LoHA's two; older readers
    # ignore them
    assert len(schema.PRESET_FIELDS) == 38 + 4 + 2
    assert not {"checkpoint_dir", "dataset_dir", "output_dir", "device", "precision"} & set(raw)


def test_builtins_present_and_valid(store):
    infos = {i.name: i for i in store.list()}
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        p = store.load(name)
        assert p.source == "builtin" and p.description
    rec = store.load("recommended").values
    assert (rec["rank"], rec["alpha"], rec["epochs"], rec["optimizer_type"],
            rec["scheduler_type"]) == (64, 128, 100, "adamw", "cosine")
    q = store.load("quick_test").values
    assert (q["rank"], q["alpha"], q["epochs"]) == (16, 32, 10)
    h = store.load("high_quality").values
    assert (h["rank"], h["alpha"], h["epochs"]) == (128, 256, 1000)
    v24 = store.load("vram_24gb_plus").values
    assert (v24["rank"], v24["batch_size"], v24["gradient_accumulation"],
            v24["optimizer_type"]) == (128, 2, 2, "adamw")
    v16 = store.load("vram_16gb").values
    assert (v16["rank"], v16["batch_size"], v16["optimizer_type"]) == (64, 1, "adamw")
    v12 = store.load("vram_12gb").values
    assert (v12["rank"], v12["optimizer_type"], v12["offload_encoder"]) == (32, "adamw8bit", True)
    v8 = store.load("vram_8gb").values
    assert (v8["rank"], v8["optimizer_type"], v8["offload_encoder"]) == (16, "adamw8bit", True)
    assert v8["gradient_accumulation"] > v16["gradient_accumulation"]


def test_priority_local_then_global_then_builtin(store):
    store.dirs["global"].mkdir(parents=True)
    (store.dirs["global"] / "recommended.json").write_text(json.dumps({"rank": 8}))
    (store.dirs["global"] / "mine.json").write_text(json.dumps({"rank": 9}))
    assert store.load("recommended").values["rank"] == 8
    assert store.load("recommended").source == "global"
    store.save("recommended", {"rank": 4})
    assert store.load("recommended").values["rank"] == 4
    assert store.load("recommended").source == "local"
    info = {i.name: i for i in store.list()}["recommended"]
    assert info.source == "local" and info.shadows == ("global", "builtin")
    store.delete("recommended")
    assert store.load("recommended").source == "global"
    store.delete("recommended")
    assert store.load("recommended").source == "builtin"
    with pytest.raises(PresetError, match="built-in"):
        store.delete("recommended")
    assert store.load("mine").values == {"rank": 9}


def test_saves_never_touch_builtins(store):
    before = {p.name: p.read_bytes() for p in store.dirs["builtin"].glob("*.json")}
    store.save("quick_test", {"rank": 2})
    after = {p.name: p.read_bytes() for p in store.dirs["builtin"].glob("*.json")}
    assert before == after
    builtin_as_local = PresetStore(local_dir=store.dirs["builtin"])
    with pytest.raises(PresetError, match="read-only"):
        builtin_as_local.save("x", {"rank": 2})


def test_unknown_ignored_missing_default_wrong_type_named(store, tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"name": "p", "rank": 8, "future_knob": 1}))
    name, _ = store.import_file(f)
    p = store.load(name)
    assert p.values == {"rank": 8}
    for bad, field in [({"rank": "sixty"}, "rank"), ({"gradient_checkpointing": "yes"},
                                                      "gradient_checkpointing"),
                       ({"learning_rate": [1]}, "learning_rate"), ({"rank": True}, "rank"),
                       ({"optimizer_type": "sgd"}, "optimizer_type")]:
        f.write_text(json.dumps(bad))
        with pytest.raises(PresetError, match=f"field '{field}'"):
            store.import_file(f, overwrite=True)
    # another JSON file (a dataset.json) is not made into an empty preset
    f.write_text(json.dumps({"metadata": {"name": "songs"}, "samples": []}))
    with pytest.raises(PresetError, match="holds no preset settings"):
        store.import_file(f)
    assert store.find(name) and not (store.dirs["local"] / "p2.json").exists()


@pytest.mark.parametrize("raw,expected", [
    ("my preset", "my_preset"), ('we:ird*na?me"<>|', "weirdname"), ("a/b", "ab"),
    ("Lo-Fi v2", "Lo-Fi_v2"),
])
def test_sanitize(raw, expected):
    assert sanitize_name(raw) == expected


@pytest.mark.parametrize("raw", ["..", "../evil", "a/../b", "/etc/passwd", "\\server\\x",
                                 "CON", "con", "Nul", "com1", "LPT9", "aux.json", "", "   ",
                                 "???"])
def test_rejected_names(raw):
    with pytest.raises(PresetError):
        sanitize_name(raw)


def _import(capsys, path, *extra):
    code = main(["--plain", "presets", "import", str(path), *extra])
    return code, capsys.readouterr()


def test_import_rules_through_cli(capsys, in_tmp_cwd):
    good = in_tmp_cwd / "from file.json"
    good.write_text(json.dumps({"rank": 8, "description": "d"}))
    code, _ = _import(capsys, good)
    assert code == 0 and (in_tmp_cwd / "presets" / "from_file.json").exists()
    named = in_tmp_cwd / "x.json"
    named.write_text(json.dumps({"name": "My Name", "rank": 8}))
    assert _import(capsys, named)[0] == 0
    assert (in_tmp_cwd / "presets" / "My_Name.json").exists()
    # same name again: refused without --force (the user's preset is not lost)
    code, out = _import(capsys, named)
    assert code == 2 and "already exists" in out.err
    # the way out is true of an import (it said "choose another name", and import has no
    # flag for one: the name is the file's)
    assert f'pass --force to replace it, or change the "name" field in {named}' in out.err
    code, out = _import(capsys, good)
    assert code == 2 and f"or change the file's name in {good}" in out.err
    assert _import(capsys, named, "--force")[0] == 0
    # a folder (where `presets export` wrote): one file in it is asked for, by name
    code, out = _import(capsys, in_tmp_cwd / "presets")
    assert code == 2 and "presets: is a folder; give one preset file in it (My_Name.json" \
        in out.err, out.err

    cases = {
        "notjson.json": ("{rank: 8", "not valid JSON"),
        "list.json": ("[1, 2]", "JSON object"),
        "trav.json": (json.dumps({"name": "../../evil"}), "looks like a path"),
        "abs.json": (json.dumps({"name": "/tmp/evil"}), "looks like a path"),
        "CON.json": (json.dumps({"rank": 8}), "reserved"),
        "dev.json": (json.dumps({"name": "lpt3"}), "reserved"),
        "type.json": (json.dumps({"rank": "x"}), "field 'rank'"),
    }
    for fname, (text, needle) in cases.items():
        f = in_tmp_cwd / fname
        f.write_text(text)
        code, out = _import(capsys, f)
        assert code == 2, fname
        assert needle in out.err, (fname, out.err)
    big = in_tmp_cwd / "big.json"
    big.write_text(json.dumps({"rank": 8, "description": "x" * (1024 * 1024)}))
    code, out = _import(capsys, big)
    assert code == 2 and "under 1024 KB" in out.err
    code, out = _import(capsys, in_tmp_cwd / "missing.json")
    assert code == 2 and "not found" in out.err
    assert not (in_tmp_cwd.parent / "evil.json").exists()


def _config_with_preset(capsys, name: str) -> dict:
    """`fixed --preset NAME --print-config`, read back."""
    capsys.readouterr()
    assert main(["fixed", "--checkpoint-dir", "a", "--dataset-dir", "b", "--output-dir", "c",
                 "--preset", name, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_loha_preset_keeps_its_dims(capsys, in_tmp_cwd):
    """`presets save lh --adapter-type loha --loha-linear-dim 8` was refused (no such flag
    there), and a file holding them trained at the defaults without a word."""
    assert main(["presets", "save", "lh", "--adapter-type", "loha", "--loha-linear-dim", "8",
                 "--loha-linear-alpha", "4"]) == 0
    cfg = _config_with_preset(capsys, "lh")
    assert (cfg["adapter_type"], cfg["loha_linear_dim"], cfg["loha_linear_alpha"]) == \
        ("loha", 8, 4)


def test_cli_save_view_export_delete(capsys, in_tmp_cwd):
    assert main(["presets", "save", "mine", "--rank", "8", "--no-gradient-checkpointing",
                 "--target-modules", "q_proj", "v_proj", "--description", "test"]) == 0
    data = json.loads((in_tmp_cwd / "presets" / "mine.json").read_text())
    assert data["rank"] == 8 and data["gradient_checkpointing"] is False
    assert data["target_modules_str"] == "q_proj v_proj" and data["alpha"] == 128
    capsys.readouterr()
    assert main(["--plain", "presets", "view", "mine"]) == 0
    assert "rank" in capsys.readouterr().out
    assert main(["--plain", "presets", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mine" in listing and "quick_test" in listing and "builtin" in listing
    dest = in_tmp_cwd / "out.json"
    assert main(["presets", "export", "quick_test", str(dest)]) == 0
    assert json.loads(dest.read_text())["rank"] == 16
    assert main(["presets", "export", "quick_test", str(dest)]) == 2  # no silent overwrite
    capsys.readouterr()
    # a typo in the folder makes no folders: only the file would have been written
    before = sorted(p.relative_to(in_tmp_cwd) for p in in_tmp_cwd.rglob("*"))
    assert main(["presets", "export", "quick_test", str(in_tmp_cwd / "typo" / "x.json")]) == 2
    assert "the folder" in capsys.readouterr().err and not (in_tmp_cwd / "typo").exists()
    assert main(["presets", "export", "quick_test", str(dest / "x.json")]) == 2
    assert f"cannot write it ({dest} is a file" in capsys.readouterr().err
    assert sorted(p.relative_to(in_tmp_cwd) for p in in_tmp_cwd.rglob("*")) == before
    assert main(["presets", "delete", "mine"]) == 0
    assert main(["presets", "delete", "quick_test"]) == 2
    assert main(["presets", "view", "nope"]) == 2


def test_preset_saved_by_cli_drives_training_config(capsys, in_tmp_cwd):
    assert main(["presets", "save", "tiny", "--rank", "4", "--epochs", "2",
                 "--optimizer-type", "adafactor"]) == 0
    cfg = _config_with_preset(capsys, "tiny")
    assert (cfg["rank"], cfg["epochs"], cfg["optimizer_type"]) == (4, 2, "adafactor")
