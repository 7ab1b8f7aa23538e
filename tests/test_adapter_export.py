"""`sidestep export` and `sidestep check-adapter` on real (tiny) trained adapters (issue #16).

The effective weight change is recomputed here from the files alone, with each runtime's
public rule (docs/adapter-formats.md), not with the code under test. DoRA and LoHA are
compared with what PEFT (merge_and_unload) and LyCORIS (its own weight functions) apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import Recorder, train_config, tree_hash
from sidestep.cli import main

TOL = dict(rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def runs(demo_root, small_tensors, tmp_path_factory):
    from sidestep.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("adapter_runs")
    out = {}
    kinds = {"lora": {}, "lokr": dict(adapter_type="lokr", lokr_factor=4),
             "dora": dict(adapter_type="dora"),
             "loha": dict(adapter_type="loha", loha_linear_dim=4, loha_linear_alpha=8)}
    for name, kw in kinds.items():
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


# -- DoRA and LoHA ---------------------------------------------------------------------------
EPS32 = torch.finfo(torch.float32).eps
EPS_BF16 = 2.0 ** -7  # acestep.cpp's constant (torch.finfo(torch.bfloat16).eps)


def _linear_weights(module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().double() for n, m in module.named_modules()
            if isinstance(m, torch.nn.Linear)}


@pytest.fixture(scope="module")
def model_dir(demo_root):
    return demo_root / "checkpoints" / "acestep-v15-turbo"


@pytest.fixture(scope="module")
def base(model_dir):
    """The demo decoder's Linear weights as stored (float64)."""
    from sidestep.model import load_acestep

    return _linear_weights(load_acestep(model_dir, parts=("decoder",)).decoder)


def peft_merged(folder: Path, model_dir: Path) -> dict[str, torch.Tensor]:
    """What PEFT applies: PeftModel.from_pretrained (ACE-Step's loader) + merge_and_unload."""
    from peft import PeftModel

    from sidestep.model import load_acestep

    fresh = load_acestep(model_dir, parts=("decoder",)).decoder
    return _linear_weights(PeftModel.from_pretrained(fresh, str(folder)).merge_and_unload())


@pytest.fixture(scope="module")
def dora_truth(runs, model_dir, base):
    merged = peft_merged(runs["dora"] / "final" / "adapter", model_dir)
    changed = {n: w for n, w in merged.items() if not torch.equal(w, base[n])}
    assert len(changed) == 32
    return changed


def comfy_weights(path: Path, base) -> dict[str, torch.Tensor]:
    """ComfyUI (comfy/weight_adapter/lora.py + base.py weight_decompose, strength 1): W + s*dW,
    and with a dora_scale whose first dim is out: times dora_scale / (||W|| + eps) with the
    BASE weight's row norm (its output-axis branch); else per column of W + s*dW."""
    sd = load_file(str(path))
    out = {}
    for key in sd:
        if not key.endswith(".lora_down.weight"):
            continue
        prefix = key[:-len(".lora_down.weight")]
        assert prefix.startswith("base_model.model."), key
        name = prefix[len("base_model.model."):]
        down, up = sd[key].double(), sd[f"{prefix}.lora_up.weight"].double()
        w = base[name]
        calc = w + up @ down * (float(sd[f"{prefix}.alpha"]) / down.shape[0])
        ds = sd.get(f"{prefix}.dora_scale")
        if ds is not None:
            ds = ds.double()
            assert ds.ndim == 2  # 1-D breaks its broadcast (ComfyUI issue #12938)
            norm = w.norm(dim=1, keepdim=True) if ds.shape[0] == w.shape[0] else \
                calc.norm(dim=0, keepdim=True)
            calc = calc * ds / (norm + EPS32)
        out[name] = calc
    assert set(sd) <= {f"base_model.model.{n}.{s}" for n in out
                       for s in ("lora_down.weight", "lora_up.weight", "alpha", "dora_scale")}
    return out


