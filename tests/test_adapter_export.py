"""`sidestep export` and `sidestep check-adapter` on real (tiny) trained adapters (issue #16).

The effective weight change is recomputed here from the files alone, with each runtime's
public rule (docs/adapter-formats.md), not with the code under test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import Recorder, train_config
from sidestep.cli import main

TOL = dict(rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def runs(demo_root, small_tensors, tmp_path_factory):
    from sidestep.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("adapter_runs")
    out = {}
    for name, kw in {"lora": {}, "lokr": dict(adapter_type="lokr", lokr_factor=4)}.items():
        cfg = train_config(demo_root, small_tensors, root / name, epochs=1, **kw)
        result = Trainer(cfg, [Recorder()]).run()
        assert result.status == "completed", result.error
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def linears(demo_root):
    """The demo decoder's Linear modules: name -> (out, in)."""
    from sidestep.model.config import AceStepConfig
    from sidestep.model.decoder import AceStepDecoder

    path = demo_root / "checkpoints" / "acestep-v15-turbo" / "config.json"
    with torch.device("meta"):
        decoder = AceStepDecoder(AceStepConfig.from_dict(json.loads(path.read_text())))
    return {n: (m.out_features, m.in_features) for n, m in decoder.named_modules()
            if isinstance(m, torch.nn.Linear)}


