"""The app driven with Pilot: demo to finished run, stop and resume, presets, field errors,
keys inside text inputs, engine errors, quit confirmation, command palette, VRAM autofill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input

from conftest import form_built, make_app, wait_until
from sidestep.telemetry.nvml import GpuReading
from sidestep.tui.screens.dashboard import DashboardScreen
from sidestep.tui.screens.dialogs import ConfirmScreen, ErrorScreen, PromptScreen
from sidestep.tui.screens.history import HistoryScreen
from sidestep.tui.screens.monitor import MonitorScreen
from sidestep.tui.screens.train_form import TrainingFormScreen

SIZE = (100, 32)


async def open_form(app, pilot, **explicit):
    values = {"checkpoint_dir": "./checkpoints", "dataset_dir": "./tensors",
              "output_dir": "./output/run-a", "num_workers": 0, "rank": 4, "alpha": 8,
              "epochs": 2, "save_every": 100}
    values.update(explicit)
    values = {k: v for k, v in values.items() if v is not None}
    app.action_new_training("fixed", values)
    await wait_until(pilot, lambda: form_built(app)
                     and app.screen.is_mounted, 10)
    await pilot.pause(0.3)
    await app.workers.wait_for_complete()
    await pilot.pause(0.2)
    return app.screen


async def run_from_palette(pilot, words: str) -> None:
    """ctrl+p, the words, Enter on the first match."""
    await pilot.press("ctrl+p")
    await pilot.pause(0.3)
    await pilot.press(*list(words))
    await pilot.pause(0.5)
    await pilot.press("enter")


async def type_into(pilot, app, name, text):
    field_input = app.screen.query_one(f"#input-{name}", Input)
    field_input.focus()
    field_input.value = ""
    await pilot.press(*list(text))
    # typed keys are handled one after another (typeahead.py): a click must not overtake them
    assert await wait_until(pilot, lambda: field_input.value == text
                            and app.typed.idle, 10)
    await pilot.pause(0.1)


def small_demo_app(monkeypatch, demo_dir):
    """An app in --demo mode with no assets yet, whose build makes 4 songs, not 12."""
    import sidestep.demo as fixtures

    real = fixtures.make_demo
    monkeypatch.setattr(fixtures, "make_demo",
                        lambda root, **kw: real(root, clips=4, **{k: v for k, v in kw.items()
                                                                   if k != "clips"}))
    return make_app(demo=True, demo_dir=demo_dir)


@pytest.mark.slow
async def test_demo_from_launch_to_finished_run(tui_env, demo_root, tmp_path, monkeypatch):
    """--demo with no assets yet: the app builds them (a small set here), opens the form with
    the quick_test preset, ctrl+s trains, the loss falls and the adapter is on disk."""
    demo_dir = tmp_path / "cache" / "demo"
    app = small_demo_app(monkeypatch, demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: form_built(app), 300)
        form = app.screen
        await wait_until(pilot, lambda: form.resolved is not None, 20)
        await app.workers.wait_for_complete()
        assert form.preset_name == "quick_test"
        assert form.resolved is not None, form.blocking_problems()
        assert form.resolved.config.epochs == 10 and form.resolved.config.rank == 16
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        monitor = app.screen
        assert monitor.query_one("#stop").display  # shown while it trains
        assert await wait_until(pilot, lambda: app.runner.state.finished is not None, 300)
        state = app.runner.state
        assert state.status == "completed", state.finished
        # nothing left to pause, save or stop: the buttons and their keys go (greyed out,
        # they read as keys that should work)
        assert await wait_until(pilot, lambda: not monitor.query_one("#stop").display, 5)
        assert not any(monitor.query_one(f"#{b}").display for b in ("pause", "save"))
        assert not monitor.check_action("stop", ())
        assert len(state.losses) == 10 and state.losses[-1] < state.losses[0]
        adapter = Path(state.finished.adapter_path)
        assert (adapter / "adapter_model.safetensors").is_file()
        assert adapter.is_relative_to(demo_dir / "runs")
        assert app.errors == []


async def test_leaving_the_demo_setup_screen_lets_the_build_finish(tui_env, tmp_path,
                                                                   monkeypatch):
    """H while the demo is built: the build went on writing to the screen's log, which was
    gone ("Demo setup failed: NoMatches"). It finishes, and says so without pulling the user
    off the screen they went to."""
    from sidestep.tui.screens.demo_setup import DemoSetupScreen

    demo_dir = tmp_path / "cache" / "demo"
    app = small_demo_app(monkeypatch, demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DemoSetupScreen), 30)
        await pilot.press("h")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), 5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert isinstance(app.screen, HistoryScreen)
        shown = [n.message for n in app._notifications]
        assert any("demo is ready" in m for m in shown), shown
        assert (demo_dir / "tensors").is_dir() and app.errors == []
        assert not any(isinstance(s, ErrorScreen) for s in app.screen_stack)


async def test_stop_and_save_then_resume_from_history(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, epochs=200, output_dir="./output/first")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.runner.state is not None
                                and app.runner.state.step >= 2, 240)
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#stop")
        assert await wait_until(pilot, lambda: app.runner.state.finished is not None, 120)
        assert app.runner.state.status == "stopped"
        saved = Path(app.runner.state.finished.checkpoint_path)
        assert (saved / "COMPLETE").is_file()
        first_steps = [s for s in app.runner.state.steps
                       if s <= int((saved / "COMPLETE").read_text())]
        # how far it got (a busy machine stops it later): the resume trains past that
        more_epochs = str(app.runner.state.finished.epoch + 2)

        await pilot.press("escape")
        await pilot.press("h")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen)
                                and app.screen.runs, 20)
        assert app.screen.runs[0].status == "stopped"
        await pilot.press("r")
        assert await wait_until(pilot, lambda: form_built(app), 10)
        form = app.screen
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert Path(form.explicit["resume_from"]).resolve() == saved.resolve()
        # what a resume cannot change is a field error at once, not a refusal at start
        batch = str(form.resolved.config.gradient_accumulation)
        await type_into(pilot, app, "gradient_accumulation", "3")
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert form.resolved is None
        assert any(f"keeps the run's {batch}" in p for p in form.blocking_problems())
        await type_into(pilot, app, "gradient_accumulation", batch)
        await type_into(pilot, app, "epochs", more_epochs)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert form.resolved is not None, form.blocking_problems()
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.runner.state.finished is not None
                                and app.runner.state.finished.status != "stopped", 240)
        assert app.runner.state.status == "completed", app.runner.state.finished
        # the monitor's charts hold the whole run: the first attempt's steps, then the rest
        steps = app.runner.state.steps
        assert steps[:len(first_steps)] == first_steps and steps == sorted(set(steps))
        assert steps[-1] == app.runner.state.finished.step
        assert (Path("output/first/final/adapter/adapter_model.safetensors")).is_file()
        events = [json.loads(x) for x in Path("output/first/events.jsonl").read_text()
                  .splitlines()]
        resumed = [e for e in events if e["type"] == "run_started" and e["resumed_from"]]
        assert resumed and Path(resumed[0]["resumed_from"]).resolve() == saved.resolve()
        assert app.errors == []


@pytest.mark.slow
async def test_two_device_run_from_the_form_pauses_resumes_and_stops(tui_env):
    """--devices 2 from the form: the app's run launches two CPU ranks; the monitor's pause
    key holds both, resumes them, and stop saves one checkpoint of world size 2."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, devices="2", epochs=200, output_dir="./output/two")
        assert form.resolved is not None, form.blocking_problems()
        assert form.resolved.config.devices == "2"
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        state = lambda: app.runner.state  # noqa: E731
        assert await wait_until(pilot, lambda: state() is not None and state().step >= 1, 240)
        await pilot.press("space")
        assert await wait_until(pilot, lambda: state().status == "paused", 60)
        held = state().step
        assert "cpu fp32 x 2 processes" in str(app.screen.query_one("#rate-label").render())
        await pilot.pause(1.5)
        assert state().step == held and state().status == "paused"
        await pilot.press("space")
        assert await wait_until(pilot, lambda: state().step > held, 60)
        await pilot.press("x")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#stop")
        assert await wait_until(pilot, lambda: state().finished is not None, 120)
        assert state().status == "stopped", state().finished
        saved = Path(state().finished.checkpoint_path)
        assert (saved / "COMPLETE").is_file()
        info = json.loads(Path("output/two/run.json").read_text())
        assert (info["status"], info["world_size"]) == ("stopped", 2)
        assert app.errors == []


