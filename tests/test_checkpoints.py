"""Checkpoint-root discovery: listing, variant names, families, side folders, silence latent."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from sidestep.model.checkpoints import (DiscoveryError, fuzzy_rank, list_models,
                                        load_silence_latent, resolve_model, text_encoder_dir,
                                        vae_dir)


def _model(root, name, **config):
    folder = root / name
    folder.mkdir(parents=True)
    cfg = {"model_type": "acestep", "hidden_size": 2048, "num_hidden_layers": 24, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "checkpoints"
    _model(r, "acestep-v15-base", is_turbo=False)
    _model(r, "acestep-v15-turbo", is_turbo=True)
    _model(r, "acestep-v15-xl-sft", is_turbo=False, model_version="sft",
           encoder_hidden_size=2048, hidden_size=2560)
    _model(r, "my-jazz-tune", is_turbo=True)
    _model(r, "zz-base-tune", is_turbo=False)
    _model(r, "not-acestep", model_type="llama")
    (r / "vae").mkdir()
    (r / "vae" / "config.json").write_text("{}")
    (r / "Qwen3-Embedding-0.6B").mkdir()
    (r / "Qwen3-Embedding-0.6B" / "config.json").write_text("{}")
    (r / "random-folder").mkdir()
    return r


def test_list_models(root):
    entries = list_models(root)
    assert [e.name for e in entries] == ["acestep-v15-turbo", "acestep-v15-base",
                                         "acestep-v15-xl-sft", "my-jazz-tune", "zz-base-tune"]
    by = {e.name: e for e in entries}
    assert by["acestep-v15-turbo"].official and by["acestep-v15-turbo"].family == "turbo"
    assert by["acestep-v15-xl-sft"].is_xl and by["acestep-v15-xl-sft"].family == "sft"
    assert by["my-jazz-tune"].family == "turbo" and not by["my-jazz-tune"].official
    assert by["zz-base-tune"].family == "base"
    assert "XL" in by["acestep-v15-xl-sft"].label


def test_fuzzy(root):
    entries = list_models(root)
    assert [e.name for e in fuzzy_rank(entries, "jazz")] == ["my-jazz-tune"]
    assert fuzzy_rank(entries, "xls")[0].name == "acestep-v15-xl-sft"
    assert fuzzy_rank(entries, "")[0].name == "acestep-v15-turbo"
    assert fuzzy_rank(entries, "qqq") == []


@pytest.mark.parametrize("variant,folder,family", [
    ("turbo", "acestep-v15-turbo", "turbo"), ("base", "acestep-v15-base", "base"),
    ("xl-sft", "acestep-v15-xl-sft", "sft"), ("acestep-v15-base", "acestep-v15-base", "base"),
    ("my-jazz-tune", "my-jazz-tune", "turbo"),
])
def test_resolve(root, variant, folder, family):
    res = resolve_model(root, variant)
    assert res.path == root / folder and res.family == family


def test_base_model_overrides_family(root):
    res = resolve_model(root, "my-jazz-tune", base_model="base")
    assert res.family == "base" and not res.is_turbo


@pytest.mark.parametrize("variant,needle", [
    ("../etc", "not a path"), ("/abs", "not a path"), ("a/b", "single folder name"),
    ("sft", "model folder not found"), ("not-acestep", "model_type"),
    ("random-folder", "config.json"),
])
def test_resolve_errors(root, variant, needle):
    with pytest.raises(DiscoveryError, match=needle):
        resolve_model(root, variant)


def test_missing_root_and_side_folders(tmp_path, root):
    with pytest.raises(DiscoveryError, match="not found"):
        list_models(tmp_path / "nope")
    assert vae_dir(root).name == "vae"
    assert text_encoder_dir(root).name == "Qwen3-Embedding-0.6B"
    with pytest.raises(DiscoveryError, match="VAE"):
        vae_dir(tmp_path)
    with pytest.raises(DiscoveryError, match="text encoder"):
        text_encoder_dir(tmp_path)


def test_silence_latent(tmp_path):
    torch.save(torch.arange(12.0).reshape(1, 3, 4), tmp_path / "silence_latent.pt")
    latent = load_silence_latent(tmp_path)
    assert latent.shape == (1, 4, 3) and latent[0, 1, 0] == 1.0


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_silence_latent_refuses_pickled_code(tmp_path):
    with open(tmp_path / "silence_latent.pt", "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(DiscoveryError, match="cannot be loaded safely"):
        load_silence_latent(tmp_path)
    (tmp_path / "silence_latent.pt").unlink()
    with pytest.raises(DiscoveryError, match="missing"):
        load_silence_latent(tmp_path)


def test_listing_models_does_not_import_torch(root):
    """The dashboard lists models at start-up; torch's import (seconds of GIL-holding CPU)
    must not come with it."""
    import subprocess
    import sys

    code = ("import sys; from sidestep.model.checkpoints import list_models; "
            f"names = [e.name for e in list_models({str(root)!r})]; "
            "print(len(names), 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["5", "False"]


def test_model_package_names_load_on_use():
    import sidestep.model as model

    assert model.build_acestep.__module__ == "sidestep.model.acestep"
    assert model.CheckpointError.__module__ == "sidestep.model.loading"
    with pytest.raises(AttributeError, match="no_such_name"):
        model.no_such_name  # noqa: B018
