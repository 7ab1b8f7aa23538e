"""The demo tree: a complete tiny checkpoint root, audio with sidecars, preprocessed tensors."""

from __future__ import annotations

import json

import torch

from sidestep.cli import main
from sidestep.model import load_acestep
from sidestep.model.checkpoints import list_models, load_silence_latent, resolve_model


def test_tree(demo_root):
    ck = demo_root / "checkpoints"
    for rel in ["acestep-v15-turbo/config.json", "acestep-v15-turbo/model.safetensors",
                "acestep-v15-turbo/silence_latent.pt", "acestep-v15-base/model.safetensors",
                "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                "Qwen3-Embedding-0.6B/config.json", "Qwen3-Embedding-0.6B/tokenizer.json",
                "Qwen3-Embedding-0.6B/model.safetensors"]:
        assert (ck / rel).is_file(), rel
    assert [e.name for e in list_models(ck)] == ["acestep-v15-turbo", "acestep-v15-base"]
    assert resolve_model(ck, "turbo").is_turbo and not resolve_model(ck, "base").is_turbo
    wavs = sorted((demo_root / "audio").glob("*.wav"))
    assert len(wavs) == 12
    assert all(w.with_suffix(".txt").is_file() for w in wavs)
    assert list((demo_root / "audio").glob("*.lyrics.txt"))
    assert len(list((demo_root / "tensors").glob("*.pt"))) == 12


def test_dit_folders_load(demo_root):
    for variant in ("acestep-v15-turbo", "acestep-v15-base"):
        model = load_acestep(demo_root / "checkpoints" / variant)
        assert model.config.in_channels == 192 and model.config.audio_acoustic_hidden_dim == 64
    silence = load_silence_latent(demo_root / "checkpoints" / "acestep-v15-turbo")
    assert silence.shape[0] == 1 and silence.shape[2] == 64


def test_vae_and_text_encoder_load_with_their_libraries(demo_root):
    from diffusers import AutoencoderOobleck
    from transformers import AutoModel, AutoTokenizer

    vae = AutoencoderOobleck.from_pretrained(str(demo_root / "checkpoints" / "vae"),
                                             local_files_only=True)
    assert vae.config.sampling_rate == 48000
    hop = 1
    for r in vae.config.downsampling_ratios:
        hop *= r
    assert hop == 1920
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 2, 48000)).latent_dist.mean
    assert latents.shape == (1, 64, 25)
    te_dir = str(demo_root / "checkpoints" / "Qwen3-Embedding-0.6B")
    tok = AutoTokenizer.from_pretrained(te_dir, local_files_only=True)
    model = AutoModel.from_pretrained(te_dir, local_files_only=True)
    ids = tok("# Caption\nwarm lo-fi piano ünïcode", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "# Caption\nwarm lo-fi piano ünïcode"
    out = model(ids).last_hidden_state
    assert out.shape[-1] == 64 == model.config.hidden_size
    assert tok.pad_token == "<|endoftext|>"


def test_tensor_format(demo_root):
    manifest = json.loads((demo_root / "tensors" / "manifest.json").read_text())
    assert manifest["num_samples"] == 12 == len(manifest["samples"])
    enc_hidden = load_acestep(demo_root / "checkpoints" / "acestep-v15-turbo",
                              parts=("null_condition_emb",)).config.enc_hidden
    for path in sorted((demo_root / "tensors").glob("*.pt")):
        d = torch.load(path, map_location="cpu", weights_only=True)
        assert set(d) == {"target_latents", "attention_mask", "encoder_hidden_states",
                          "encoder_attention_mask", "context_latents", "metadata"}
        t = d["target_latents"].shape[0]
        assert d["target_latents"].shape == (t, 64)
        assert 40 <= t <= 60  # 1.6-2.4 s at 25 frames/s
        assert d["attention_mask"].shape == (t,) and bool((d["attention_mask"] == 1).all())
        assert d["context_latents"].shape == (t, 128)
        assert bool((d["context_latents"][:, 64:] == 1).all())
        assert d["encoder_hidden_states"].shape == (512 + 1 + 256, enc_hidden)
        assert d["encoder_attention_mask"].dtype == torch.bool
        assert d["encoder_hidden_states"].dtype == torch.float32
        assert torch.isfinite(d["target_latents"]).all()
        assert d["metadata"]["caption"] and d["metadata"]["filename"].endswith(".wav")


def test_make_demo_cli_deterministic(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--plain", "make-demo", str(a), "--clips", "2", "--seed", "3"]) == 0
    assert main(["--plain", "make-demo", str(b), "--clips", "2", "--seed", "3"]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".pt":
            da = torch.load(a / rel, weights_only=True)
            db = torch.load(b / rel, weights_only=True)
            if isinstance(da, dict):
                assert all(torch.equal(da[k], db[k]) for k in da if torch.is_tensor(da[k]))
            else:
                assert torch.equal(da, db)
        elif rel.name not in ("dataset.json", "manifest.json"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert main(["--plain", "make-demo", str(a)]) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err


def test_make_demo_force_regenerates_a_demo_with_other_clips(demo_root, tmp_path, capsys):
    """make-demo --force over a demo (here a copy of one) with another --clips and --seed:
    the old clips stayed in audio/ and were encoded again ('--clips 2' over 12 made 12), and
    the copy's tensors, made from other audio, were refused as another dataset's. Now the
    demo has the clips asked for; files the demo does not name are kept."""
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    (root / "audio" / "clip_07.wav.bak").write_bytes(b"mine")  # not a name the demo writes
    (root / "notes.txt").write_text("mine")
    code = main(["--plain", "make-demo", str(root), "--force", "--clips", "2", "--seed", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "other songs" not in err
    assert sorted(p.name for p in (root / "tensors").glob("*.pt")) == ["clip_00.pt",
                                                                       "clip_01.pt"]
    assert sorted(p.name for p in (root / "audio").glob("clip_*") if p.suffix != ".bak") == [
        "clip_00.txt", "clip_00.wav", "clip_01.txt", "clip_01.wav"]
    manifest = json.loads((root / "tensors" / "manifest.json").read_text())
    assert len(manifest["samples"]) == 2
    assert json.loads((root / "sidestep-demo.json").read_text())["clips"] == 2
    assert (root / "audio" / "clip_07.wav.bak").read_bytes() == b"mine"
    assert (root / "notes.txt").read_text() == "mine"


def test_make_demo_force_refuses_a_folder_with_other_tensors_before_writing(tmp_path, capsys):
    """--force into a folder whose tensors/ holds someone's .pt files: the model and audio were
    written, then preprocessing refused the mix and the message said 'cannot write ...;
    nothing was kept' although every file written stayed. Now refused first, nothing changed."""
    from conftest import tree_hash

    root = tmp_path / "work"
    (root / "tensors").mkdir(parents=True)
    (root / "tensors" / "my_song.pt").write_bytes(b"hours of encoding")
    before = tree_hash(root)
    code = main(["--plain", "make-demo", str(root), "--force", "--clips", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "my_song.pt" in err and "not the demo's" in err, err
    assert err.count("\n") == 1 and "nothing was kept" not in err
    assert tree_hash(root) == before
