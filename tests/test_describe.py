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