async def test_preset_save_and_load(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        await type_into(pilot, app, "rank", "24")
        await type_into(pilot, app, "alpha", "48")
        assert form.resolved.config.rank == 24
        await pilot.click("#preset-save")
        assert await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), 5)
        await pilot.press(*list("my style"), "enter")
        await pilot.pause(0.3)
        saved = Path("presets/my_style.json")
        stored = json.loads(saved.read_text())
        assert stored["rank"] == 24
        # the turbo form's family-derived schedule is not fixed into the preset (a base model
        # trained with it would get turbo's shift 3 and 8 steps)
        assert not {"shift", "num_inference_steps", "cfg_ratio"} & set(stored)
        async def save_asked(name: str, answer: str) -> str:
            """Save… under ``name``, answer the question it asks; returns the question."""
            await pilot.click("#preset-save")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), 5)
            await pilot.pause(0.2)
            app.screen.query_one("#prompt-input", Input).value = name
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
            asked = app.screen.message
            await pilot.pause(0.2)
            await pilot.click(answer)
            assert await wait_until(pilot, lambda: app.screen is form, 5)
            await pilot.pause(0.3)
            return asked

        # the same name again replaces the preset only when the user says so (it did at once)
        await type_into(pilot, app, "rank", "32")
        for answer in ("#cancel", "#replace"):
            await save_asked("my style", answer)
            assert json.loads(saved.read_text())["rank"] == (24 if answer == "#cancel" else 32)
        # a name that hides a built-in preset asks first (every demo form loads quick_test),
        # then says so
        for answer in ("#cancel", "#replace"):
            assert "built-in preset" in await save_asked("quick_test", answer)
            assert Path("presets/quick_test.json").exists() == (answer == "#replace")
        assert await wait_until(pilot, lambda: any(
            "hides the builtin preset" in n.message for n in app._notifications), 5)
        Path("presets/quick_test.json").unlink()

        form2 = await open_form(app, pilot, rank=None, alpha=None)
        assert form2.resolved.config.rank == 64  # defaults again
        await app.workers.wait_for_complete()
        from textual.widgets import Select

        form2.query_one("#preset-select", Select).value = "my_style"
        await pilot.click("#preset-load")
        assert await wait_until(pilot, lambda: form2.preset_name == "my_style"
                                and form2.resolved is not None
                                and form2.resolved.config.rank == 32, 10)
        assert form2.resolved.config.rank == 32 and form2.resolved.config.alpha == 48
        assert form2.query_one("#input-rank", Input).value == "32"

        app.action_presets()
        assert await wait_until(pilot, lambda: any(i.name == "my_style"
                                                   for i in getattr(app.screen, "infos", [])),
                                10)
        # Load in form from the Presets screen keeps the form's paths (a preset holds none)
        presets = app.screen
        table = presets.query_one("#presets-table")
        table.move_cursor(row=[i.name for i in presets.infos].index("quick_test"))
        table.focus()
        await pilot.pause(0.2)
        await pilot.press("enter")  # the table took Enter and nothing loaded
        assert await wait_until(pilot, lambda: form_built(app)
                                and app.screen is not form2, 10)
        form3 = app.screen
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert form3.preset_name == "quick_test" and form3.resolved is not None
        assert form3.resolved.config.dataset_dir == "./tensors"
        assert form3.resolved.config.output_dir == "./output/run-a"
        assert form3.resolved.config.rank == 16  # quick_test's
        assert app.errors == []