def cpp_lokr_weights(path: Path, base) -> dict[str, torch.Tensor]:
    """acestep.cpp's LoKR path (src/adapter-merge.h): a full lokr_w1, an alpha, w2_a/w2_b;
    V = W + alpha / rank * kron(w1, w2_a w2_b); a dora_scale needs dim 0 == out and scales
    row i by dora_scale[i] / (||V_i|| + bf16 eps)."""
    sd = load_file(str(path))
    flat = {n.replace(".", "_"): n for n in base}
    out = {}
    for key in sd:
        prefix, _, part = key.rpartition(".")
        assert prefix.startswith("lycoris_") and prefix[len("lycoris_"):] in flat, key
        assert part in ("lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha", "dora_scale"), key
        if part != "alpha":
            continue
        name = flat[prefix[len("lycoris_"):]]
        w1, w2a, w2b = (sd[f"{prefix}.{k}"].double() for k in ("lokr_w1", "lokr_w2_a",
                                                                 "lokr_w2_b"))
        v = base[name] + torch.kron(w1, w2a @ w2b) * (float(sd[key]) / w2b.shape[0])
        ds = sd.get(f"{prefix}.dora_scale")
        if ds is not None:
            assert ds.shape[0] == v.shape[0] and ds.dtype == torch.float32
            v = v * ds.double().reshape(-1, 1) / (v.norm(dim=1, keepdim=True) + EPS_BF16)
        out[name] = v
    return out


def assert_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and got
    for name in want:
        scale = want[name].abs().max()
        assert torch.allclose(got[name], want[name], rtol=0, atol=2e-6 * scale), name


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("fmt", ["comfyui", "acestep-cpp", "peft"])
def test_dora_export_applies_what_peft_applies(runs, model_dir, base, dora_truth, tmp_path,
                                                capsys, fmt, normalize):
    out = tmp_path / ("peft" if fmt == "peft" else "d.safetensors")
    args = ["--plain", "export", str(runs["dora"]), "--format", fmt, "--output", str(out)]
    assert main(args + (["--normalize-alpha"] if normalize else [])) == 0
    text = capsys.readouterr()
    assert "DORA, 32 modules" in text.out
    if fmt == "peft":
        got = {n: w for n, w in peft_merged(out, model_dir).items() if n in dora_truth}
        assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    elif fmt == "comfyui":
        got = comfy_weights(out, base)
        assert "base weights in" in text.err  # says the dora_scale depends on the base model
    else:
        got = cpp_lokr_weights(out, base)
    assert_weights(got, dora_truth)
    if normalize and fmt != "peft":
        sd = load_file(str(out))
        assert all(float(v) == 4.0 for k, v in sd.items() if k.endswith(".alpha"))


def test_dora_scale_is_what_makes_comfyui_exact(runs, base, dora_truth, tmp_path):
    """The recomputed dora_scale matters: PEFT's magnitude copied as is would not give PEFT's
    weights in ComfyUI (it divides by the base weight's norm, not by W + dW's)."""
    from sidestep.engine.export import export_adapter

    out = tmp_path / "d.safetensors"
    export_adapter(runs["dora"], "comfyui", out)
    sd = load_file(str(out))
    peft = load_file(str(runs["dora"] / "final" / "adapter" / "adapter_model.safetensors"))
    for key in [k for k in sd if k.endswith(".dora_scale")]:
        sd[key] = peft[key.replace(".dora_scale", ".lora_magnitude_vector")].reshape(-1, 1)
    naive = tmp_path / "naive.safetensors"
    save_file(sd, str(naive))
    got = comfy_weights(naive, base)
    assert any(not torch.allclose(got[n], dora_truth[n], rtol=0,
                                  atol=1e-4 * dora_truth[n].abs().max()) for n in dora_truth)


