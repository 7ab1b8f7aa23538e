"""The estimate screen (issue #15), driven with Pilot: `e` runs an estimate on the demo's
songs (prefilled from the last form), top K re-selects without running again, Save writes the
module config, "Train selective" opens a selective form that resolves, cancel ends the run,
and two saved estimates compare as a table."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import DataTable, Input, Static

from conftest import burst, form_built, make_app, wait_until
from sidestep.tui.messages import EstimateFinished
from sidestep.tui.screens.dashboard import DashboardScreen
from sidestep.tui.screens.dialogs import ConfirmScreen, ErrorScreen
from sidestep.tui.screens.estimate import CompareScreen, EstimateScreen
from sidestep.tui.screens.settings_dialog import SettingsDialog
from sidestep.tui.widgets.ranking import RankingChart

SIZE = (100, 32)
QUICK = {"estimate_batches": 2, "num_workers": 0, "top_k": 5, "device": "cpu"}


async def start_estimate(app, pilot, explicit=None, key=False):
    """Open the screen (by key or by action) and start the estimate from its dialog."""
    if key:
        await pilot.press("e")
    else:
        app.action_estimate({**QUICK, **(explicit or {})})
    assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
    dialog = app.screen
    screen = app.screen_stack[-2]
    assert isinstance(screen, EstimateScreen)
    await pilot.pause(0.2)
    await pilot.press("ctrl+s")
    assert await wait_until(pilot, lambda: app.screen is not dialog, 10), \
        dialog.query_one("#settings-dialog-error", Static).render()
    return screen


def selected(screen) -> int:
    return screen.query_one(RankingChart).k


async def test_run_rerank_save_and_train_selective(tui_env, demo_root):
    app = make_app(demo=True, demo_dir=demo_root)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: form_built(app), 30)
        await app.workers.wait_for_complete()
        app.screen.query_one("#input-epochs", Input).value = "3"  # typed there: carried on
        await pilot.pause(0.2)
        await pilot.press("escape")  # the demo opens the form first; edited, it asks
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#leave")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        await pilot.press("e")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        screen = app.screen_stack[-2]
        for name, value in (("estimate_batches", "2"), ("top_k", "5"), ("device", "cpu")):
            app.screen.query_one(f"#input-{name}").value = value
        # prefilled from the demo's form: its model and songs
        assert screen.values["dataset_dir"] == str(demo_root / "tensors")
        assert screen.values["checkpoint_dir"] == str(demo_root / "checkpoints")
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert await wait_until(pilot, lambda: screen.result is not None, 240), \
            screen.query_one("#est-status", Static).render()
        result = screen.result
        assert result.batches == 2 and len(result.ranking) == 32  # the demo: 4 layers x 8
        assert selected(screen) == 5
        assert "5 of 32 modules selected" in str(
            screen.query_one("#est-selection", Static).render())

        # re-rank: +/- and typing, no new run
        await pilot.press("plus", "plus")
        assert selected(screen) == 7 and screen.k == 7
        await pilot.press("minus")
        assert selected(screen) == 6
        box = screen.query_one("#est-k", Input)
        box.value = "3"
        await pilot.pause(0.1)
        assert selected(screen) == 3 and screen.result is result
        box.value = "99"  # out of range: shown, not applied
        await pilot.pause(0.1)
        assert selected(screen) == 3 and box.has_class("est-bad")
        box.value = "4"
        await pilot.pause(0.1)
        screen.query_one("#est-chart-box").focus()

        # the default name is the CLI's (the variant as named), never an existing file
        default = screen.query_one("#est-output", Input).value
        assert Path(default).name.startswith("estimate-turbo-module") and \
            not Path(default).exists(), default
        assert Path(default).parent == demo_root  # the demo's folder, not the current one
        # save (the JSON holds K = 4)
        out = tui_env / "est.json"
        screen.query_one("#est-output", Input).value = str(out)
        await pilot.press("w")
        assert await wait_until(pilot, lambda: out.is_file(), 10)
        doc = json.loads(out.read_text())
        assert doc["top_k"] == 4 and len(doc["modules"]) == 4 and len(doc["all"]) == 32
        assert [m["name"] for m in doc["modules"]] == [n for n, _ in result.ranking[:4]]

        # a file this screen did not write is replaced only after asking
        other = tui_env / "other.json"
        other.write_text("keep me")
        screen.query_one("#est-output", Input).value = str(other)
        await pilot.press("w")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert other.read_text() == "keep me"

        # Train selective with K changed: rewriting even our own file asks first (a stray
        # '-' typed outside a field once rewrote it unasked); Enter keeps it, Replace writes
        screen.query_one("#est-output", Input).value = str(out)
        await pilot.press("minus")
        assert screen.k == 3
        await pilot.press("t")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        assert "(it holds top 4)" in str(app.screen.query_one(".dialog-body").render())
        await pilot.press("enter")  # the safe button has focus
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert json.loads(out.read_text())["top_k"] == 4
        await pilot.press("t")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.click("#replace")
        assert await wait_until(pilot, lambda: form_built(app)
                                and app.screen.mode == "selective", 10)
        assert json.loads(out.read_text())["top_k"] == 3
        form = app.screen
        # (its exclusive path checks cancel one another: wait for none running)
        assert await wait_until(pilot, lambda: not any(w.is_running for w in app.workers
                                                       if w.node is form), 30)
        await pilot.pause(0.3)
        assert str(form.query_one("#form-title").render()) == "Selective training"
        assert form.model.value("epochs") == 3  # what the last form was set to
        assert form.query_one("#field-module_config").display
        values = form.current_values()
        assert values["module_config"] == str(out)
        assert values["dataset_dir"] == str(demo_root / "tensors")
        resolved = form.config_or_none()
        assert resolved is not None, form.blocking_problems()
        assert resolved.config.mode == "selective"
        assert str(resolved.config.module_config) == str(out)

        # back on E: the same ranking, K and saved file, no new run
        await pilot.press("escape", "e")
        assert await wait_until(pilot, lambda: isinstance(app.screen, EstimateScreen), 10)
        await pilot.pause(0.2)
        again = app.screen
        assert again.result is result and again.k == 3 and again.saved == (out, 3)
        assert "saved with top 3" in str(again.query_one("#est-saved", Static).render())
        # Run… again starts from the K chosen here, not the first run's 5
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        await pilot.pause(0.2)
        assert app.screen.query_one("#input-top_k").value == "3"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is again, 10)
        # "- W" in one burst saves the K the '-' made (W ran first and saved the old one),
        # and a path typed just before W is the one written
        written = tui_env / "burst.json"
        again.query_one("#est-output", Input).value = ""
        again.query_one("#est-output", Input).focus()
        await pilot.pause(0.2)
        await burst(pilot, app, [*((c, c) for c in str(written)), "tab", "minus", "w"])
        assert await wait_until(pilot, lambda: written.is_file(), 10)
        assert json.loads(written.read_text())["top_k"] == 2
        await pilot.press("plus")
        assert again.k == 3

        assert app.errors == []


async def test_cancel_and_bad_input_stay_in_the_app(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        # a dataset folder that is not there: an error on its field, the dialog stays (it
        # closed, and a second dialog said the estimate could not run)
        app.action_estimate({**QUICK, "dataset_dir": "missing"})
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        dialog, screen = app.screen, app.screen_stack[-2]
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
        assert app.screen is dialog and not screen.running
        field = dialog.query_one("#field-dataset_dir")
        assert "missing" in str(field.query_one(".field-error").render())
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert screen.result is None
        assert not screen.query_one("#est-bar").display  # nothing ran

        # a failure the dialog cannot see: the app's error dialog, the bar stops
        app.start_estimate = lambda config, where: (
            where.post_message(EstimateFinished(None, "the disk went away")) or True)
        app.action_estimate({**QUICK, "dataset_dir": "tensors"})
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        screen = app.screen_stack[-2]
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), 10)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert not screen.query_one("#est-bar").display
        del app.start_estimate

        screen = await start_estimate(app, pilot, {"dataset_dir": "tensors",
                                                   "estimate_batches": 400})
        assert await wait_until(pilot, lambda: screen.last_event is not None
                                and screen.last_event.phase == "batch", 240)
        # Esc while it runs asks first (it left and stopped the estimate at once); the
        # focused answer keeps it running
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        assert screen.running
        await pilot.press("c")
        assert await wait_until(pilot, lambda: not screen.running, 120)
        assert screen.result is None
        assert "cancelled" in str(screen.query_one("#est-status", Static).render())
        assert not screen.query_one("#est-bar").display
        assert app.errors == []


async def test_compare_two_saved_estimates(tui_env, demo_root):
    from sidestep.config.resolve import resolve
    from sidestep.engine.estimate import estimate, write_result

    paths = []
    for seed in (1, 2):
        config = resolve("estimate", {"checkpoint_dir": "checkpoints", "dataset_dir": "tensors",
                                      **QUICK, "seed": seed}).config
        paths.append(write_result(estimate(config), tui_env / f"seed{seed}.json"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.action_compare_configs([str(paths[0]), "nope.json"])
        assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 10)
        screen = app.screen
        await pilot.pause(0.2)
        assert "nope.json: file not found" in str(screen.query_one("#cmp-pairs").render())
        screen.query_one("#cmp-b", Input).value = str(paths[1])
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        assert screen.result is not None
        table = screen.query_one("#cmp-table", DataTable)
        assert table.row_count == 32 and len(table.columns) == 3
        line = str(screen.query_one("#cmp-pairs").render())
        assert line.startswith("seed1 vs seed2: top-5 overlap") and "Spearman" in line
        assert app.errors == []


async def test_the_estimate_dialog_fits_a_small_terminal(tui_env):
    """At 80x24 the dialog's Start and Cancel are on screen and clickable (the field list
    pushed them below the dialog's edge)."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_estimate()
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        await pilot.pause(0.3)
        for button in ("#ok", "#cancel"):
            widget = app.screen.query_one(button)
            region = widget.region
            assert region.height > 0, (button, region)
            under, _ = app.screen.get_widget_at(*region.center)
            assert under is widget, (button, region, under)


