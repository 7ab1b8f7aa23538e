"""Built on the meta device, our model has exactly the real 2B and XL state-dict layout."""

from __future__ import annotations

import json

import pytest

from conftest import REFERENCE
from sidestep.model import AceStepConfig, build_acestep

CASES = [("config_turbo.json", "real_keys_turbo.json"),
         ("config_base.json", "real_keys_turbo.json"),
         ("config_sft.json", "real_keys_turbo.json"),
         ("config_xl_turbo.json", "real_keys_xl_turbo.json")]


@pytest.mark.parametrize("config_file,keys_file", CASES)
def test_keys_shapes_and_counts(config_file, keys_file):
    ref = json.loads((REFERENCE / keys_file).read_text())
    model = build_acestep(json.loads((REFERENCE / config_file).read_text()))
    assert all(p.is_meta for p in model.parameters())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {e["key"]: tuple(e["shape"]) for e in ref["keys"]
              if not e["key"].startswith(("tokenizer.", "detokenizer."))}
    assert list(ours) == list(theirs)  # same names, same order
    assert ours == theirs
    for top in ("decoder", "encoder", "null_condition_emb"):
        numel = sum(v.numel() for k, v in model.state_dict().items()
                    if k == top or k.startswith(top + "."))
        assert numel == ref["per_top_module_numel"][top], top
    assert sum(p.numel() for p in model.decoder.parameters()) == ref["decoder_parameter_count"]
    # the decoder attention Linears PEFT will wrap
    names = [n for n, _ in model.decoder.named_modules()
             if n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    attn = ref["attention_linears"]
    assert len(names) == attn["decoder_total_count"]
    assert sorted("decoder." + n for n in names if ".self_attn." in n) == \
        sorted(attn["decoder_self_attn"])


def test_xl_semantics_from_config():
    xl = AceStepConfig.from_dict(json.loads((REFERENCE / "config_xl_turbo.json").read_text()))
    two = AceStepConfig.from_dict(json.loads((REFERENCE / "config_turbo.json").read_text()))
    assert xl.is_xl and not two.is_xl
    assert xl.num_attention_heads * xl.head_dim != xl.hidden_size
    assert (xl.enc_hidden, two.enc_hidden) == (2048, 2048)
    assert two.is_turbo and two.layer_type(0) == "sliding_attention"
    assert two.layer_type(1) == "full_attention"


def test_bad_configs_rejected():
    from sidestep.model import ModelConfigError

    with pytest.raises(ModelConfigError, match="model_type"):
        AceStepConfig.from_dict({"model_type": "llama"})
    with pytest.raises(ModelConfigError, match="hidden_size"):
        AceStepConfig.from_dict({"model_type": "acestep", "hidden_size": "big"})
    with pytest.raises(ModelConfigError, match="in_channels"):
        AceStepConfig.from_dict({"model_type": "acestep", "in_channels": 100})


@pytest.mark.parametrize("config_file,keys_file", [("config_turbo.json", "real_keys_turbo.json"),
                                                   ("config_xl_turbo.json",
                                                    "real_keys_xl_turbo.json")])
def test_codec_keys_match_the_real_model(config_file, keys_file):
    from sidestep.model.codec_keys import codec_shapes

    ref = json.loads((REFERENCE / keys_file).read_text())
    config = AceStepConfig.from_dict(json.loads((REFERENCE / config_file).read_text()))
    theirs = {e["key"]: tuple(e["shape"]) for e in ref["keys"]
              if e["key"].startswith(("tokenizer.", "detokenizer."))}
    assert codec_shapes(config) == theirs


def test_codec_keys_match_the_reference_tiny_checkpoint():
    from safetensors import safe_open

    from sidestep.model.codec_keys import codec_shapes

    config = AceStepConfig.from_dict(json.loads((REFERENCE / "tiny" / "config.json").read_text()))
    with safe_open(str(REFERENCE / "tiny" / "model.safetensors"), "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()
                  if k.startswith(("tokenizer.", "detokenizer."))}
    assert codec_shapes(config) == theirs


def test_demo_checkpoint_is_complete_module_for_module(demo_root):
    """The demo's key set is the real model's, layer counts aside: every module the reference
    code builds has its tensors (so it loads the folder with strict=True)."""
    import re

    from safetensors import safe_open

    def pattern(key: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", key)

    ref = json.loads((REFERENCE / "real_keys_turbo.json").read_text())
    theirs = {pattern(e["key"]) for e in ref["keys"]}
    for variant in ("acestep-v15-turbo", "acestep-v15-base"):
        with safe_open(str(demo_root / "checkpoints" / variant / "model.safetensors"), "pt") as f:
            ours = {pattern(k) for k in f.keys()}
        assert ours == theirs, (sorted(theirs - ours)[:5], sorted(ours - theirs)[:5])
