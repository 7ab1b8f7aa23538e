"""Loading model folders: single file, shards, bf16 storage, and every error case."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REFERENCE
from sidestep.model import CheckpointError, load_acestep

TINY = REFERENCE / "tiny"


def _copy(tmp_path, name="model"):
    dst = tmp_path / name
    dst.mkdir()
    shutil.copy(TINY / "config.json", dst / "config.json")
    return dst


def _state():
    return load_file(str(TINY / "model.safetensors"))


def test_single_file_skips_tokenizer_and_detokenizer():
    model = load_acestep(TINY)
    assert not hasattr(model, "tokenizer") and not hasattr(model, "detokenizer")
    stored = _state()
    ours = model.state_dict()
    assert set(ours) == {k for k in stored if not k.startswith(("tokenizer.", "detokenizer."))}
    for k, v in ours.items():
        assert torch.equal(v, stored[k]), k
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    # rotary tables are recomputed, not left on the meta device
    assert model.decoder.rotary_emb.inv_freq.device.type == "cpu"


def test_sharded(tmp_path):
    folder = _copy(tmp_path)
    state = _state()
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for fname, ks in halves.items():
        save_file({k: state[k] for k in ks}, str(folder / fname))
        weight_map.update({k: fname for k in ks})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    model = load_acestep(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_bf16_storage_converted(tmp_path):
    folder = _copy(tmp_path)
    state = {k: v.to(torch.bfloat16) for k, v in _state().items()}
    save_file(state, str(folder / "model.safetensors"))
    model = load_acestep(folder, dtype=torch.float32)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float())
    half = load_acestep(folder, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_parts(tmp_path):
    train = load_acestep(TINY, parts=("decoder", "null_condition_emb"))
    assert train.encoder is None and train.decoder is not None
    assert not any(k.startswith("encoder.") for k in train.state_dict())
    pre = load_acestep(TINY, parts=("encoder",))
    assert pre.decoder is None and pre.null_condition_emb is None


def _expect(folder, needle):
    with pytest.raises(CheckpointError) as exc:
        load_acestep(folder)
    assert needle in str(exc.value), str(exc.value)
    return str(exc.value)


def test_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nothing"
    _expect(missing, "not found")

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    msg = _expect(no_config, "config.json")
    assert "missing" in msg

    wrong_type = _copy(tmp_path, "wrong_type")
    cfg = json.loads((wrong_type / "config.json").read_text())
    cfg["model_type"] = "qwen3"
    (wrong_type / "config.json").write_text(json.dumps(cfg))
    _expect(wrong_type, "model_type")

    no_weights = _copy(tmp_path, "no_weights")
    _expect(no_weights, "no weights found")

    shard_missing = _copy(tmp_path, "shard_missing")
    (shard_missing / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"decoder.norm_out.weight": "model-00001-of-00002.safetensors"}}))
    _expect(shard_missing, "model-00001-of-00002.safetensors")

    shape = _copy(tmp_path, "shape")
    state = _state()
    state["decoder.norm_out.weight"] = torch.ones(65)
    save_file(state, str(shape / "model.safetensors"))
    msg = _expect(shape, "decoder.norm_out.weight")
    assert "(65,)" in msg and "(64,)" in msg

    truncated = _copy(tmp_path, "truncated")
    data = (TINY / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    msg = _expect(truncated, "truncated or corrupt")
    assert "model.safetensors" in msg

    garbage = _copy(tmp_path, "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x00" * 100)
    _expect(garbage, "truncated or corrupt")

    missing_key = _copy(tmp_path, "missing_key")
    state = _state()
    del state["decoder.layers.1.mlp.up_proj.weight"]
    save_file(state, str(missing_key / "model.safetensors"))
    _expect(missing_key, "decoder.layers.1.mlp.up_proj.weight")

    extra = _copy(tmp_path, "extra")
    state = _state()
    state["decoder.layers.7.mystery.weight"] = torch.ones(3)
    save_file(state, str(extra / "model.safetensors"))
    _expect(extra, "decoder.layers.7.mystery.weight")

    bad_json = _copy(tmp_path, "bad_json")
    (bad_json / "config.json").write_text("{nope")
    _expect(bad_json, "cannot be read as JSON")