def lycoris_loha_deltas(path: Path, model_dir: Path) -> dict[str, torch.Tensor]:
    """What LyCORIS adds in its forward: get_weight(shape) * scalar per module."""
    from lycoris import create_lycoris_from_weights

    from sidestep.model import load_acestep

    fresh = load_acestep(model_dir, parts=("decoder",)).decoder
    network, state = create_lycoris_from_weights(1.0, str(path), fresh)
    network.load_state_dict(state, strict=False)
    with torch.no_grad():
        return {lora.lora_name[len("lycoris_"):]: (lora.get_weight(lora.shape) *
                                                  lora.scalar).double()
                for lora in network.loras}


@pytest.mark.parametrize("normalize", [False, True])
def test_loha_export_applies_what_lycoris_applies(runs, model_dir, linears, tmp_path, normalize):
    src = runs["loha"] / "final" / "adapter" / "loha_weights.safetensors"
    want = lycoris_loha_deltas(src, model_dir)
    assert len(want) == 32
    out = tmp_path / "h.safetensors"
    args = ["--plain", "export", str(runs["loha"]), "--format", "comfyui", "--output", str(out)]
    assert main(args + (["--normalize-alpha"] if normalize else [])) == 0
    # ComfyUI (comfy/weight_adapter/loha.py): (w1_a w1_b) * (w2_a w2_b) * alpha / w1_b's rows,
    # on lycoris_<module> keys (its ACE-Step 1.5 key map)
    sd = load_file(str(out))
    got = {}
    for key in sd:
        prefix, _, part = key.rpartition(".")
        flat = prefix[len("lycoris_"):]
        assert prefix.startswith("lycoris_") and \
            any(n.replace(".", "_") == flat for n in linears), key
        assert part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"), key
        if part == "alpha":
            assert sd[key].dtype == torch.float32 and sd[key].ndim == 0
            f = {k: sd[f"{prefix}.{k}"].double() for k in ("hada_w1_a", "hada_w1_b",
                                                          "hada_w2_a", "hada_w2_b")}
            got[flat] = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"]) \
                * float(sd[key]) / f["hada_w1_b"].shape[0]
            if normalize:
                assert float(sd[key]) == 4.0
    assert_weights(got, want)
    with safe_open(str(out), "pt") as fh:
        assert json.loads(fh.metadata()["loha_config"])["algo"] == "loha"


def test_dora_and_loha_exports_check_clean(runs, tmp_path):
    from sidestep.engine.adapter_check import check_adapter
    from sidestep.engine.export import export_adapter

    for name, fmt in (("dora", "comfyui"), ("dora", "acestep-cpp"), ("loha", "comfyui")):
        out = tmp_path / f"{name}-{fmt}.safetensors"
        export_adapter(runs[name], fmt, out)
        report = check_adapter(out)
        assert not report.problems, report.problems
        v = {r.runtime: r for r in report.runtimes}
        assert v[fmt].loads and v[fmt].modules == 32 and not v[fmt].dropped, fmt
        assert v[fmt].strength == 1.0
        assert v[fmt].dora == ("applied" if name == "dora" else None)
        assert not v["acestep"].loads and not v["peft"].loads
        other = v["acestep-cpp" if fmt == "comfyui" else "comfyui"]
        if name == "loha":
            assert not other.loads and "LoHA" in other.note  # acestep.cpp has no LoHA
        else:
            # the other runtime loads the file, but its DoRA arithmetic is not training's
            assert other.dora == ("dropped" if fmt == "comfyui" else "differs")