async def test_deleting_presets_refuses_builtins_first_and_defaults_to_cancel(tui_env):
    """A built-in preset is refused before the question; for a local one the question's
    focused button is Cancel (Enter, Enter deleted it)."""
    from sidestep.config.presets import PresetStore

    PresetStore().save("mine", {"rank": 8}, "")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_presets()
        assert await wait_until(pilot, lambda: any(i.name == "mine" for i in
                                                   getattr(app.screen, "infos", [])), 10)
        presets = app.screen
        await pilot.pause(0.3)  # laid out: the list is filled again to its width
        table = presets.query_one("#presets-table")
        names = [i.name for i in presets.infos]
        table.move_cursor(row=names.index("recommended"))
        await pilot.pause(0.1)
        assert presets.selected().name == "recommended"
        presets.action_delete_preset()
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen)
                                and app.screen.query(".dialog-body"), 10)
        assert "built-in preset and cannot be deleted" in str(
            app.screen.query_one(".dialog-body").render())
        await pilot.press("escape")
        table.move_cursor(row=names.index("mine"))
        await pilot.pause(0.1)
        presets.action_delete_preset()
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                                and app.focused is not None, 5)
        assert app.focused.id == "cancel"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert Path("presets/mine.json").is_file()
        presets.action_delete_preset()
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                                and app.focused is not None, 5)
        await pilot.click("#delete")
        assert await wait_until(pilot, lambda: not Path("presets/mine.json").exists(), 5)
        assert app.errors == []


