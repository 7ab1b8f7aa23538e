"""What a new user's first session in the app hit (each test fails without its fix)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import make_app, wait_until
from sidestep.tui.screens.dashboard import DashboardScreen
from sidestep.tui.screens.dialogs import ErrorScreen
from sidestep.tui.screens.monitor import MonitorScreen
from sidestep.tui.screens.train_form import TrainingFormScreen
from test_tui import SIZE, broken_engine, open_form, type_into


def field_error(form, name: str) -> str:
    return str(form.query_one(f"#field-{name}").query_one(".field-error").render())


async def test_a_file_as_output_directory_is_called_a_file(tui_env, monkeypatch):
    """The check of "/etc/" (a folder that is not empty) came back after the one of
    "/etc/passwd" and its message stood for the file."""
    import sidestep.tui.screens.train_form as train_form

    real = train_form.check_path

    def slow_for_the_folder(name, value, resume):
        if name == "output_dir" and str(value).rstrip("/") == "/etc":
            time.sleep(1.5)
        return real(name, value, resume)

    monkeypatch.setattr(train_form, "check_path", slow_for_the_folder)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        await type_into(pilot, app, "output_dir", "/etc/passwd")
        await pilot.pause(2.5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        shown = field_error(form, "output_dir")
        assert "/etc/passwd is a file, not a folder" in shown and "not empty" not in shown


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
async def test_an_output_folder_that_cannot_be_made_blocks_start_on_its_field(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        await type_into(pilot, app, "output_dir", "/proc/sidestep-run")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert "cannot create this folder" in field_error(form, "output_dir")
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert app.runner.state is None and app.screen is form
        assert "Output directory" in str(form.query_one("#form-status").render())


async def test_a_failed_start_keeps_the_form_and_points_at_no_missing_log(tui_env):
    app = make_app(engine_factory=broken_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot)
        await type_into(pilot, app, "epochs", "3")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), 20)
        assert "sidestep.log" not in app.screen.hint.replace("keeps no sidestep.log", "")
        await pilot.press("enter")
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        await pilot.press("f")
        assert await wait_until(pilot, lambda: isinstance(app.screen, TrainingFormScreen)
                                and app.screen.built, 10)
        await pilot.pause(0.3)
        form = app.screen
        assert form.resolved is not None and form.resolved.config.epochs == 3
        assert form.resolved.config.rank == 4  # typed when the form opened
        assert form.resolved.config.output_dir == "./output/run-a"


async def test_a_paused_run_shows_no_stale_eta(tui_env):
    from sidestep.tui.state import RunState

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        state = RunState(run_dir="/runs/new", title="new")
        state.status, state.eta_seconds = "paused", 23.0
        app.push_screen(MonitorScreen(state))
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 5)
        await pilot.pause(0.5)
        text = str(app.screen.query_one("#rate-label").render())
        assert "paused" in text and "00:23" not in text, text


async def test_the_palette_offers_run_commands_only_during_a_run(tui_env):
    from sidestep.tui.commands import SideStepCommands

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot)
        names = [c[0] for c in SideStepCommands(app.screen)._commands()]
        assert "Stop and save" not in names and "Save checkpoint now" not in names
        app.action_stop_run()  # chosen from a palette opened while a run was still active
        await pilot.pause(0.2)
        assert any("no run is active" in n.message for n in app._notifications)