def test_check_dora_folder_and_raw_loha(runs, capsys):
    from sidestep.engine.adapter_check import check_adapter

    report = check_adapter(runs["dora"])
    assert report.kind == "dora" and not report.problems
    v = {r.runtime: r for r in report.runtimes}
    for rt in ("acestep", "peft"):
        assert v[rt].loads and v[rt].modules == 32 and v[rt].dora == "applied"
        assert not v[rt].dropped
    for rt in ("comfyui", "acestep-cpp"):  # they read A/B and ignore the magnitudes
        assert v[rt].loads and v[rt].dora == "dropped"
        assert len(v[rt].dropped) == 32
        assert all(k.endswith(".lora_magnitude_vector") for k in v[rt].dropped)
    # the text names the column and the verdict
    assert main(["--plain", "check-adapter", str(runs["dora"])]) == 0
    out = capsys.readouterr().out
    assert "DoRA" in out and "dropped" in out and "applied" in out

    report = check_adapter(runs["loha"])
    assert report.kind == "loha" and not report.problems
    v = {r.runtime: r for r in report.runtimes}
    assert v["comfyui"].loads and v["comfyui"].modules == 32 and v["comfyui"].strength == 1.0
    assert not v["comfyui"].dropped
    for rt in ("acestep", "peft", "acestep-cpp"):
        assert not v[rt].loads and v[rt].modules == 0


