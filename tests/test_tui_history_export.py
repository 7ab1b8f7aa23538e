"""Export from History (issue #16): the X key opens the export dialog for the selected run, the
export runs off the UI thread, and its result or its refusal shows as a notification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import Input

from conftest import form_built, make_app, trained_run, wait_until
from sidestep.tui.screens.export_dialog import ExportDialog
from sidestep.tui.screens.history import HistoryScreen

SIZE = (100, 32)


@pytest.fixture(scope="module")
def finished_run(demo_root, small_tensors, tmp_path_factory):
    """A finished tiny LoRA run (trained once for the module)."""
    return trained_run(demo_root, small_tensors,
                       tmp_path_factory.mktemp("history_export") / "song-lora")


def place_run(finished_run, tui_env, name="song-lora"):
    """The run copied under ./output, its run.json pointing at the copy (a moved run)."""
    run = tui_env / "output" / name
    shutil.copytree(finished_run, run)
    info = json.loads((run / "run.json").read_text())
    info["adapter_path"] = str(run / "final" / "adapter")
    (run / "run.json").write_text(json.dumps(info))
    return run


def messages(app, severity=None):
    return [n.message for n in app._notifications if severity in (None, n.severity)]


async def open_history(app, pilot, runs):
    await pilot.press("h")
    assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), 5)
    history = app.screen
    assert await wait_until(pilot, lambda: len(history.runs) == runs, 10)
    return history


async def test_export_a_finished_run_from_history(tui_env, finished_run):
    from sidestep.engine.adapter_check import check_adapter

    run = place_run(finished_run, tui_env)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        history = await open_history(app, pilot, 1)
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 5)
        dialog = app.screen
        output = dialog.query_one("#export-output")
        assert output.value == "output/song-lora/export/song-lora-comfyui.safetensors"
        # the default path follows the format
        dialog.query_one("#export-format").value = "acestep-cpp"
        await pilot.pause(0.2)
        assert output.value == "output/song-lora/export/song-lora-acestep-cpp.safetensors"
        await pilot.click("#ok")
        assert await wait_until(pilot, lambda: history.last_export is not None, 60)
        assert app.screen is history
        assert history.last_export.error is None, history.last_export.error
        assert any("wrote" in m and "32 modules" in m for m in messages(app))
    written = run / "export" / "song-lora-acestep-cpp.safetensors"
    report = check_adapter(written)
    verdict = {v.runtime: v for v in report.runtimes}["acestep-cpp"]
    assert not report.problems
    assert verdict.loads and verdict.modules == 32 and verdict.strength == 1.0
    assert not verdict.dropped
    assert sorted(p.name for p in written.parent.iterdir()) == [written.name]  # no temp left


async def test_refused_export_and_a_run_without_adapter_show_why(tui_env, finished_run):
    run = place_run(finished_run, tui_env)
    taken = run / "export" / "song-lora-comfyui.safetensors"
    taken.parent.mkdir()
    taken.write_bytes(b"keep me")
    stopped = tui_env / "output" / "a-stopped-run"   # started long ago: listed second
    stopped.mkdir(parents=True)
    (stopped / "run.json").write_text(json.dumps({"status": "stopped", "started_at": 1.0,
                                                  "config": {"adapter_type": "lora"}}))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        history = await open_history(app, pilot, 2)
        assert [r.name for r in history.runs] == ["song-lora", "a-stopped-run"]
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 5)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: history.last_export is not None, 60)
        error = history.last_export.error
        assert error and "already exists" in error and "--force" in error
        assert any("already exists" in m for m in messages(app, "error"))
        assert taken.read_bytes() == b"keep me"
        # the stopped run has no final adapter: the action says so, no dialog
        await pilot.press("down")
        await pilot.pause(0.2)
        assert history.selected().name == "a-stopped-run"
        await pilot.press("x")
        await pilot.pause(0.3)
        assert app.screen is history
        assert any("a-stopped-run has no adapter yet (status: stopped)" in m
                   for m in messages(app, "warning"))
        # Esc in the dialog cancels without exporting
        await pilot.press("up", "x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 5)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is history, 5)
    assert sorted(p.name for p in taken.parent.iterdir()) == [taken.name]


async def resume_form(app, pilot):
    """History's Resume (R) on its one run: the form it opens, built."""
    await open_history(app, pilot, 1)
    await pilot.press("r")
    assert await wait_until(pilot, lambda: form_built(app), 10)
    return app.screen