def peft_deltas(folder: Path) -> dict[str, torch.Tensor]:
    """PEFT: B @ A * lora_alpha / r."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    sd = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key in sd:
        if key.endswith(".lora_A.weight"):
            name = key[len("base_model.model."):-len(".lora_A.weight")]
            b = sd[key.replace(".lora_A.", ".lora_B.")].double()
            out[name] = b @ sd[key].double() * (cfg["lora_alpha"] / cfg["r"])
    return out


def file_lora_deltas(path: Path, linears) -> dict[str, torch.Tensor]:
    """ComfyUI / acestep.cpp: up @ down * alpha / rank; every key is one of the three."""
    sd = load_file(str(path))
    out = {}
    for key in sd:
        assert key.startswith("base_model.model."), key
        rest = key[len("base_model.model."):]
        name, _, part = rest.rpartition(".lora_") if ".lora_" in rest else \
            (rest[:-len(".alpha")], "", "alpha")
        assert name in linears, key
        assert part in ("down.weight", "up.weight", "alpha"), key
        if part == "alpha":
            alpha = sd[key]
            assert alpha.dtype == torch.float32 and alpha.ndim == 0  # what acestep.cpp reads
            down, up = sd[f"base_model.model.{name}.lora_down.weight"], \
                sd[f"base_model.model.{name}.lora_up.weight"]
            out[name] = up.double() @ down.double() * (float(alpha) / down.shape[0])
    assert len(sd) == 3 * len(out)
    return out


def _kron(sd, prefix):
    def half(i):
        if f"{prefix}.lokr_w{i}" in sd:
            return sd[f"{prefix}.lokr_w{i}"].double(), None
        b = sd[f"{prefix}.lokr_w{i}_b"]
        return sd[f"{prefix}.lokr_w{i}_a"].double() @ b.double(), b.shape[0]
    (w1, r1), (w2, r2) = half(1), half(2)
    return torch.kron(w1, w2), (r2 if r2 is not None else r1)


def lokr_deltas(path: Path, linears, rule: str) -> dict[str, torch.Tensor]:
    """LyCORIS / ComfyUI: kron(w1, w2) * alpha / rank of a factorised half (1 when both are
    full); acestep.cpp: a full w2 takes its rank from lokr_config.linear_dim."""
    sd = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        linear_dim = json.loads(fh.metadata()["lokr_config"])["linear_dim"]
    flat = {n.replace(".", "_"): n for n in linears}
    out = {}
    for key in sd:
        prefix, _, part = key.rpartition(".")
        assert prefix.startswith("lycoris_") and prefix[len("lycoris_"):] in flat, key
        assert part in ("alpha", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a",
                        "lokr_w2_b"), key
        if part != "alpha":
            continue
        product, rank = _kron(sd, prefix)
        if rule == "acestep-cpp":
            assert f"{prefix}.lokr_w1" in sd  # it reads no factorised w1
            rank = rank if f"{prefix}.lokr_w2_b" in sd else linear_dim
        scale = float(sd[key]) / rank if rank else 1.0
        name = flat[prefix[len("lycoris_"):]]
        assert tuple(product.shape) == linears[name]
        out[name] = product * scale
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name], b[name], **TOL), name


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("fmt", ["comfyui", "acestep-cpp", "peft"])
def test_lora_export_keeps_the_delta(runs, linears, tmp_path, fmt, normalize):
    out = tmp_path / ("peft" if fmt == "peft" else "x.safetensors")
    args = ["--plain", "export", str(runs["lora"]), "--format", fmt, "--output", str(out)]
    assert main(args + (["--normalize-alpha"] if normalize else [])) == 0
    want = peft_deltas(runs["lora"] / "final" / "adapter")
    assert len(want) == 32 and set(want) <= set(linears)
    got = peft_deltas(out) if fmt == "peft" else file_lora_deltas(out, linears)
    assert_same(got, want)
    if normalize and fmt != "peft":
        sd = load_file(str(out))
        assert all(float(v) == 4.0 for k, v in sd.items() if k.endswith(".alpha"))  # rank 4
    if normalize and fmt == "peft":
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["lora_alpha"] == cfg["r"]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("fmt", ["comfyui", "acestep-cpp"])
def test_lokr_export_keeps_the_delta(runs, linears, tmp_path, fmt, normalize):
    out = tmp_path / "k.safetensors"
    args = ["--plain", "export", str(runs["lokr"] / "final"), "--format", fmt,
            "--output", str(out)]
    assert main(args + (["--normalize-alpha"] if normalize else [])) == 0
    want = lokr_deltas(runs["lokr"] / "final" / "adapter" / "lokr_weights.safetensors",
                       linears, "comfyui")
    assert len(want) == 32
    assert_same(lokr_deltas(out, linears, fmt), want)
    with safe_open(str(out), "pt") as fh:
        assert json.loads(fh.metadata()["lokr_config"])["algo"] == "lokr"


def test_lokr_has_no_peft_form(runs, tmp_path):
    before = tree_hash(tmp_path)
    assert main(["--plain", "export", str(runs["lokr"]), "--format", "peft", "--output",
                 str(tmp_path / "p")]) == 2
    assert tree_hash(tmp_path) == before


def test_exports_check_clean_everywhere(runs, tmp_path, capsys):
    from sidestep.engine.adapter_check import check_adapter

    for name, fmt in (("lora", "comfyui"), ("lora", "acestep-cpp"), ("lokr", "comfyui"),
                      ("lokr", "acestep-cpp")):
        out = tmp_path / f"{name}-{fmt}.safetensors"
        assert main(["--plain", "export", str(runs[name]), "--format", fmt, "--output",
                     str(out)]) == 0
        report = check_adapter(out)
        assert not report.problems
        v = {r.runtime: r for r in report.runtimes}
        for rt in ("comfyui", "acestep-cpp"):
            assert v[rt].loads and v[rt].modules == 32 and not v[rt].dropped
            assert v[rt].strength == 1.0
        assert not v["acestep"].loads  # a single file: ACE-Step wants the folder


def test_check_peft_folder_reports_half_strength_in_comfyui(runs, capsys):
    code = main(["--plain", "check-adapter", str(runs["lora"]), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and not report["problems"]
    v = {r["runtime"]: r for r in report["runtimes"]}
    assert v["acestep"]["loads"] and v["peft"]["loads"] and v["peft"]["modules"] == 32
    assert v["comfyui"]["strength"] == 0.5  # alpha 8 = 2 x rank 4, no .alpha tensors
    assert v["acestep-cpp"]["strength"] == 1.0  # it reads lora_alpha from the config


def test_check_flags_foreign_keys_missing_alpha_and_rank_mismatch(runs, tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    assert main(["--plain", "export", str(runs["lora"]), "--format", "comfyui", "--output",
                 str(good)]) == 0
    capsys.readouterr()
    sd = load_file(str(good))
    q = "base_model.model.layers.0.self_attn.q_proj"
    k = "base_model.model.layers.1.cross_attn.k_proj"
    sd["base_model.model.encoder.lyric_encoder.proj.lora_down.weight"] = torch.zeros(4, 8)
    sd["text_encoder.layers.0.weight"] = torch.zeros(2)
    del sd[f"{q}.alpha"]
    sd[f"{k}.lora_down.weight"] = sd[f"{k}.lora_down.weight"][:3].contiguous()
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    assert main(["--plain", "check-adapter", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    kinds = {p["kind"]: p["message"] for p in report["problems"]}
    assert "encoder.lyric_encoder.proj" in kinds["foreign-keys"]
    assert "text_encoder.layers.0.weight" in kinds["foreign-keys"]
    assert q in kinds["missing-alpha"] and "1 modules" in kinds["missing-alpha"]
    assert k in kinds["rank-mismatch"]
    v = {r["runtime"]: r for r in report["runtimes"]}
    assert f"{k}.lora_down.weight" in v["comfyui"]["dropped"]
    assert "text_encoder.layers.0.weight" in v["acestep-cpp"]["dropped"]
    assert v["comfyui"]["modules"] == 31
    # the plain text names each problem too
    assert main(["--plain", "check-adapter", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "[foreign-keys]" in text and "[missing-alpha]" in text and "[rank-mismatch]" in text


def test_refusals_write_nothing(runs, demo_root, tmp_path, capsys):
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"keep me")
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notadapter").mkdir()
    (tmp_path / "notadapter" / "song.txt").write_text("x")
    before = tree_hash(tmp_path)
    src = str(runs["lora"])
    cases = [
        [src, "--format", "comfyui", "--output", str(taken)],             # exists
        [src, "--format", "comfyui", "--output", str(tmp_path / "dir.safetensors")],  # folder
        [src, "--format", "peft", "--output", str(tmp_path / "afile")],   # a file, not a folder
        [src, "--format", "peft", "--output", str(tmp_path / "notadapter"), "--force"],
        [src, "--format", "comfyui", "--output", str(tmp_path / "x.bin")],
        [str(tmp_path / "notadapter"), "--format", "comfyui", "--output",
         str(tmp_path / "y.safetensors")],                               # not an adapter
        [str(tmp_path / "missing"), "--format", "comfyui", "--output",
         str(tmp_path / "z.safetensors")],
        [src, "--format", "peft", "--output", str(runs["lora"] / "final" / "adapter"),
         "--force"],                                                     # the source itself
    ]
    for args in cases:
        assert main(["--plain", "export", *args]) == 2, args
    assert tree_hash(tmp_path) == before
    err = capsys.readouterr().err
    assert "already exists" in err and "is a folder" in err and "not an adapter" in err
    assert main(["--plain", "check-adapter", str(tmp_path / "notadapter")]) == 2
    # --force replaces a file, and a PEFT folder only when it holds a PEFT adapter
    assert main(["--plain", "export", src, "--format", "comfyui", "--output", str(taken),
                 "--force"]) == 0
    assert taken.read_bytes() != b"keep me"
    peft = tmp_path / "peft"
    for _ in range(2):
        assert main(["--plain", "export", src, "--format", "peft", "--output", str(peft),
                     "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("layout", ["w1_factorised", "both_full"])
def test_lokr_other_layouts_keep_the_delta(runs, linears, tmp_path, layout):
    """Layouts the tiny model does not train: a factorised w1 (decompose_both on big weights;
    acestep.cpp needs it multiplied out) and two full halves (scale 1 in LyCORIS/ComfyUI,
    alpha / linear_dim in acestep.cpp)."""
    from sidestep.engine.export import export_adapter

    src = runs["lokr"] / "final" / "adapter" / "lokr_weights.safetensors"
    with safe_open(str(src), "pt") as fh:
        meta = fh.metadata()
    sd = load_file(str(src))
    for key in [k for k in sd if k.endswith(".lokr_w1")]:
        prefix = key[:-len(".lokr_w1")]
        if layout == "w1_factorised":
            w1 = sd.pop(key)
            sd[f"{prefix}.lokr_w1_a"] = w1 * 2.0
            sd[f"{prefix}.lokr_w1_b"] = torch.eye(w1.shape[1]) * 0.5
        else:
            sd[f"{prefix}.lokr_w2"] = (sd.pop(f"{prefix}.lokr_w2_a") @
                                       sd.pop(f"{prefix}.lokr_w2_b")).contiguous()
    folder = tmp_path / "src"
    folder.mkdir()
    save_file(sd, str(folder / "lokr_weights.safetensors"), metadata=meta)
    want = lokr_deltas(folder / "lokr_weights.safetensors", linears, "comfyui")
    for fmt in ("comfyui", "acestep-cpp"):
        out = tmp_path / f"{fmt}.safetensors"
        export_adapter(folder, fmt, out)
        assert_same(lokr_deltas(out, linears, fmt), want)