async def test_a_cancelled_rerun_says_so_over_the_previous_ranking(tui_env):
    """A ranking on screen, then R on other songs and C: the bar showed the old ranking's
    100% and the header the cancelled run's songs, as if it had finished. The bar goes, the
    header names the ranking still shown, and Train selective uses that ranking's songs."""
    import os

    from textual.widgets import ProgressBar

    from sidestep.engine.estimate import EstimateResult, projection_names

    os.symlink(os.readlink(tui_env / "tensors"), tui_env / "other")
    ranking = [(n, 1.0 / (1 + i)) for i, n in enumerate(projection_names(2))]
    done = EstimateResult(granularity="module", top_k=3, model="acestep-v15-turbo",
                          dataset="tensors", batches=2, seed=42, ranking=ranking, seconds=1.0)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.start_estimate = lambda config, where: (
            where.post_message(EstimateFinished(done, None)) or True)
        screen = await start_estimate(app, pilot, {"dataset_dir": "tensors"})
        assert await wait_until(pilot, lambda: screen.result is done, 10)
        app.start_estimate = lambda config, where: True  # runs until cancelled
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        app.screen.query_one("#input-dataset_dir", Input).value = "other"
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: screen.running, 10)
        assert "other" in str(screen.query_one("#est-settings", Static).render())
        await pilot.press("c")
        assert await wait_until(pilot, lambda: screen.cancelling, 10)
        screen.post_message(EstimateFinished(EstimateResult(
            granularity="module", top_k=3, model="acestep-v15-turbo", dataset="other",
            batches=1, seed=42, cancelled=True), None))
        assert await wait_until(pilot, lambda: not screen.running, 10)
        assert "cancelled after 1 batch" in str(screen.query_one("#est-status", Static).render())
        assert not screen.query_one("#est-bar", ProgressBar).display
        header = str(screen.query_one("#est-settings", Static).render())
        assert "previous" in header and "tensors" in header and "other" not in header, header
        assert screen.result is done and screen.result_values["dataset_dir"] == "tensors"
        assert app.errors == []