async def test_resuming_a_completed_run_asks_for_more_epochs_at_once(tui_env, finished_run):
    """History's Resume on a run that trained all its epochs: the form opens with the cursor
    in Epochs and a warning saying to raise it (a start with the same epochs is refused)."""

    place_run(finished_run, tui_env)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await resume_form(app, pilot)
        await pilot.pause(0.3)
        assert form.explicit["resume_from"].endswith("checkpoint-epoch-1")
        assert "field-epochs" in [a.id for a in app.focused.ancestors_with_self]
        assert app.focused.selected_text == "1"  # typing a number replaces the old one
        assert any("finished all 1 epoch: raise Epochs above 1" in m
                   for m in messages(app, "warning"))
        # the form says it too, on the field (once its check of Resume from has read the
        # checkpoint), and Start is refused there
        assert await wait_until(pilot, lambda: any(
            "Max epochs: the run has trained 1 epoch; raise this above 1" in p
            for p in form.blocking_problems()), 10), form.blocking_problems()
        assert form.resolved is None
        await pilot.press("end", "backspace", "2")  # the cursor is already there
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert form.explicit["epochs"] == 2
        assert form.resolved is not None, form.blocking_problems()
        # the review says what the resume changes before Start, in the app's words
        await pilot.press("f3")
        assert await wait_until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen", 10)
        notes = [str(w.render()) for w in app.screen.query(".review-warning")]
        assert any("resuming with 'Max epochs' 2 (the run used 1): the learning-rate schedule "
                   "is recomputed" in n for n in notes), notes


async def test_resuming_a_stopped_run_refuses_fewer_epochs_than_it_trained(tui_env,
                                                                          finished_run):
    """A run stopped after 1 of 3 epochs: Max epochs set to 1 on its resume form said ready,
    and Start failed on the monitor; the field says it at once."""
    run = place_run(finished_run, tui_env, "stopped-run")
    info = json.loads((run / "run.json").read_text())
    info.update(status="stopped", config={**info["config"], "epochs": 3})
    (run / "run.json").write_text(json.dumps(info))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await resume_form(app, pilot)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert form.resolved is not None, form.blocking_problems()
        form.query_one("#input-epochs", Input).value = "1"
        assert await wait_until(pilot, lambda: any(
            "Max epochs: the run has trained 1 epoch; raise this above 1" in p
            for p in form.blocking_problems()), 10), form.blocking_problems()
        form.query_one("#input-epochs", Input).value = "2"
        assert await wait_until(pilot, lambda: form.resolved is not None, 10)


async def test_a_stopped_run_exports_its_best_adapter(tui_env, finished_run):
    """A run stopped before its final adapter: X exports its best adapter (named so in the
    output), and says that it does."""
    from sidestep.engine.adapter_check import check_adapter

    run = place_run(finished_run, tui_env, "stopped-lora")
    shutil.rmtree(run / "final")
    info = json.loads((run / "run.json").read_text())
    info.update(status="stopped", adapter_path=None)
    (run / "run.json").write_text(json.dumps(info))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        history = await open_history(app, pilot, 1)
        assert "(best: " in str(history.query_one("#history-detail").render())
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 5)
        dialog = app.screen
        assert Path(dialog.adapter).resolve() == (run / "best" / "adapter").resolve()
        output = dialog.query_one("#export-output")
        assert output.value == "output/stopped-lora/export/stopped-lora-best-comfyui.safetensors"
        assert any("exporting its best adapter" in m for m in messages(app))
        await pilot.click("#ok")
        assert await wait_until(pilot, lambda: history.last_export is not None, 60)
        assert history.last_export.error is None, history.last_export.error
    written = run / "export" / "stopped-lora-best-comfyui.safetensors"
    assert not check_adapter(written).problems


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_the_export_dialog_fits_a_small_terminal(tui_env, finished_run, size):
    """At 80x24 the buttons and the second checkbox were cut off below the screen."""
    place_run(finished_run, tui_env)
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await open_history(app, pilot, 1)
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 5)
        await pilot.pause(0.3)
        dialog = app.screen
        screen = dialog.region
        for wid in (".dialog-title", "#export-format", "#export-output", "#export-normalize",
                    "#export-force", "#ok", "#cancel"):
            widget = dialog.query_one(wid)
            region = widget.region
            assert region.height and screen.contains_region(region), (wid, region, screen)
            under, _ = dialog.get_widget_at(region.x + 1, region.y)  # shown, not scrolled off
            assert widget in under.ancestors_with_self, (wid, under)
