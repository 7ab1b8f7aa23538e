"""One precedence for the CLI, the form and presets: defaults < platform < model family <
VRAM profile < preset < explicit values (``layered_values``)."""

from __future__ import annotations

import pytest

from conftest import make_app
from sidestep.config import resolve as resolve_mod
from sidestep.config.resolve import layered_values, resolve

PATHS = {"checkpoint_dir": "/ckpt", "dataset_dir": "/data", "output_dir": "/out"}


@pytest.mark.parametrize("windows", [False, True])
def test_resolve_keeps_what_the_layers_decide(windows):
    profile = {"batch_size": 2, "rank": 32, "learning_rate": 5e-4}
    preset = {"rank": 16, "epochs": 7}
    explicit = {**PATHS, "rank": 8}
    values, sources, _ = layered_values("fixed", explicit, preset, profile, windows=windows)
    assert (values["batch_size"], sources["batch_size"]) == (2, "profile")
    assert (values["epochs"], sources["epochs"]) == (7, "preset")
    assert (values["rank"], sources["rank"]) == (8, "explicit")
    assert values["num_workers"] == (0 if windows else 4)
    assert sources["num_workers"] == ("platform" if windows else "default")
    resolved = resolve("fixed", explicit, preset, profile=profile, windows=windows)
    for name, value in values.items():
        if resolved.sources[name] == "rule":
            continue  # a cross-field rule filled it in (log_dir under the output folder)
        assert getattr(resolved.config, name) == value, name


def test_shift_follows_the_model_family_under_every_layer():
    turbo, _, family = layered_values("fixed", {"model_variant": "turbo"})
    base, _, _ = layered_values("fixed", {"model_variant": "base"})
    assert family == "turbo" and (turbo["shift"], base["shift"]) == (3.0, 1.0)


async def test_an_invalid_form_shows_what_resolve_would(tui_env, monkeypatch):
    """While a field is invalid the form cannot resolve; it still shows each field's value by
    the same precedence, Windows defaults included."""
    from test_tui import SIZE, open_form, type_into

    monkeypatch.setattr(resolve_mod, "IS_WINDOWS", True)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, num_workers=None)
        valid = dict(form.current_values())
        assert valid["num_workers"] == 0 and valid["persistent_workers"] is False
        await type_into(pilot, app, "dataset_dir", "")
        await pilot.pause(0.3)
        assert form.resolved is None  # resolve refuses a run without a dataset
        shown = form.current_values()
        for name in ("num_workers", "prefetch_factor", "persistent_workers", "shift", "rank"):
            assert shown[name] == valid[name], name
