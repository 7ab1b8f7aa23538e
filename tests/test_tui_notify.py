"""Telling the user a run ended: the escapes (bell, OSC 9, OSC 777, tmux passthrough), the
setting that chooses them, and the app writing them when a run it shows ends."""

from __future__ import annotations

import json

import pytest

from sidestep.config.settings import NOTIFY_CHOICES, Settings, SettingsError, SettingsStore
from sidestep.tui.notify import desktop_escapes, notice_escapes, tmux_wrap

ESC, BEL = "\x1b", "\x07"


def test_desktop_escapes_are_osc_9_then_osc_777():
    assert desktop_escapes("Side-Step: run completed", "lofi completed at step 30") == (
        f"{ESC}]9;Side-Step: run completed: lofi completed at step 30{BEL}"
        f"{ESC}]777;notify;Side-Step: run completed;lofi completed at step 30{BEL}")


def test_text_cannot_end_the_escape_or_start_another():
    out = desktop_escapes("a;b\x1b]0;evil\x07", "line one\nline two\x9b31m" + "x" * 500)
    osc9, osc777 = out.split(BEL)[:2]
    assert out.count(BEL) == 2 and out.count(ESC) == 2  # only the two escapes' own
    assert "\n" not in out and "\x9b" not in out
    assert osc777.startswith(f"{ESC}]777;notify;a,b ]0,evil;line one line two")
    assert len(osc9) < 300 and osc9.endswith("…")


def test_tmux_passthrough_doubles_every_escape():
    assert tmux_wrap(f"{ESC}]9;hi{BEL}") == f"{ESC}Ptmux;{ESC}{ESC}]9;hi{BEL}{ESC}\\"
    wrapped = desktop_escapes("t", "b", tmux=True)
    assert wrapped == (f"{ESC}Ptmux;{ESC}{ESC}]9;t: b{BEL}{ESC}\\"
                       f"{ESC}Ptmux;{ESC}{ESC}]777;notify;t;b{BEL}{ESC}\\")


@pytest.mark.parametrize("tmux", [False, True])
def test_the_setting_picks_bell_desktop_both_or_nothing(tmux):
    desktop = desktop_escapes("t", "b", tmux)
    assert notice_escapes("off", "t", "b", tmux) == ""
    assert notice_escapes("bell", "t", "b", tmux) == BEL  # never wrapped: tmux's bell-action
    assert notice_escapes("desktop", "t", "b", tmux) == desktop
    assert notice_escapes("both", "t", "b", tmux) == desktop + BEL


def test_notify_and_keep_running_settings(tmp_path):
    assert Settings().notify == "desktop" and Settings().keep_running is False
    assert NOTIFY_CHOICES == ("off", "bell", "desktop", "both")
    path = tmp_path / "settings.json"
    store = SettingsStore(path)
    store.update(notify="both", keep_running=True)
    settings, warnings = store.load()
    assert (settings.notify, settings.keep_running, warnings) == ("both", True, [])
    with pytest.raises(SettingsError, match="^When a run ends or needs you, tell me by must "
                                            "be one of"):
        store.update(notify="loud")
    with pytest.raises(SettingsError, match="^New runs keep running after I quit must be "
                                            "true or false"):
        store.update(keep_running="yes")
    path.write_text(json.dumps({"notify": "siren", "keep_running": 1}))
    settings, warnings = store.load()
    assert (settings.notify, settings.keep_running) == ("desktop", False)
    assert len(warnings) == 2


async def test_a_finished_run_rings_as_the_setting_says(tui_env, monkeypatch):
    """The app's own run ends: the escapes for the setting go to the terminal once; "off"
    writes nothing; a fatal problem says the run needs you, and its failure is not told
    twice."""
    from conftest import make_app
    from sidestep.engine.events import Problem, RunFinished, StepMetrics
    from sidestep.tui.state import RunState

    monkeypatch.delenv("TMUX", raising=False)
    app = make_app()
    written: list[str] = []
    app.write_escapes = written.append
    async with app.run_test(size=(100, 32)) as pilot:
        runner = app.runner
        runner.state = RunState(run_dir="/runs/lofi", title="lofi")
        runner.state.apply(StepMetrics(step=3, epoch=1, loss=1.0, lr=1e-4))
        runner.state.apply(RunFinished(status="completed", step=3, adapter_path="/a"))
        app.drain_events()
        app.drain_events()
        await pilot.pause(0.1)
        assert written == [desktop_escapes("Side-Step: run completed",
                                           "lofi completed at step 3")]

        app.settings = app.settings.replace(notify="off")
        runner.state = RunState(run_dir="/runs/quiet", title="quiet")
        runner.state.apply(RunFinished(status="stopped", step=1))
        app.drain_events()
        assert len(written) == 1

        app.settings = app.settings.replace(notify="both")
        runner.state = RunState(run_dir="/runs/oom", title="oom")
        runner.state.apply(Problem(kind="oom", message="out of memory 3 times in a row",
                                   fatal=True))
        app.drain_events()
        assert written[-1] == notice_escapes("both", "Side-Step: run needs you",
                                             "oom: out of memory 3 times in a row")
        runner.state.apply(RunFinished(status="failed", error="out of memory"))
        app.drain_events()
        assert len(written) == 2  # the failure was the news already told
        await pilot.pause(0.2)
