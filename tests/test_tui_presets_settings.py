"""The app's Settings refuse an output root no run could write in; the Presets screen's export
keeps the user's path after a refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from conftest import make_app, wait_until
from sidestep.tui.screens.settings import SettingsScreen
from test_tui import SIZE


def _saved_settings() -> str:
    return (Path(os.environ["SIDESTEP_CONFIG_DIR"]) / "settings.json").read_text()


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
async def test_unwritable_output_root_is_refused_on_save(tui_env, where):
    (tui_env / "afile").write_text("")
    bad = {"file": str(tui_env / "afile"), "under_file": str(tui_env / "afile" / "runs"),
           "proc": "/proc/sidestep-x"}[where]
    before = _saved_settings()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_settings()
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen), 5)
        screen = app.screen
        # as a user saves: once the screen has placed its cursor in its first field (else that
        # came after the save and took the focus from the refused field)
        assert await wait_until(pilot, lambda: app.focused is not None
                                and app.focused.screen is screen, 5)
        await pilot.pause(0.2)
        field = screen.query_one("#set-output_root", Input)
        field.value = bad
        screen.action_save()
        error_box = screen.query_one("#settings-error", Static)
        assert await wait_until(pilot, lambda: str(error_box.render()), 10)
        error = str(error_box.render())
        assert error.startswith("✗ Output root:") and bad in error, error
        assert field.has_class("-invalid")
        assert await wait_until(pilot, lambda: app.focused is field, 5), app.focused
        assert app.settings.output_root == "./output"
        assert _saved_settings() == before  # nothing saved
        field.value = "./runs"  # a good one is saved and the mark goes
        screen.action_save()
        await pilot.pause(0.2)
        assert str(screen.query_one("#settings-error", Static).render()) == ""
        assert not field.has_class("-invalid")
        assert json.loads(_saved_settings())["output_root"] == "./runs"


def _prompt_open(app) -> bool:
    from sidestep.tui.screens.dialogs import PromptScreen

    return isinstance(app.screen, PromptScreen) and bool(app.screen.query("#prompt-input"))


async def _export_prompt(app, pilot, path: str):
    """Presets screen, the first preset chosen, Export… with ``path`` typed and OK."""
    from sidestep.tui.screens.presets import PresetsScreen

    app.action_presets()
    assert await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen)
                            and app.screen.infos, 10)
    screen = app.screen
    name = screen.selected().name
    screen.action_export_preset()
    assert await wait_until(pilot, lambda: _prompt_open(app), 5)
    app.screen.query_one("#prompt-input", Input).value = path
    app.screen.action_submit()
    return screen, name


def _prompt_text(app) -> tuple[str, str]:
    from textual.widgets import Label

    labels = " ".join(str(w.render()) for w in app.screen.query(Label))
    return labels, app.screen.query_one("#prompt-input", Input).value


async def test_export_into_a_folder_from_the_app(tui_env):
    (tui_env / "out").mkdir()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen, name = await _export_prompt(app, pilot, str(tui_env / "out"))
        assert await wait_until(pilot, lambda: (tui_env / "out" / f"{name}.json").exists(), 5)
        assert app.screen is screen


async def test_refused_export_reopens_with_the_path_and_why(tui_env):
    from sidestep.tui.screens.dialogs import ConfirmScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        typo = str(tui_env / "typo" / "x.json")  # a folder that does not exist
        await _export_prompt(app, pilot, typo)
        assert await wait_until(pilot, lambda: _prompt_open(app), 5)
        labels, value = _prompt_text(app)
        assert value == typo and "does not exist" in labels and "--force" not in labels
        assert not (tui_env / "typo").exists()
        # a file that exists: declining to replace it reopens the prompt too, in app words
        taken = tui_env / "taken.json"
        taken.write_text("keep me")
        app.screen.query_one("#prompt-input", Input).value = str(taken)
        app.screen.action_submit()
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        app.screen.dismiss("cancel")
        assert await wait_until(pilot, lambda: _prompt_open(app), 5)
        labels, value = _prompt_text(app)
        assert value == str(taken) and "already exists" in labels and "--force" not in labels
        assert taken.read_text() == "keep me"


@pytest.mark.parametrize("saved, where", [("./output", "demo"), ("./my-runs", "saved")])
def test_demo_runs_go_under_a_saved_output_root(tui_env, tmp_path, saved, where):
    """--demo: the Settings' output root when the user saved one, else the demo's own folder."""
    from sidestep.tui.demo import open_demo_form

    settings = Path(os.environ["SIDESTEP_CONFIG_DIR"]) / "settings.json"
    data = json.loads(settings.read_text())
    settings.write_text(json.dumps({**data, "output_root": saved}))
    app = make_app(demo=True, demo_dir=tmp_path / "demo")
    asked = {}
    app.action_new_training = lambda mode, explicit, **kw: asked.update(explicit)
    open_demo_form(app)
    parent = Path(asked["output_dir"]).parent
    expected = tmp_path / "demo" / "runs" if where == "demo" else Path("./my-runs")
    assert parent == expected
    assert Path(saved).expanduser() in app.run_roots() or where == "demo"


async def test_monitor_without_a_run_of_its_own_opens_the_newest_live_one(tui_env,
                                                                          monkeypatch):
    import sidestep.engine.live_runs as live_runs

    rows = [{"path": str(tui_env / "cli-run"), "live": True, "started_at": 100.0},
            {"path": str(tui_env / "newest"), "live": True, "started_at": 300.0},
            {"path": str(tui_env / "done"), "live": False, "started_at": 400.0}]
    monkeypatch.setattr(live_runs, "run_rows", lambda roots: rows)
    app = make_app()
    opened = []
    app.open_history_run = opened.append
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        app.action_monitor()
        assert await wait_until(pilot, lambda: opened, 10)
        assert opened == [tui_env / "newest"]
        rows[:] = [r for r in rows if not r["live"]]  # none live: said, nothing opened
        app.action_monitor()
        assert await wait_until(pilot, lambda: any("no run yet" in n.message
                                                   for n in app._notifications), 10)
        assert opened == [tui_env / "newest"]