async def test_field_error_shown_and_start_refused(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        await type_into(pilot, app, "rank", "lots")
        field = form.query_one("#field-rank")
        assert field.has_class("has-error")
        assert "whole number" in str(field.query_one(".field-error").render())
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert app.runner.state is None and isinstance(app.screen, TrainingFormScreen)
        assert "Rank" in str(form.query_one("#form-status").render())
        # a cross-field rule shows on its field too
        await type_into(pilot, app, "rank", "8")
        await type_into(pilot, app, "epochs", "0")
        assert form.query_one("#field-epochs").has_class("has-error")
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert app.runner.state is None
        assert app.errors == []


async def test_typing_q_f_h_into_an_input_only_edits_it(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        box = form.query_one("#input-dataset_dir", Input)
        box.focus()
        box.value = ""
        await pilot.press("q", "f", "h", "d", "s", "v", "question_mark")
        await pilot.pause(0.2)
        assert box.value == "qfhdsv?"
        assert app.screen is form and app.is_running
        assert app.runner.state is None


def broken_engine(config, sinks, control):
    """An engine whose start fails (the app must show it and stay usable)."""
    raise RuntimeError("the GPU caught fire")


async def test_engine_error_is_shown_and_app_stays_usable(tui_env):
    app = make_app(engine_factory=broken_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), 20)
        assert "the GPU caught fire" in app.screen.message
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.runner.state.status == "failed"
        await pilot.press("escape")
        await pilot.press("d")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen)

    # a failure inside the real engine (bad data) arrives as an event and shows the same way
    import torch

    Path("bad").mkdir()  # a tensor file, but not of a song: only loading it tells
    torch.save({"not": "a song"}, "bad/song.pt")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, dataset_dir="./bad", output_dir="./output/bad")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), 240)
        assert "song.pt" in app.screen.message
        assert app.errors == []