async def _fed_ranking(app, pilot) -> EstimateScreen:
    """The estimate screen with a ranking of 32 fed by hand (no estimate runs)."""
    from sidestep.engine.estimate import EstimateResult, projection_names

    ranking = [(n, 1.0 / (1 + i)) for i, n in enumerate(projection_names(2))]
    screen = EstimateScreen(ask=False)
    app.goto(screen)
    await pilot.pause(0.3)
    screen.post_message(EstimateFinished(EstimateResult(
        granularity="module", top_k=3, model="acestep-v15-turbo", dataset="tensors",
        batches=2, seed=42, ranking=ranking, seconds=1.0), None))
    assert await wait_until(pilot, lambda: screen.result is not None, 10)
    return screen


async def test_top_k_refuses_a_fraction_instead_of_dropping_the_point(tui_env):
    """"2.5" typed in Top K became 25 (an integer field dropped the '.')."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        screen = await _fed_ranking(app, pilot)
        box = screen.query_one("#est-k", Input)
        box.focus()
        await pilot.pause(0.1)
        box.value = ""
        await burst(pilot, app, ["2", ("full_stop", "."), "5"])
        assert box.value == "2.5" and screen.k == 2 and box.has_class("est-bad")  # as "2"
        assert "whole number" in str(screen.query_one("#est-selection", Static).render())
        box.value = "4"
        await pilot.pause(0.1)
        assert screen.k == 4 and not box.has_class("est-bad")
        assert app.errors == []


async def test_plus_minus_are_dimmed_while_a_field_has_focus(tui_env):
    """+/- typed in Top K or Save to are text there: the footer offered them as K keys."""
    from textual.widgets._footer import FooterKey

    def plus_dimmed():  # None until the footer has its keys
        keys = [k for k in app.screen.query(FooterKey) if k.key == "plus"]
        return keys[0].has_class("-disabled") if keys else None

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        screen = await _fed_ranking(app, pilot)
        # the chart has focus: + changes K
        assert await wait_until(pilot, lambda: plus_dimmed() is False, 5)
        screen.query_one("#est-output", Input).focus()
        assert await wait_until(pilot, lambda: plus_dimmed() is True, 5)
        screen.query_one("#est-chart-box").focus()
        assert await wait_until(pilot, lambda: plus_dimmed() is False, 5)
        await pilot.press("plus")
        assert screen.k == 4
        assert app.errors == []
