"""Module config files (engine/module_config.py) and `sidestep compare-configs` (issue #15):
loading and its error messages, layer expansion, the comparison numbers, and the CLI."""

from __future__ import annotations

import json

import pytest

from sidestep.cli import main
from sidestep.config.schema import PROJECTIONS
from sidestep.engine.module_config import (
    ModuleConfigError, compare, load_module_config, module_names, pair_line, spearman,
)

M1 = "layers.0.self_attn.q_proj"
M2 = "layers.1.self_attn.q_proj"
M3 = "layers.0.cross_attn.v_proj"
M4 = "layers.1.cross_attn.o_proj"
M5 = "layers.2.self_attn.k_proj"
M6 = "layers.2.cross_attn.q_proj"


def entries(names, top=1.0, step=0.1):
    return [{"name": n, "score": round(top - i * step, 6)} for i, n in enumerate(names)]


def doc(ranked, k, granularity="module", **extra):
    data = {"version": 1, "granularity": granularity, "top_k": k, "model": "demo",
            "dataset": "tensors", "batches": 4, "seed": 42,
            "modules": entries(ranked[:k]), "all": entries(ranked)}
    data.update(extra)
    return data


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def pair(tmp_path):
    """a ranks M1..M5; b ranks M2 M6 M1 M3 M5 M4 (top 3 each)."""
    a = write(tmp_path, "a.json", doc([M1, M2, M3, M4, M5], 3))
    b = write(tmp_path, "b.json", doc([M2, M6, M1, M3, M5, M4], 3))
    return a, b


def test_load_reads_every_field(pair):
    cfg = load_module_config(pair[0])
    assert cfg.granularity == "module" and cfg.top_k == 3 and cfg.model == "demo"
    assert cfg.dataset == "tensors" and cfg.batches == 4 and cfg.seed == 42
    assert cfg.modules == [(M1, 1.0), (M2, 0.9), (M3, 0.8)]
    assert [n for n, _ in cfg.all] == [M1, M2, M3, M4, M5]
    assert cfg.path == str(pair[0])


def test_all_defaults_to_modules_in_a_hand_written_file(tmp_path):
    path = write(tmp_path, "hand.json", {"version": 1, "granularity": "module",
                                         "modules": entries([M3, M1])})
    cfg = load_module_config(path)
    assert cfg.all == cfg.modules == [(M3, 1.0), (M1, 0.9)]
    assert cfg.top_k == 2 and cfg.model is None and cfg.batches is None


def test_compare_numbers(pair):
    result = compare([load_module_config(p) for p in pair])
    (p,) = result["pairs"]
    # top 3: {M1 M2 M3} and {M2 M6 M1}: 2 shared of 4 in all
    assert (p["a"], p["b"], p["overlap"], p["top_k_a"], p["top_k_b"]) == ("a", "b", 2, 3, 3)
    assert p["jaccard"] == pytest.approx(0.5)
    # common M1..M5; b's order among them is M2 M1 M3 M5 M4: d = -1 1 0 -1 1, sum d^2 = 4,
    # rho = 1 - 6*4 / (5*(25-1)) = 0.8
    assert p["common"] == 5
    assert p["spearman"] == pytest.approx(0.8)
    assert pair_line(p) == ("a vs b: top-3 overlap 2/3 (Jaccard 0.50), Spearman 0.80 "
                            "over 5 modules")
    # a top 8 against a top 32: "overlap 8/8" read as full agreement
    wide = {**p, "top_k_a": 32, "top_k_b": 8, "overlap": 8, "jaccard": 0.25}
    assert pair_line(wide) == ("a vs b: 8 of b's top 8 in a's top 32 (Jaccard 0.25), "
                               "Spearman 0.80 over 5 modules")
    # 0.996 printed "Spearman 1.00": a near-perfect ranking read as the same one
    for rho, shown in ((0.996, "0.996"), (-0.9996, "-0.9996"), (0.999999, "0.9999"),
                       (1.0, "1.00"), (-1.0, "-1.00"), (0.994, "0.99")):
        assert f"Spearman {shown} over" in pair_line({**p, "spearman": rho}), rho
    rows = {r["name"]: r for r in result["modules"]}
    assert set(rows) == {M1, M2, M3, M4, M5, M6}
    assert rows[M6]["ranks"] == [None, 2] and rows[M6]["scores"] == [None, pytest.approx(0.9)]
    assert rows[M4]["ranks"] == [4, 6]
    # by best rank across files (M1 and M2 tie at 1: layer order), then the rest
    assert [r["name"] for r in result["modules"]] == [M1, M2, M6, M3, M4, M5]
    assert [f["name"] for f in result["files"]] == ["a", "b"]
    assert result["granularity"] == "module"