async def test_quit_during_a_run_asks_first(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, epochs=200, output_dir="./output/quit")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.runner.state.step >= 1, 240)
        await pilot.press("q")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#cancel")
        await pilot.pause(0.3)
        assert app.is_running and app.runner.active
        # the palette's Quit asks too (Textual's own exited at once, mid-run), and is listed
        # once
        assert not [c for c in app.get_system_commands(app.screen)
                    if c.callback == app.action_quit or c.title == "Quit"]
        await run_from_palette(pilot, "quit")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#cancel")
        await pilot.pause(0.3)
        assert app.is_running and app.runner.active
        await pilot.press("ctrl+q")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#stop")
        assert await wait_until(pilot, lambda: not app.is_running, 120)
    assert app.runner.state.status == "stopped"
    assert list(Path("output/quit").glob("checkpoint-step-*/COMPLETE"))


async def test_sigterm_during_a_run_saves_then_exits(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, epochs=200, output_dir="./output/term")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.runner.state.step >= 1, 240)
        app._on_stop_signal("SIGTERM")
        assert await wait_until(pilot, lambda: not app.is_running, 120)
    assert app.runner.state.status == "stopped"
    assert list(Path("output/term").glob("checkpoint-step-*/COMPLETE"))


async def test_command_palette_reaches_screens(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_from_palette(pilot, "history")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), 5)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        from sidestep.tui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)


def _card(total_gib, free_gib):
    return lambda: [GpuReading(index=0, name="Test GPU", util_percent=0.0,
                               mem_total_mib=total_gib * 1024.0,
                               mem_used_mib=(total_gib - free_gib) * 1024.0,
                               mem_free_mib=free_gib * 1024.0)]


async def test_vram_profile_autofill_and_live_verdict(tui_env):
    from conftest import REFERENCE

    # estimates read only config.json: a checkpoint root with the real 2B config suffices
    real = Path("real/acestep-v15-turbo")
    real.mkdir(parents=True)
    cfg_2b = json.loads((REFERENCE / "config_turbo.json").read_text())["config"]
    (real / "config.json").write_text(json.dumps(cfg_2b))
    app = make_app(gpu_reader=_card(12, 11.5))
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, rank=None, alpha=None, checkpoint_dir="./real")
        await wait_until(pilot, lambda: form.model_cfg is not None, 10)
        await wait_until(pilot, lambda: form.profile_values, 10)
        cfg = form.resolved.config
        assert (cfg.rank, cfg.optimizer_type, cfg.offload_encoder) == (32, "adamw8bit", True)
        assert form.query_one("#input-rank", Input).value == "32"
        line = str(form.query_one("#vram-estimate").render())
        assert "fits" in line and "Test GPU" in line and "12gb" in line
        assert 3.5 < float(line.split("VRAM estimate: ")[1].split(" GiB")[0]) < 8
        from textual.widgets import Select

        form.query_one("#profile-select", Select).value = "24gb"
        assert await wait_until(pilot, lambda: form.resolved.config.rank == 128, 10)
        assert form.resolved.config.batch_size == 2
        # a very long batch of whole songs will not fit in 11.5 GiB: the verdict says so
        await type_into(pilot, app, "batch_size", "64")
        line = str(form.query_one("#vram-estimate").render())
        assert "will not fit" in line
        assert form.query_one("#vram-estimate").has_class("estimate-bad")

        # a profile picked after a preset was loaded sets the fields both hold (the preset
        # kept them, and picking 8gb changed nothing); a preset loaded after it wins again
        form.load_preset("quick_test")
        await pilot.pause(0.2)
        assert form.resolved.config.optimizer_type == "adamw"
        form.query_one("#profile-select", Select).value = "8gb"
        assert await wait_until(pilot, lambda: form.resolved.config.optimizer_type
                                == "adamw8bit", 10)
        cfg = form.resolved.config
        assert (cfg.offload_encoder, cfg.gradient_accumulation, cfg.chunk_duration) == \
            (True, 8, 60)
        assert any("VRAM profile 8gb sets" in n.message and "quick_test" in n.message
                   for n in app._notifications)
        form.load_preset("quick_test")
        await pilot.pause(0.2)
        assert form.resolved.config.optimizer_type == "adamw"


