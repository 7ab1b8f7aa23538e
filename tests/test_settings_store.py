from __future__ import annotations

import json

import pytest

from sidestep.config.settings import Settings, SettingsError, SettingsStore


def test_defaults_when_missing(tmp_path):
    settings, warnings = SettingsStore(tmp_path / "settings.json").load()
    assert settings == Settings() and warnings == []


def test_save_load_roundtrip_and_unknown_keys_kept(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"from_the_future": 1}))
    store = SettingsStore(path)
    store.update(checkpoint_dir="/models", refresh_hz=8.0)
    settings, warnings = store.load()
    assert settings.checkpoint_dir == "/models" and settings.refresh_hz == 8.0
    assert warnings == []
    assert json.loads(path.read_text())["from_the_future"] == 1
    assert not list(tmp_path.glob(".settings.json.*"))  # no temp files left behind


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe garbage", ""])
def test_corrupt_file_kept_as_bak(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_bytes(content.encode("latin-1"))
    settings, warnings = SettingsStore(path).load()
    assert settings == Settings()
    assert len(warnings) == 1 and ".bak" in warnings[0]
    assert (tmp_path / "settings.json.bak").read_bytes() == content.encode("latin-1")
    assert not path.exists()


def test_bad_value_uses_default_with_warning(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"refresh_hz": "fast", "output_root": "/runs"}))
    settings, warnings = SettingsStore(path).load()
    assert settings.refresh_hz == Settings().refresh_hz and settings.output_root == "/runs"
    assert "refresh_hz" in warnings[0]


def test_update_rejects_bad_values(tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    with pytest.raises(SettingsError, match="^Theme must be one of"):
        store.update(theme="neon-vomit")
    with pytest.raises(SettingsError, match="nope"):
        store.update(nope=1)
    # what is allowed, in the message, under the label the Settings screen shows
    with pytest.raises(SettingsError, match=r"^Monitor refresh rate must be a number from "
                                            r"0\.5 to 30"):
        store.update(refresh_hz=0)
    song = tmp_path / "clip.wav"
    song.write_bytes(b"RIFF")
    for key, label in (("checkpoint_dir", "Default checkpoint folder"),
                       ("output_root", "Output root"), ("dataset_root", "Dataset root")):
        with pytest.raises(SettingsError, match=f"^{label} must be a folder path"):
            store.update(**{key: str(song)})
    assert not (tmp_path / "settings.json").exists()  # nothing refused was saved


def test_default_location_follows_config_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(tmp_path / "cfg"))
    store = SettingsStore()
    store.update(output_root="/x")
    assert (tmp_path / "cfg" / "settings.json").exists()