def test_check_flags_loha_and_dora_problems(runs, tmp_path, capsys):
    from sidestep.engine.export import export_adapter

    sd = load_file(str(runs["loha"] / "final" / "adapter" / "loha_weights.safetensors"))
    a, b, c = ("lycoris_layers_0_self_attn_q_proj", "lycoris_layers_1_self_attn_k_proj",
               "lycoris_layers_2_cross_attn_k_proj")
    del sd[f"{a}.hada_w2_b"]                                       # incomplete
    del sd[f"{b}.alpha"]                                           # missing alpha
    sd[f"{c}.hada_w2_b"] = sd[f"{c}.hada_w2_b"][:3].contiguous()   # factors do not multiply
    bad = tmp_path / "loha.safetensors"
    save_file(sd, str(bad))
    assert main(["--plain", "check-adapter", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    kinds = {p["kind"]: p["message"] for p in report["problems"]}
    assert a in kinds["incomplete"] and "hada_w2_b" in kinds["incomplete"]
    assert b in kinds["missing-alpha"] and c in kinds["rank-mismatch"]
    comfy = {r["runtime"]: r for r in report["runtimes"]}["comfyui"]
    assert comfy["modules"] == 30 and f"{a}.hada_w1_a" in comfy["dropped"]
    assert f"{c}.hada_w2_b" in comfy["dropped"] and f"{b}.hada_w1_a" not in comfy["dropped"]
    assert any("strength they were trained at is unknown" in n for n in report["notes"])

    out = tmp_path / "d.safetensors"
    export_adapter(runs["dora"], "comfyui", out)
    sd = load_file(str(out))
    q = "base_model.model.layers.0.cross_attn.k_proj"              # 64 x 128: not square
    sd[f"{q}.dora_scale"] = sd[f"{q}.dora_scale"].reshape(-1).contiguous()
    save_file(sd, str(out))
    assert main(["--plain", "check-adapter", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    kinds = {p["kind"]: p["message"] for p in report["problems"]}
    assert f"{q}.dora_scale" in kinds["shape-mismatch"]
    comfy = {r["runtime"]: r for r in report["runtimes"]}["comfyui"]
    assert comfy["modules"] == 31 and f"{q}.dora_scale" in comfy["dropped"]


def test_dora_and_loha_refusals_write_nothing(runs, demo_root, tmp_path, capsys):
    import shutil

    loose = tmp_path / "loose"                  # a DoRA folder with no run.json above it
    shutil.copytree(runs["dora"] / "final" / "adapter", loose)
    before = tree_hash(tmp_path)
    cases = [(runs["loha"], "acestep-cpp", "acestep.cpp does not load LoHA"),
             (runs["loha"], "peft", "no PEFT form of a LoHA"),
             (loose, "comfyui", "--checkpoint-dir")]
    for src, fmt, said in cases:
        out = tmp_path / ("p" if fmt == "peft" else "x.safetensors")
        assert main(["--plain", "export", str(src), "--format", fmt, "--output",
                     str(out)]) == 2
        assert said in capsys.readouterr().err
    assert tree_hash(tmp_path) == before
    # with the model named, the loose folder exports, and the folder form needs no base
    out = tmp_path / "x.safetensors"
    assert main(["--plain", "export", str(loose), "--format", "acestep-cpp", "--output",
                 str(out), "--checkpoint-dir", str(demo_root / "checkpoints")]) == 0
    assert main(["--plain", "export", str(loose), "--format", "peft", "--output",
                 str(tmp_path / "p")]) == 0


@pytest.mark.parametrize("axis", ["out", "in"])
def test_lokr_weight_decomposition_keeps_lycoris_weights(runs, model_dir, base, tmp_path,
                                                        axis):
    """A LoKR trained with weight_decompose carries LyCORIS' dora_scale: (out, 1) by default
    (wd_on_out), (1, in) otherwise. Both exports reproduce LyCORIS' weight_decompose; an
    input-axis one is refused for acestep.cpp, which rescales rows only."""
    from lycoris.functional.general import weight_decompose

    from sidestep.engine.export import ExportError, export_adapter

    src = runs["lokr"] / "final" / "adapter" / "lokr_weights.safetensors"
    with safe_open(str(src), "pt") as fh:
        meta = fh.metadata()
    sd = load_file(str(src))
    flat = {n.replace(".", "_"): n for n in base}
    want = {}
    g = torch.Generator().manual_seed(1)
    for key in [k for k in sd if k.endswith(".alpha")]:
        prefix = key[:-len(".alpha")]
        name = flat[prefix[len("lycoris_"):]]
        w = base[name].float()
        norm = w.norm(dim=1, keepdim=True) if axis == "out" else w.norm(dim=0, keepdim=True)
        sd[f"{prefix}.dora_scale"] = (norm * (1 + 0.2 * torch.rand(norm.shape, generator=g)))
        product, rank = _kron(sd, prefix)
        delta = (product * (float(sd[key]) / rank)).float()
        want[name] = weight_decompose(w + delta, sd[f"{prefix}.dora_scale"], 1.0,
                                      axis == "out").double()
    folder = tmp_path / "src"
    folder.mkdir()
    save_file(sd, str(folder / "lokr_weights.safetensors"), metadata=meta)
    out = tmp_path / "c.safetensors"
    export_adapter(folder, "comfyui", out, decoder=_decoder(model_dir))
    got = {}
    sd_out = load_file(str(out))
    for key in [k for k in sd_out if k.endswith(".alpha")]:
        prefix = key[:-len(".alpha")]
        name = flat[prefix[len("lycoris_"):]]
        product, rank = _kron(sd_out, prefix)
        w = base[name]
        calc = w + product * (float(sd_out[key]) / rank if rank else 1.0)
        ds = sd_out[f"{prefix}.dora_scale"].double()
        norm = w.norm(dim=1, keepdim=True) if ds.shape[0] == w.shape[0] else \
            calc.norm(dim=0, keepdim=True)   # ComfyUI's weight_decompose, as above
        got[name] = calc * ds / (norm + EPS32)
    assert_weights(got, want)
    cpp = tmp_path / "k.safetensors"
    if axis == "in":
        before = tree_hash(tmp_path)
        with pytest.raises(ExportError, match="acestep.cpp rescales only per output row"):
            export_adapter(folder, "acestep-cpp", cpp, decoder=_decoder(model_dir))
        assert tree_hash(tmp_path) == before
        return
    export_adapter(folder, "acestep-cpp", cpp, decoder=_decoder(model_dir))
    sd_cpp = load_file(str(cpp))
    linear_dim = json.loads(meta["lokr_config"])["linear_dim"]
    got = {}
    for key in [k for k in sd_cpp if k.endswith(".alpha")]:
        prefix = key[:-len(".alpha")]
        name = flat[prefix[len("lycoris_"):]]
        assert f"{prefix}.lokr_w1" in sd_cpp  # acestep.cpp reads no factorised w1
        product, _ = _kron(sd_cpp, prefix)
        rank = sd_cpp[f"{prefix}.lokr_w2_b"].shape[0] if f"{prefix}.lokr_w2_b" in sd_cpp \
            else linear_dim
        v = base[name] + product * (float(sd_cpp[key]) / rank)
        ds = sd_cpp[f"{prefix}.dora_scale"].double().reshape(-1, 1)
        got[name] = v * ds / (v.norm(dim=1, keepdim=True) + EPS_BF16)
    assert_weights(got, want)


def _decoder(model_dir):
    from sidestep.engine.adapter_keys import Decoder

    return Decoder.from_model_dir(model_dir)


def test_a_folder_that_cannot_be_written_is_a_refusal(runs, tmp_path, monkeypatch, capsys):
    """A read-only or full disk: exit 2 with the output named, no traceback, nothing left
    (root ignores permissions here, so the write itself is made to fail)."""
    import os

    import sidestep.config.atomic as atomic

    def denied(*_a, **_k):
        raise PermissionError(13, os.strerror(13))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    monkeypatch.setattr("tempfile.mkdtemp", denied)
    before = tree_hash(tmp_path)
    for fmt, name in (("comfyui", "x.safetensors"), ("peft", "peft-out")):
        assert main(["--plain", "export", str(runs["lora"]), "--format", fmt, "--output",
                     str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("cannot write there (Permission denied)") == 2 and "Traceback" not in err
    assert tree_hash(tmp_path) == before


def test_export_into_a_missing_folder_is_refused(runs, tmp_path, capsys):
    """--output /typo/dir/x.safetensors: exit 2 and no folder is made (the app's own
    <run>/export/ is made for it: tests/test_tui_history_export.py)."""
    out = tmp_path / "no-such" / "dir" / "x.safetensors"
    assert main(["--plain", "export", str(runs["lora"]), "--format", "comfyui", "--output",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the folder {out.parent} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "no-such").exists()
    assert main(["--plain", "export", str(tmp_path / "no-run"), "--format", "comfyui",
                 "--output", str(tmp_path / "x.safetensors")]) == 2
    assert "no-run: not found" in capsys.readouterr().err


def test_an_existing_folder_or_link_is_written_into_as_it_is(runs, tmp_path, capsys):
    """--format peft onto an existing folder swapped in a new folder (another mode, a link
    turned into a folder, a '.old-' link left behind); a file output through a link replaced
    the link. The folder, its mode and the links stay; the files land where they point."""
    import os

    src = str(runs["lora"])
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o750)
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    real_file = tmp_path / "real.safetensors"
    real_file.write_bytes(b"old")
    (tmp_path / "file-link.safetensors").symlink_to(real_file)
    inode = empty.stat().st_ino
    for out, extra in ((empty, []), (tmp_path / "link", []), (tmp_path / "link", ["--force"])):
        assert main(["--plain", "export", src, "--format", "peft", "--output", str(out),
                     *extra]) == 0, capsys.readouterr().err
    assert empty.stat().st_ino == inode and empty.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in empty.iterdir()) == ["adapter_config.json",
                                                       "adapter_model.safetensors"]
    assert (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors"]
    assert main(["--plain", "export", src, "--format", "comfyui", "--output",
                 str(tmp_path / "file-link.safetensors"), "--force"]) == 0
    assert (tmp_path / "file-link.safetensors").is_symlink()
    assert real_file.read_bytes() != b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_model_a_run_trained_on_is_found_from_anywhere(runs, demo_root, tmp_path,
                                                           monkeypatch):
    """run.json kept the model's path as typed (relative): export and check-adapter run from
    another folder did not find it, or found another model of that name there (a DoRA export
    then took the wrong base weights). It is kept absolute; an old relative one is read
    against the run's own checkpoint folder, never the current one."""
    from sidestep.engine.adapter_keys import model_dir_for

    info = json.loads((runs["dora"] / "run.json").read_text())
    model = Path(info["model_path"])
    assert model.is_absolute() and (model / "config.json").is_file()
    old = tmp_path / "old-run"
    (old / "final" / "adapter").mkdir(parents=True)
    (old / "run.json").write_text(json.dumps({**info, "model_path": f"demo/{model.name}"}))
    decoy = tmp_path / "demo" / model.name  # the same name under the current folder
    decoy.mkdir(parents=True)
    (decoy / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert model_dir_for(old / "final" / "adapter") == Path(info["config"]["checkpoint_dir"]) \
        / model.name


def _copy_run(runs, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    return run


def test_a_checkpoint_without_its_marker_is_refused(runs, tmp_path, capsys):
    """A save cut short (no COMPLETE) was exported as if whole."""
    import shutil

    run = _copy_run(runs, tmp_path)
    (done,) = run.glob("checkpoint-*")
    cut = run / "checkpoint-step-99"
    shutil.copytree(done, cut)
    (cut / "COMPLETE").unlink()
    before = tree_hash(tmp_path)
    for given in (cut, cut / "adapter"):
        assert main(["--plain", "export", str(given), "--format", "comfyui", "--output",
                     str(tmp_path / "x.safetensors")]) == 2
        err = capsys.readouterr().err
        assert f"{cut}: incomplete checkpoint (no COMPLETE marker" in err, err
        assert f"export the last complete one, {done}" in err and "Traceback" not in err
    assert tree_hash(tmp_path) == before
    (done / "COMPLETE").unlink()  # none complete: said so
    before = tree_hash(tmp_path)
    assert main(["--plain", "export", str(cut), "--format", "peft", "--output",
                 str(tmp_path / "p")]) == 2
    assert "the run has no complete checkpoint" in capsys.readouterr().err
    assert tree_hash(tmp_path) == before


def test_a_run_stopped_before_final_points_at_best_and_the_latest_checkpoint(runs, tmp_path,
                                                                             capsys):
    import shutil

    run = _copy_run(runs, tmp_path)
    shutil.rmtree(run / "final")
    (ckpt,) = run.glob("checkpoint-*")
    before = tree_hash(tmp_path)
    for argv in (["export", str(run), "--format", "comfyui", "--output",
                  str(tmp_path / "x.safetensors")], ["check-adapter", str(run)]):
        assert main(["--plain", *argv]) == 2
        err = capsys.readouterr().err
        assert f"{run}: the run has no final adapter" in err, err
        assert f"give its best adapter, {run / 'best'} or its latest checkpoint, {ckpt}" in err
    assert tree_hash(tmp_path) == before
    # what it names is taken
    assert main(["--plain", "export", str(run / "best"), "--format", "comfyui", "--output",
                 str(tmp_path / "x.safetensors")]) == 0


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_an_adapter_for_another_model_size_is_refused(runs, demo_root, tmp_path, capsys,
                                                      kind):
    """A LoRA or LoKR module whose weight change is not the decoder's weight's shape (trained
    on another model) was written out (LoHA was already checked): the file then fails to load,
    or a broadcast puts the change in the wrong place. Now exit 2 naming module and shapes."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "adapter"
    shutil.copytree(runs[kind] / "final" / "adapter", folder)
    (weights,) = [p for p in folder.glob("*.safetensors")]
    tensors = load_file(weights)
    key = sorted(k for k in tensors if k.endswith(("lora_B.weight", "lokr_w1")))[0]
    grown = tensors[key]
    tensors[key] = torch.cat([grown, torch.zeros(1, *grown.shape[1:], dtype=grown.dtype)])
    save_file(tensors, weights)
    before = tree_hash(tmp_path)
    code = main(["--plain", "export", str(folder), "--format", "comfyui", "--output",
                 str(tmp_path / "out.safetensors"), "--checkpoint-dir",
                 str(demo_root / "checkpoints")])
    err = capsys.readouterr().err
    assert code == 2 and "but the decoder's weight is" in err and "another model" in err, err
    assert tree_hash(tmp_path) == before