class ScriptedEngine:
    """Emits a short run's events and waits for stop: the monitor under a steady event flow
    without torch (the real engine is covered by the tests above)."""

    def __init__(self, config, sinks, control, lines=12):
        from sidestep.engine.events import LogLine, RunStarted, StepMetrics

        self.sinks, self.control = sinks, control
        self.events = [RunStarted(run_dir=str(config.output_dir), config={}, device="cpu",
                                  precision="fp32", model="tiny", adapter_type="lora",
                                  trainable_params=10, dataset_size=3, steps_per_epoch=4,
                                  total_steps=40, total_epochs=10)]
        self.events += [StepMetrics(step=i + 1, epoch=i // 4 + 1, loss=2.0 - 0.01 * i, lr=1e-4)
                        for i in range(lines)]
        self.events += [LogLine(message=f"line {i:02d}" + (" /a/long/path" * 30 if i == 10 else ""),
                                level="warning" if i == 3 else "info") for i in range(lines)]

    def run(self):
        import time as _time

        from sidestep.engine.events import RunFinished

        for event in self.events:
            for sink in self.sinks:
                sink.handle(event)
        while not self.control.stop_requested:
            _time.sleep(0.05)
        for sink in self.sinks:
            sink.handle(RunFinished(status="stopped", step=12, epoch=3))


async def test_monitor_log_tail_and_full_log(tui_env):
    from sidestep.tui.screens.log_view import LogScreen
    from sidestep.tui.widgets.log_tail import LogTail

    app = make_app(engine_factory=ScriptedEngine)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, output_dir="./output/scripted")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen)
                                and app.runner.state.log_total >= 13, 20)
        await pilot.pause(1.2)  # one monitor refresh
        tail = str(app.screen.query_one(LogTail).render())
        assert all(len(row) <= 96 for row in tail.splitlines())
        assert "line 11" in tail and "line 07" in tail and "line 06" not in tail  # newest five
        assert "line 10 /a/long/path" in tail and "…" in tail  # cut to the box, not wrapped
        await pilot.press("g")
        assert await wait_until(pilot, lambda: isinstance(app.screen, LogScreen), 5)
        await pilot.pause(0.3)
        full = "\n".join(line.text for line in app.screen.query_one("#full-log").lines)
        assert all(f"line {i:02d}" in full for i in range(12))
        # it follows the run while open: a line the engine logs now shows up in it
        from sidestep.engine.events import LogLine

        app.runner._queue.put(LogLine(message="logged while the full log was open"))
        assert await wait_until(pilot, lambda: any(
            "while the full log was open" in line.text
            for line in app.screen.query_one("#full-log").lines), 5)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 5)
        app.runner.stop()
        assert await wait_until(pilot, lambda: app.runner.state.finished is not None, 10)


async def test_monitor_slows_its_charts_when_over_the_cpu_budget(tui_env):
    import time as _time

    from sidestep.tui.screens import monitor as monitor_mod

    app = make_app(engine_factory=ScriptedEngine)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, output_dir="./output/budget")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 20)
        screen = app.screen
        # The real governor may already have slowed the charts on a busy machine: start fresh.
        screen.chart_period = monitor_mod.CHART_PERIOD_S
        periods = []
        for _ in range(8):  # pretend the UI thread used half a core since the last check
            screen._cpu_mark = (_time.thread_time() - 1.0, _time.perf_counter() - 2.0)
            screen._adapt_chart_period(_time.perf_counter())
            periods.append(screen.chart_period)
        assert periods == sorted(periods) and periods[0] > monitor_mod.CHART_PERIOD_S
        assert periods[-1] == monitor_mod.CHART_PERIOD_MAX_S
        for _ in range(10):  # an idle UI thread: back to the fastest period
            screen._cpu_mark = (_time.thread_time(), _time.perf_counter() - 2.0)
            screen._adapt_chart_period(_time.perf_counter())
        assert screen.chart_period == monitor_mod.CHART_PERIOD_S
        app.runner.stop()
        assert await wait_until(pilot, lambda: app.runner.state.finished is not None, 10)


