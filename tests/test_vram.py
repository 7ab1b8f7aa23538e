"""The VRAM estimator (sidestep.config.vram): exact parameter counts, each memory term against
hand arithmetic, the shape of the model (monotonicity), the built-in VRAM presets, profiles."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from sidestep.config import vram
from sidestep.config.resolve import resolve
from conftest import REFERENCE

PATHS = {"checkpoint_dir": "c", "dataset_dir": "d", "output_dir": "o"}
MIB = 1024 * 1024

# A made-up model small enough to do the arithmetic by hand: hidden 64, attention width
# 4 x 16 = 64, key/value width 2 x 16 = 32, MLP 128, 2 layers (layer 0 sliding).
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
         "in_channels": 24, "audio_acoustic_hidden_dim": 8, "patch_size": 2,
         "sliding_window": 3, "layer_types": ["sliding_attention", "full_attention"],
         "text_hidden_dim": 32, "timbre_hidden_dim": 8, "model_type": "acestep"}
# Bigger than SMALL so LoKR's factorizations take every branch (decomposed and full factors).
MEDIUM = dict(SMALL, hidden_size=256, intermediate_size=512, head_dim=64)


def cfg(**values):
    return resolve("fixed", {**PATHS, **values}).config


def reference(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


TURBO = reference("config_turbo.json")
XL = reference("config_xl_turbo.json")


# -- import weight --------------------------------------------------------------------------------
def test_module_does_not_import_torch():
    code = "import sys, sidestep.config.vram; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- parameter counts -----------------------------------------------------------------------------
def test_lora_count_matches_peft_reference_2b_and_xl():
    keys = reference("real_keys_turbo.json")["lora_reference"]
    assert vram.adapter_param_count(cfg(rank=8), TURBO) == 5_505_024
    assert keys["trainable_lora_params_r8"] == 5_505_024
    xl_keys = reference("real_keys_xl_turbo.json")["lora_reference"]
    assert vram.adapter_param_count(cfg(rank=8), XL) == 10_485_760
    assert xl_keys["trainable_lora_params_r8"] == 10_485_760


def test_decoder_count_matches_reference_keys():
    for config_name, keys_name in (("config_turbo.json", "real_keys_turbo.json"),
                                   ("config_xl_turbo.json", "real_keys_xl_turbo.json")):
        keys = reference(keys_name)
        assert vram.decoder_param_count(reference(config_name)) == keys["decoder_parameter_count"]
        assert keys["per_top_module_numel"]["null_condition_emb"] == 2048


def test_lora_count_by_hand():
    # per attention: q 4*(64+64) + k 4*(64+32) + v 4*(64+32) + o 4*(64+64) = 1792
    assert vram.adapter_param_count(cfg(rank=4), SMALL) == 1792 * 2 * 2
    assert vram.adapter_param_count(cfg(rank=4, attention_type="self"), SMALL) == 1792 * 2
    # self: q only (512); cross: k and v (384 each)
    c = cfg(rank=4, self_target_modules=["q_proj"], cross_target_modules=["k_proj", "v_proj"])
    assert vram.adapter_param_count(c, SMALL) == (512 + 768) * 2


def test_lokr_count_by_hand():
    # factorization(64) = (8, 8), factorization(32) = (4, 8). dim 2:
    # q/o [64, 64]: w1 8x8 = 64; w2 decomposed since 2 < 8/2: 8*2 + 2*8 = 32 -> 96
    # k/v [32, 64]: w1 4x8 = 32; w2 [8, 8] decomposed -> 32 -> 64
    c = cfg(adapter_type="lokr", lokr_linear_dim=2)
    assert vram.adapter_param_count(c, SMALL) == (96 + 64 + 64 + 96) * 2 * 2
    # dim 4 is not < 8/2: w2 is a full 8x8 (64): q/o 128, k/v 96
    c = cfg(adapter_type="lokr", lokr_linear_dim=4)
    assert vram.adapter_param_count(c, SMALL) == (128 + 96 + 96 + 128) * 2 * 2


def test_factorization_table():
    # The examples in LyCORIS's factorization docstring (functional/general.py); its 360 row
    # is stale: the code (checked in test_factorization_matches_lycoris) gives these.
    table = {127: [(1, 127)] * 5, 128: [(8, 16), (2, 64), (4, 32), (8, 16), (8, 16)],
             250: [(10, 25), (2, 125), (2, 125), (5, 50), (10, 25)],
             360: [(18, 20), (2, 180), (4, 90), (8, 45), (15, 24)],
             512: [(16, 32), (2, 256), (4, 128), (8, 64), (16, 32)],
             1024: [(32, 32), (2, 512), (4, 256), (8, 128), (16, 64)]}
    for dim, row in table.items():
        for factor, expected in zip((-1, 2, 4, 8, 16), row):
            assert vram.factorization(dim, factor) == expected, (dim, factor)
    assert vram.factorization(2048, -1) == (32, 64)
    assert vram.factorization(6144, 4) == (4, 1536)


# Tests marked slow build real adapters with PEFT / LyCORIS: importing torch, peft and lycoris
# (which pulls in bitsandbytes and transformers) takes ~25 s on a 2-core machine; the tests
# themselves take well under a second.
@pytest.mark.slow
def test_factorization_matches_lycoris():
    from lycoris.functional.general import factorization

    for dim in (1, 7, 32, 64, 127, 128, 250, 360, 1024, 2048, 2560, 4096, 6144):
        for factor in (-1, 1, 2, 3, 4, 8, 16):
            assert vram.factorization(dim, factor) == tuple(factorization(dim, factor)), \
                (dim, factor)


def _real_trainable(config, model_config) -> int:
    from sidestep.engine.adapters import AdapterSpec, attach
    from sidestep.model import build_acestep

    model = build_acestep(model_config, device="cpu", parts=("decoder", "null_condition_emb"))
    layers = model_config["num_hidden_layers"]
    adapted = attach(model.decoder, model.null_condition_emb,
                     AdapterSpec.from_config(config, layers))
    return sum(p.numel() for p in adapted.adapter_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    dict(lokr_factor=-1, lokr_linear_dim=4),
    dict(lokr_factor=-1, lokr_linear_dim=4, lokr_decompose_both=True),
    dict(lokr_factor=4, lokr_linear_dim=4),
    dict(lokr_factor=4, lokr_linear_dim=1, lokr_decompose_both=True),
    dict(lokr_factor=8, lokr_linear_dim=64),  # rank too large: full w2
    dict(lokr_factor=-1, lokr_linear_dim=2, lokr_decompose_both=True, lokr_use_scalar=True,
         lokr_weight_decompose=True, attention_type="self", target_modules=["q_proj", "o_proj"]),
])
def test_lokr_count_matches_lycoris(settings):
    config = cfg(adapter_type="lokr", **settings)
    assert vram.adapter_param_count(config, MEDIUM) == _real_trainable(config, MEDIUM)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    dict(rank=4),
    dict(rank=3, bias="all"),
    dict(rank=2, self_target_modules=["q_proj", "v_proj"], cross_target_modules=["o_proj"]),
])
def test_lora_count_matches_peft(settings):
    config = cfg(**settings)
    assert vram.adapter_param_count(config, MEDIUM) == _real_trainable(config, MEDIUM)


@pytest.mark.slow
def test_decoder_count_matches_built_model():
    from sidestep.model import build_acestep

    for model_config in (SMALL, MEDIUM, TURBO, XL):
        model = build_acestep(model_config, device="meta", parts=("decoder",))
        assert vram.decoder_param_count(model_config) == \
            sum(p.numel() for p in model.decoder.parameters())


@pytest.mark.slow
def test_model_dims_from_config_object_and_dict():
    from sidestep.model.config import AceStepConfig

    assert vram.ModelDims.of(AceStepConfig.from_dict(XL)) == vram.ModelDims.of(XL)
    turbo = vram.ModelDims.of(TURBO)
    assert vram.ModelDims.of(None) == turbo.__class__(**{**turbo.__dict__, "layer_types": ()})
    assert [turbo.is_sliding(i) for i in range(4)] == [True, False, True, False]
    assert not vram.ModelDims.of(dict(TURBO["config"], use_sliding_window=False)).is_sliding(0)
    dims = vram.ModelDims.of(XL)
    assert (dims.attn_width, dims.kv_width, dims.enc_hidden) == (4096, 1024, 2048)


# -- each term by hand ----------------------------------------------------------------------------
def test_optimizer_state_by_hand():
    big, small, vec = (64, 4096), (4, 64), (64,)
    assert vram.optimizer_bytes("adamw", [big, small]) == 8 * (262144 + 256)
    # 8-bit: 2 bytes/value + two fp32 absmax per 256-value block; under 4096 values: 32-bit
    assert vram.optimizer_bytes("adamw8bit", [big]) == 2 * 262144 + 2 * 4 * 1024
    assert vram.optimizer_bytes("adamw8bit", [small]) == 8 * 256
    # Adafactor: row + column second moments for matrices, full for vectors
    assert vram.optimizer_bytes("adafactor", [big, small, vec]) == 4 * (
        (64 + 4096) + (4 + 64) + 64)
    assert vram.optimizer_bytes("prodigy", [big]) == 16 * 262144
    with pytest.raises(ValueError):
        vram.optimizer_bytes("sgd", [big])


def test_layer_terms_by_hand():
    n, L, e = 10, 6, 2  # 10 patches, 6 condition tokens, bf16
    terms = vram.layer_activation_terms(cfg(rank=4), SMALL, n, L, e)
    assert terms["norm inputs fp32"] == 3 * 10 * (64 + 1) * 4
    # self q [10, 64], k [10, 32]; cross q [10, 64], k [6, 32]; rsqrt per head and token
    assert terms["q/k norm inputs fp32"] == (
        (2 * 10 * 64 + 10 * 32 + 6 * 32) + (2 * 10 * 4 + 10 * 2 + 6 * 2)) * 4
    assert terms["self-attention q/k/v/out"] == 4 * 10 * 64 * 2 + 4 * 10 * 4
    assert terms["cross-attention q/k/v/out"] == (2 * 10 * 64 + 2 * 6 * 64) * 2 + 4 * 10 * 4
    assert terms["mlp gate/act/up"] == 3 * 10 * 128 * 2
    # LoRA, dropout 0.1: input copy (2 bytes) + bool mask (1) per input value, [tokens, r] bf16.
    # Every projection reads 64 values per token; cross k/v read the 6 condition tokens.
    per_query_proj = 10 * 64 * 3 + 10 * 4 * 2
    per_cond_proj = 6 * 64 * 3 + 6 * 4 * 2
    assert terms["adapter inputs"] == 6 * per_query_proj + 2 * per_cond_proj
    no_dropout = vram.layer_activation_terms(cfg(rank=4, dropout=0.0), SMALL, n, L, e)
    assert no_dropout["adapter inputs"] == 6 * (10 * 64 * 2 + 10 * 4 * 2) + 2 * (
        6 * 64 * 2 + 6 * 4 * 2)
    # LoKR: self q/k/v share one input, cross q has its own, o reads the SDPA output
    lokr = cfg(adapter_type="lokr", lokr_linear_dim=2)
    assert vram.layer_activation_terms(lokr, SMALL, n, L, e)["adapter inputs"] == 2 * 10 * 64 * 2
    # deltas: self q, k, v, o; cross q, o (cross k/v read the condition, which needs no grad)
    assert vram.lokr_delta_bytes(lokr, SMALL, 2) == (64 * 64 * 2 + 32 * 64 * 2 + 64 * 64 * 2) * 2
    assert vram.lokr_delta_bytes(cfg(rank=4), SMALL, 2) == 0


def test_small_terms_by_hand():
    dims = vram.ModelDims.of(SMALL)
    assert vram.band_mask_bytes(10, 2) == 10 * 16 * 2
    # MLP: 3 x [10, 128] bf16 + 2 x [10, 64] fp32 beats attention 3 x [10, 64] bf16 + fp32 dq
    assert vram.transient_bytes(dims, 10, 2) == max(3 * 10 * 128 * 2 + 2 * 10 * 64 * 4,
                                                    3 * 10 * 64 * 2 + 10 * 64 * 4)
    lokr = cfg(adapter_type="lokr", lokr_linear_dim=2)
    assert vram.lokr_rebuild_bytes(lokr, dims) == 2 * 64 * 64 * 4


def test_estimate_composition_by_hand():
    config = cfg(rank=4, batch_size=2, optimizer_type="adamw")
    est = vram.estimate(config, SMALL, frames=19)  # 19 frames -> 10 patches
    assert (est.frames, est.seq_len, est.batch_size, est.dtype) == (19, 10, 2, "bf16")
    B, T, n, L, e = 2, 19, 10, vram.COND_TOKENS, 2
    params = 1792 * 4
    assert est.adapter_params == params
    decoder = vram.decoder_param_count(SMALL)
    assert est.breakdown["weights"] * MIB == (decoder + 64) * 2  # + null_condition_emb [64]
    assert est.breakdown["adapter"] * MIB == params * 4
    assert est.breakdown["gradients"] * MIB == params * 4
    assert est.breakdown["optimizer"] * MIB == params * 8

    layer = sum(vram.layer_activation_terms(config, SMALL, n, L, e).values())
    act = est.activation_terms
    assert act["stored layer inputs"] * MIB == 2 * B * n * 64 * e
    assert act["one layer recomputed"] * MIB == B * layer + n * 16 * e  # layer 0 has the mask
    assert act["backward transients"] * MIB == B * (3 * n * 128 * e + 2 * n * 64 * 4)
    assert act["batch tensors"] * MIB == B * (T * 24 * 4 + L * 64 * 4 + 3 * T * 8 * 4)
    assert act["decoder inputs"] * MIB == B * (T * 24 * e + L * (64 + 64) * e)
    assert act["output + loss"] * MIB == B * (n * 64 * 4 + T * 8 * e + 2 * T * 8 * 4)
    assert act["shared tables"] * MIB == 2 * n * 16 * e + n * n
    assert act["autocast adapter copies"] * MIB == params * e
    assert est.breakdown["activations"] == pytest.approx(sum(act.values()))

    rest = sum(v for k, v in est.breakdown.items() if k != "overhead")
    assert est.breakdown["overhead"] == pytest.approx(600 + 0.10 * rest)
    assert est.total_mib == pytest.approx(rest + est.breakdown["overhead"])
    assert list(est.breakdown) == ["weights", "adapter", "gradients", "optimizer",
                                   "activations", "overhead"]

    off = vram.estimate(config.replace(gradient_checkpointing=False), SMALL, frames=19)
    assert off.activation_terms["all layers"] * MIB == 2 * B * layer + n * 16 * e


@pytest.mark.slow
def test_layer_terms_match_what_autograd_saves():
    """On CPU with bf16 autocast, the per-layer formula matches the tensors autograd really
    saves (dropout 0: on CPU dropout keeps a float mask where CUDA keeps a bool one)."""
    import torch

    from sidestep.engine.adapters import AdapterSpec, attach
    from sidestep.model import build_acestep

    B, n, L = 2, 96, 40  # n a multiple of 16: the CPU kernel does not pad the mask
    for config in (cfg(rank=8, dropout=0.0), cfg(adapter_type="lokr", lokr_linear_dim=4)):
        torch.manual_seed(0)
        model = build_acestep(MEDIUM, device="cpu", parts=("decoder", "null_condition_emb"),
                              dtype=torch.bfloat16)
        adapted = attach(model.decoder, model.null_condition_emb,
                         AdapterSpec.from_config(config, 2))
        adapted.train()
        layer = model.decoder.layers[0]
        x = torch.randn(B, n, 256, dtype=torch.bfloat16, requires_grad=True)
        mod = torch.randn(B, 6, 256, dtype=torch.bfloat16)
        cond = torch.randn(B, L, 256, dtype=torch.bfloat16)
        rope = model.decoder.rotary_emb(n, x.device, torch.bfloat16)
        from sidestep.model.layers import band_mask

        mask = band_mask(n, 3, x.device)
        saved: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autocast("cpu", dtype=torch.bfloat16), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x, mod, cond, rope, mask)
        shared = [x, mod, cond, *rope, mask, *adapted.parameters()]
        for t in shared:
            saved.pop(t.untyped_storage().data_ptr(), None)
        measured = sum(saved.values())
        # the autocast copies of the adapter weights this layer used are counted per layer here
        own = sum(p.numel() for name, p in adapted.named_parameters()
                  if p.requires_grad and ("layers.0." in name or "layers_0_" in name))
        expected = (B * sum(vram.layer_activation_terms(config, MEDIUM, n, L, 2).values())
                    + vram.lokr_delta_bytes(config, MEDIUM, 2) + vram.band_mask_bytes(n, 2)
                    + own * 2)
        assert expected == pytest.approx(measured, rel=0.03), config.adapter_type


# -- sequence length and dtype --------------------------------------------------------------------
def test_frames_from_config():
    assert vram.estimate(cfg(chunk_duration=60), TURBO).frames == 1500
    assert vram.estimate(cfg(chunk_duration=60), TURBO).seq_len == 750
    assert vram.estimate(cfg(), TURBO).frames == 240 * 25  # whole songs, default length
    est = vram.estimate(cfg(max_duration=30.5), TURBO)
    assert (est.frames, est.seq_len) == (763, 382)
    assert vram.estimate(cfg(chunk_duration=60), TURBO, frames=101).seq_len == 51


def test_dtype():
    base = vram.estimate(cfg(), TURBO, frames=1500)
    assert base.dtype == "bf16"  # precision auto
    fp32 = vram.estimate(cfg(precision="fp32"), TURBO, frames=1500)
    assert fp32.breakdown["weights"] == pytest.approx(2 * base.breakdown["weights"])
    assert fp32.breakdown["activations"] > base.breakdown["activations"]
    assert vram.estimate(cfg(), TURBO, frames=1500, dtype="torch.float16").dtype == "fp16"
    with pytest.raises(ValueError, match="dtype"):
        vram.estimate(cfg(), TURBO, dtype="int8")
    # 1,575,458,880 + 2,048 parameters in bf16
    assert base.breakdown["weights"] == pytest.approx(1_575_460_928 * 2 / MIB)


# -- monotonicity ---------------------------------------------------------------------------------
def _total(**values) -> float:
    return vram.estimate(cfg(**values), TURBO).total_mib


def test_grows_with_rank_batch_chunk_and_without_checkpointing():
    assert _total(rank=16) < _total(rank=64) < _total(rank=128)
    assert _total(batch_size=1) < _total(batch_size=2) < _total(batch_size=4)
    assert _total(chunk_duration=30) < _total(chunk_duration=60) < _total(chunk_duration=120)
    assert _total(gradient_checkpointing=True) < _total(gradient_checkpointing=False)
    assert _total(adapter_type="lokr", lokr_linear_dim=8) < \
        _total(adapter_type="lokr", lokr_linear_dim=8, gradient_checkpointing=False)


def test_optimizer_order():
    assert _total(optimizer_type="adafactor") < _total(optimizer_type="adamw8bit") \
        < _total(optimizer_type="adamw") < _total(optimizer_type="prodigy")


# -- presets and profiles -------------------------------------------------------------------------
@pytest.mark.parametrize("tier", list(vram.PROFILES))
def test_builtin_vram_presets_fit_their_tier(tier):
    from sidestep.config.presets import PresetStore

    preset, gib = vram.PROFILES[tier]
    config = resolve("fixed", PATHS, preset=PresetStore().load(preset).values).config
    est = vram.estimate(config, TURBO, frames=1500)
    assert est.total_mib < gib * 1024, est.breakdown
    assert est.verdict(gib * 1024) == "fits"


def test_pick_profile():
    assert vram.pick_profile(81920) == "24gb"
    assert vram.pick_profile(24564) == "24gb"
    assert vram.pick_profile(20 * 1024) == "24gb"
    assert vram.pick_profile(16376) == "16gb"
    assert vram.pick_profile(14 * 1024) == "16gb"
    assert vram.pick_profile(12282) == "12gb"
    assert vram.pick_profile(10 * 1024 - 1) == "8gb"
    assert vram.pick_profile(8188) == "8gb"
    assert vram.pick_profile(4096) == "8gb"


def test_profile_preset_names():
    for name in ("8gb", "vram_8gb", "8GB", "8", " VRAM_8GB "):
        assert vram.profile_preset(name) == "vram_8gb"
    for name in ("24gb", "24gb_plus", "vram_24gb_plus", "24GB+", "24"):
        assert vram.profile_preset(name) == "vram_24gb_plus"
    assert vram.profile_preset("vram-12gb") == "vram_12gb"
    assert vram.profile_preset("16gb") == "vram_16gb"
    for bad in ("32gb", "vram_huge", ""):
        with pytest.raises(ValueError, match="unknown VRAM profile"):
            vram.profile_preset(bad)


def test_verdict():
    est = vram.estimate(cfg(), TURBO, frames=1500)
    assert est.verdict(est.total_mib / 0.8) == "fits"
    assert est.verdict(est.total_mib / 0.95) == "tight"
    assert est.verdict(est.total_mib) == "tight"
    assert est.verdict(est.total_mib * 0.9) == "will not fit"


def test_summary_line():
    config = cfg(chunk_duration=60)
    line = vram.summary_line(config, TURBO, free_mib=23.5 * 1024)
    est = vram.estimate(config, TURBO)
    assert line.startswith(f"estimated peak VRAM {est.total_mib / 1024:.1f} GiB (weights 2.9,")
    assert "activations" in line and "overhead" in line
    assert line.endswith("— fits in 23.5 GiB free")
    assert "will not fit in 2.0 GiB free" in vram.summary_line(config, TURBO, free_mib=2048)
    assert "free" not in vram.summary_line(config)  # 2B defaults, no device known
    assert math.isclose(est.total_mib, vram.estimate(config, None).total_mib)


def test_dora_count_matches_peft_and_costs_more_than_lora():
    config = cfg(rank=4, adapter_type="dora")
    assert vram.adapter_param_count(config, MEDIUM) == _real_trainable(config, MEDIUM)
    lora = vram.estimate(cfg(rank=4), TURBO).total_mib
    assert vram.estimate(config, TURBO).total_mib > lora
