"""The run summary (the CLI's table, the app's Review) names every feature the run uses: the
effective batch over several devices, EMA, validation, samples, background, notify."""

from __future__ import annotations

from sidestep.config.resolve import resolve
from sidestep.engine.describe import summary_rows


def _rows(tmp_path, **values) -> dict[str, str]:
    base = {"checkpoint_dir": str(tmp_path), "dataset_dir": str(tmp_path),
            "output_dir": str(tmp_path / "out")}
    return dict(summary_rows(resolve("fixed", {**base, **values},
                                     require_paths=False).config))


def test_a_plain_run_shows_no_extras(tmp_path):
    rows = _rows(tmp_path, batch_size=2, gradient_accumulation=4)
    assert rows["batches"].startswith("batch 2 x accumulation 4, ")
    assert "devices" not in rows["device"]
    assert not {"EMA", "validation", "samples", "background", "notify"} & set(rows)


def test_every_feature_in_use_is_named(tmp_path):
    rows = _rows(tmp_path, batch_size=2, gradient_accumulation=4, devices="2", num_nodes=1,
                 ema_decay=0.999, val_split=0.25, sample_every_n_epochs=5, detach=True,
                 notify_command="curl -d done ntfy.sh/me")
    assert "x 2 devices = 16 songs per step" in rows["batches"]
    assert rows["device"].endswith("2 devices (data parallel)")
    assert "0.999" in rows["EMA"]
    assert rows["validation"].startswith("0.25 of the files held out")
    assert "every 5 epoch" in rows["samples"]
    assert "closing the terminal" in rows["background"]
    assert "ntfy.sh/me" in rows["notify"]


def test_the_targets_row_names_the_modules_that_train(tmp_path):
    """`selective` said "both attention: q_proj k_proj v_proj o_proj" for a module config of
    cross-attention v/o; per-side lists were left out; vanilla on base said "turbo"."""
    base = {"checkpoint_dir": str(tmp_path), "dataset_dir": str(tmp_path),
            "output_dir": str(tmp_path / "out")}

    def rows(mode, **values):
        return dict(summary_rows(resolve(mode, {**base, **values},
                                         require_paths=False).config))

    assert rows("fixed")["targets"] == "both attention: q_proj k_proj v_proj o_proj"
    assert rows("fixed", self_target_modules=("q_proj",), cross_target_modules=("v_proj",))[
        "targets"] == "self attention: q_proj; cross attention: v_proj"
    assert rows("fixed", attention_type="cross", target_modules=("k_proj",))["targets"] == \
        "cross attention: k_proj"
    est = str(tmp_path / "est.json")
    assert rows("selective", module_config=est)["targets"] == f"the modules {est} lists"
    assert rows("selective", module_config=est, attention_type="self")["targets"] == \
        f"the modules {est} lists, within self attention: q_proj k_proj v_proj o_proj"
    assert rows("selective", auto_estimate=True, top_k=8)["targets"] == \
        "the top 8 modules of an estimate run first (--auto-estimate)"
    assert "turbo" not in rows("vanilla")["mode"]


def test_selective_refuses_two_ways_of_choosing_modules(tmp_path):
    from sidestep.config.resolve import ConfigError

    base = {"checkpoint_dir": str(tmp_path), "dataset_dir": str(tmp_path),
            "output_dir": str(tmp_path / "out"), "module_config": str(tmp_path / "m.json")}
    try:
        resolve("selective", {**base, "auto_estimate": True}, require_paths=False)
    except ConfigError as exc:
        assert [p.field for p in exc.problems] == ["auto_estimate"], exc.problems
    else:
        raise AssertionError("--auto-estimate with --module-config was taken")


def test_the_device_row_says_what_auto_picks(tmp_path, monkeypatch):
    """It said "auto / auto": a box whose GPU torch could not see trained on the CPU without
    a word before the prompt."""
    from sidestep.config.device import DeviceInfo

    monkeypatch.setattr("sidestep.config.device.probe", lambda: DeviceInfo())
    assert _rows(tmp_path)["device"] == \
        "cpu / fp32 (auto); no GPU was found, so this run trains on the CPU"
    assert _rows(tmp_path, device="cpu")["device"] == "cpu / fp32 (auto)"
    hopper = DeviceInfo(cuda_count=1, cuda_capability=((9, 0),), cuda_names=("H100",))
    monkeypatch.setattr("sidestep.config.device.probe", lambda: hopper)
    assert _rows(tmp_path)["device"] == "cuda:0 / bf16 (auto)"
    assert _rows(tmp_path, precision="fp32")["device"] == "cuda:0 (auto) / fp32"
    assert _rows(tmp_path, device="cuda", precision="fp32")["device"] == "cuda / fp32"