def test_charts_redraw_for_new_steps_not_for_log_lines():
    from sidestep.engine.events import LogLine, StepMetrics
    from sidestep.tui.state import RunState
    from sidestep.tui.widgets.charts import LossChart, LrChart

    state = RunState()
    state.apply(StepMetrics(step=1, epoch=1, loss=2.0, lr=1e-4))
    loss, lr = LossChart(), LrChart()
    drawn = []
    for chart in (loss, lr):
        chart.refresh = lambda *a, _c=chart, **k: drawn.append(type(_c).__name__)
        chart.draw(state)
    assert drawn == ["LossChart", "LrChart"]
    state.apply(LogLine(message="an epoch ended"))
    loss.draw(state)
    lr.draw(state)
    assert len(drawn) == 2  # a log line changes no curve
    state.apply(StepMetrics(step=2, epoch=1, loss=1.9, lr=1e-4))
    loss.draw(state)
    lr.draw(state)
    assert len(drawn) == 4
    assert state.log_since(0)[-1] == ("info", "an epoch ended")
    assert state.log_since(state.log_total) == []


async def test_app_exit_stops_an_active_run(tui_env):
    """Any way out of the app (here a bare ``exit``, no dialog) asks the engine to stop (the
    real engine saves on stop: test_engine_process) instead of leaving an engine thread the
    process would wait on forever."""
    app = make_app(engine_factory=ScriptedEngine)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, output_dir="./output/exit")
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: app.runner.active and
                                app.runner.state.step >= 1, 20)
        app.exit()
    assert app.runner.control.stop_requested
    assert app.runner.wait(10)


async def test_the_monitor_before_the_first_step_shows_no_nan(tui_env):
    from sidestep.tui.state import RunState

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.push_screen(MonitorScreen(RunState(run_dir="/runs/new", title="new")))
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 5)
        await pilot.pause(0.5)
        text = str(app.screen.query_one("#step-label").render())
        assert "loss —" in text and "nan" not in text, text


async def test_esc_on_an_edited_form_asks_before_its_edits_are_lost(tui_env):
    """F, Max epochs 77, Esc: the dashboard, and F reopened with 10. A form not edited still
    leaves at once."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot)
        await pilot.press("escape")  # nothing typed: straight back
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        form = await open_form(app, pilot)
        await type_into(pilot, app, "epochs", "77")
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("enter")  # the safe button: keep editing
        assert await wait_until(pilot, lambda: app.screen is form, 5)
        assert form.query_one("#input-epochs", Input).value == "77"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.click("#leave")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        assert app.errors == []


async def test_the_review_shows_long_values_whole_and_the_estimate(tui_env):
    """At 100x32 the output row read "…demo-20261203-160958 (resume from /tmp": the value
    column cut it; and the memory estimate the review promises was never passed to it."""
    from textual.widgets import Static

    from sidestep.tui.screens.review import ReviewScreen

    out = "./output/" + "a-rather-long-run-folder-name-" * 3 + "end"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(app, pilot, output_dir=out)
        await pilot.press("f3")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen), 10)
        await pilot.pause(0.3)
        shown = app.screen.query_one("#review-table", Static)
        lines = [strip.text for strip in shown.render_lines(shown.region.reset_offset)]
        text = "".join(line.strip() for line in lines)
        assert out.replace(" ", "") in text, lines
        assert "VRAM" in str(app.screen.query_one("#review-estimate", Static).render())
        await pilot.press("escape")
        assert app.errors == []