def test_spearman_matches_pearson_of_ranks():
    a = [M1, M2, M3, M4, M5, M6]
    b = [M6, M3, M1, M5, M2, M4]
    rho, n = spearman(a, b)
    ra = list(range(6))
    rb = [b.index(x) for x in a]
    mean = 2.5
    cov = sum((x - mean) * (y - mean) for x, y in zip(ra, rb))
    var = sum((x - mean) ** 2 for x in ra)
    assert n == 6 and rho == pytest.approx(cov / var)
    assert spearman(a, list(reversed(a)))[0] == pytest.approx(-1.0)
    assert spearman([M1, M2], [M2, M3]) == (None, 1)


def test_identical_files_agree_fully(tmp_path):
    a = write(tmp_path, "x.json", doc([M1, M2, M3], 2))
    b = write(tmp_path, "y.json", doc([M1, M2, M3], 2))
    (p,) = compare([load_module_config(a), load_module_config(b)])["pairs"]
    assert p["overlap"] == 2 and p["jaccard"] == 1.0 and p["spearman"] == pytest.approx(1.0)


def test_three_files_give_three_pairs_and_clashing_stems_use_paths(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = write(tmp_path / "one", "est.json", doc([M1, M2], 1))
    b = write(tmp_path / "two", "est.json", doc([M2, M1], 1))
    c = write(tmp_path, "c.json", doc([M1, M3], 1))
    result = compare([load_module_config(p) for p in (a, b, c)])
    assert [f["name"] for f in result["files"]] == [str(a), str(b), "c"]
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [
        (str(a), str(b)), (str(a), "c"), (str(b), "c")]
    # one common module: no correlation
    assert result["pairs"][1]["spearman"] is None and result["pairs"][1]["common"] == 1


def test_mixed_granularities_cannot_be_compared(tmp_path):
    a = write(tmp_path, "mod.json", doc([M1, M2], 1))
    b = write(tmp_path, "lay.json", doc(["layers.0", "layers.1"], 1, granularity="layer"))
    with pytest.raises(ModuleConfigError, match="same --granularity") as exc:
        compare([load_module_config(a), load_module_config(b)])
    assert "mod.json (module)" in str(exc.value) and "lay.json (layer)" in str(exc.value)


def test_module_names_expands_layers(tmp_path):
    path = write(tmp_path, "layers.json",
                 doc(["layers.3", "layers.1", "layers.0"], 2, granularity="layer"))
    cfg = load_module_config(path)
    names = module_names(cfg)
    assert len(names) == 2 * 2 * len(PROJECTIONS)
    assert names[:5] == ["layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj",
                         "layers.1.self_attn.v_proj", "layers.1.self_attn.o_proj",
                         "layers.1.cross_attn.q_proj"]
    assert names[-1] == "layers.3.cross_attn.o_proj"
    assert module_names(cfg, num_layers=4) == names
    with pytest.raises(ModuleConfigError, match="'layers.3' is past the model's last layer"):
        module_names(cfg, num_layers=3)


def test_module_names_keeps_the_ranked_modules(tmp_path):
    cfg = load_module_config(write(tmp_path, "m.json", doc([M5, M1, M2], 2)))
    assert module_names(cfg) == [M5, M1]
    with pytest.raises(ModuleConfigError, match=r"m\.json: 'layers\.2\.self_attn\.k_proj' "):
        module_names(cfg, num_layers=2)


BAD = [
    ("not json", "{nope", "not valid JSON"),
    ("a list", "[1, 2]", "must be a JSON object"),
    ("no version", {"granularity": "module", "modules": entries([M1])}, "'version' is missing"),
    ("a dataset.json", {"metadata": {}, "samples": []}, "not a module config (no 'modules'"),
    ("version 2", doc([M1], 1, version=2), "version 2 is not supported"),
    ("version true", doc([M1], 1, version=True), "version True is not supported"),
    ("granularity", doc([M1], 1, granularity="block"), "'granularity' must be"),
    ("no modules", {"version": 1, "granularity": "module"}, "'modules' is missing"),
    ("modules dict", doc([M1], 1, modules={"a": 1}), "'modules' must be a list"),
    ("modules empty", doc([M1], 1, modules=[]), "'modules' is empty"),
    ("all str", doc([M1], 1, all="x"), "'all' must be a list"),
    ("entry not object", doc([M1], 1, modules=[M1]), "entry 1 must be an object"),
    ("entry no score", doc([M1], 1, modules=[{"name": M1}]), "entry 1 must be an object"),
    ("bad name", doc([M1], 1, modules=entries(["layers.0.mlp.up_proj"])),
     "'layers.0.mlp.up_proj' is not a module name"),
    ("leading zero", doc([M1], 1, modules=entries(["layers.01.self_attn.q_proj"])),
     "is not a module name"),
    ("layer name in module file", doc([M1], 1, modules=entries(["layers.1"])),
     "'layers.1' is not a module name"),
    ("module name in layer file", doc(["layers.1"], 1, granularity="layer",
                                      modules=entries([M1])), "is not a layer name"),
    ("name not str", doc([M1], 1, modules=[{"name": 3, "score": 1}]), "3 is not a module"),
    ("score str", doc([M1], 1, modules=[{"name": M1, "score": "high"}]),
     "score must be a finite number"),
    ("score nan", '{"version": 1, "granularity": "module", '
                  '"modules": [{"name": "%s", "score": NaN}]}' % M1,
     "score must be a finite number"),
    ("score bool", doc([M1], 1, modules=[{"name": M1, "score": True}]),
     "score must be a finite number"),
    ("duplicate", doc([M1, M2], 2, all=entries([M1, M2, M1])), "listed twice"),
    ("ascending", doc([M1], 1, modules=[{"name": M1, "score": 0.1}, {"name": M2, "score": 0.5}],
                      all=entries([M2, M1])), "best first"),
    ("pick not in all", doc([M1, M2], 1, modules=entries([M3])), "in 'modules' but not in"),
    ("top_k", doc([M1], 1, top_k=0), "'top_k' must be a whole number"),
    ("model", doc([M1], 1, model=5), "'model' must be a string"),
    ("batches", doc([M1], 1, batches="four"), "'batches' must be a whole number"),
]


@pytest.mark.parametrize("data, expected", [(d, e) for _, d, e in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_files_are_named_and_explained(tmp_path, data, expected):
    path = write(tmp_path, "bad.json", data)
    with pytest.raises(ModuleConfigError) as exc:
        load_module_config(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModuleConfigError, match="gone.json: file not found.*sidestep estimate"):
        load_module_config(tmp_path / "gone.json")
    with pytest.raises(ModuleConfigError, match="is a folder"):
        load_module_config(tmp_path)


def test_error_is_a_value_error():
    assert issubclass(ModuleConfigError, ValueError)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_json(pair, capsys):
    assert main(["compare-configs", "--configs", str(pair[0]), str(pair[1]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"granularity", "files", "modules", "pairs"}
    assert data["files"][0]["path"] == str(pair[0]) and data["files"][1]["name"] == "b"
    assert data["modules"][0] == {"name": M1, "ranks": [1, 3], "scores": [1.0, 0.8]}
    (p,) = data["pairs"]
    assert p["overlap"] == 2 and p["jaccard"] == 0.5 and p["spearman"] == pytest.approx(0.8)


def test_cli_table(pair, capsys):
    assert main(["--plain", "compare-configs", "--configs", str(pair[0]), str(pair[1])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("module"))
    assert header.split() == ["module", "a", "b"]
    first = lines[lines.index(header) + 1].split()
    assert first == [M1, "1/1.000", "3/0.800"]
    assert any(line.split() == [M6, "-", "2/0.900"] for line in lines)
    assert lines[-1] == ("a vs b: top-3 overlap 2/3 (Jaccard 0.50), Spearman 0.80 "
                         "over 5 modules")


def test_cli_missing_file_exits_2(pair, tmp_path, capsys):
    missing = tmp_path / "nothere.json"
    assert main(["compare-configs", "--configs", str(pair[0]), str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{missing}: file not found" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_bad_and_mixed_files_exit_2(pair, tmp_path, capsys):
    bad = write(tmp_path, "bad.json", "{")
    assert main(["compare-configs", "--configs", str(pair[0]), str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert "bad.json: not valid JSON" in captured.err and captured.out == ""
    layer = write(tmp_path, "layer.json", doc(["layers.0"], 1, granularity="layer"))
    assert main(["compare-configs", "--configs", str(pair[0]), str(layer)]) == 2
    assert "same --granularity" in capsys.readouterr().err


def test_cli_needs_two_files(pair, capsys):
    assert main(["compare-configs", "--configs", str(pair[0])]) == 2
    assert "at least two" in capsys.readouterr().err


def test_files_given_without_configs_say_to_use_configs(capsys):
    """`compare-configs a.json b.json` said only "unrecognized arguments" (the spec's flag is
    --configs; the files are not taken as positionals)."""
    with pytest.raises(SystemExit) as exc:
        main(["compare-configs", "a.json", "b.json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "give them with --configs: `sidestep compare-configs --configs a.json b.json`" in err
    assert "Traceback" not in err
