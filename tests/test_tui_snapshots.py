"""Every screen at 100x32, compared with the reviewed SVGs in __snapshots__/ (update with
``uv run pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the result)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import make_app
from sidestep.engine.events import (CheckpointSaved, EpochEnded, LogLine, RunFinished,
                                    RunStarted, StepMetrics, to_json)

SIZE = (100, 32)
T0 = 1_790_000_000.0  # a fixed clock for run files


def _write_run(root: Path, name: str, status: str, steps: int, checkpoint: bool) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {"mode": "fixed", "adapter_type": "lora", "model_variant": "turbo",
              "epochs": 10, "rank": 16}
    (run / "run.json").write_text(json.dumps({
        "status": status, "mode": "fixed", "config": config, "started_at": T0,
        "finished_at": T0 + 600}))
    events = [RunStarted(run_dir=str(run), config=config, device="cuda:0", precision="bf16",
                         model="acestep-v15-turbo", adapter_type="lora",
                         trainable_params=114688, dataset_size=12, steps_per_epoch=3,
                         total_steps=30, total_epochs=10, time=T0)]
    for step in range(1, steps + 1):
        loss = 2.4 - 0.5 * (1 - math.exp(-step / 10)) + 0.03 * math.sin(step * 1.7)
        lr = 3e-4 * min(1.0, 0.1 + 0.9 * step / 10)
        events.append(StepMetrics(step=step, epoch=(step - 1) // 3 + 1, loss=loss, lr=lr,
                                  samples_per_sec=8.5, eta_seconds=(30 - step) * 0.5,
                                  epoch_progress=((step - 1) % 3 + 1) / 3, time=T0 + step))
        if step % 3 == 0:
            events.append(EpochEnded(epoch=step // 3, step=step, mean_loss=loss, seconds=1.4,
                                     time=T0 + step))
    events.append(LogLine("a warning from a library", level="warning", time=T0 + steps))
    if checkpoint:
        ck = run / f"checkpoint-step-{steps}"
        (ck / "adapter").mkdir(parents=True)
        (ck / "training_state.pt").write_bytes(b"x")
        (ck / "COMPLETE").write_text(f"{steps}\n")
        events.append(CheckpointSaved(path=str(ck), step=steps, epoch=steps // 3, kind="step",
                                      time=T0 + steps))
    if status == "completed":
        (run / "final" / "adapter").mkdir(parents=True)
    events.append(RunFinished(status=status, step=steps, epoch=steps // 3,
                              adapter_path=str(run / "final" / "adapter")
                              if status == "completed" else None,
                              best_loss=1.9, seconds=600, time=T0 + 600))
    (run / "events.jsonl").write_text("".join(to_json(e) + "\n" for e in events))
    return run


@pytest.fixture
def snap_env(tui_env, monkeypatch):
    import os

    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(tui_env / "config"))
    (tui_env / "config").mkdir()
    (tui_env / "config" / "settings.json").write_text(json.dumps(
        {"checkpoint_dir": "./checkpoints", "output_root": "./output", "refresh_hz": 10.0}))
    _write_run(tui_env / "output", "lofi-lora", "completed", 30, False)
    _write_run(tui_env / "output", "jazz-test", "stopped", 7, True)
    os.utime(tui_env, None)
    from sidestep.config.device import DeviceInfo  # the review names what auto picks here

    monkeypatch.setattr("sidestep.config.device.probe", lambda: DeviceInfo())
    return tui_env


async def _settle(pilot):
    from textual.widgets import Input

    for _ in range(3):
        await pilot.pause(0.3)
        await pilot.app.workers.wait_for_complete()
    for box in pilot.app.screen.query(Input):  # a blinking cursor is a coin toss per frame
        box.cursor_blink = False
    await pilot.pause(0.3)


def _form_values():
    return {"checkpoint_dir": "./checkpoints", "dataset_dir": "./tensors",
            "output_dir": "./output/new-run", "num_workers": 0}


def test_dashboard(snap_env, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=_settle)


def test_form_basic(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.action_new_training("fixed", _form_values())
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_form_advanced_lokr_with_error(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.action_new_training("vanilla", {**_form_values(), "adapter_type": "lokr"})
        await _settle(pilot)
        await pilot.press("f2")
        box = pilot.app.screen.query_one("#input-epochs")
        box.focus()
        box.value = "0"
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_review(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.action_new_training("fixed", _form_values(), preset="quick_test")
        await _settle(pilot)
        await pilot.press("f3")
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_monitor_of_a_finished_run(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.open_history_run(Path("output/lofi-lora"))
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_full_log_of_a_run(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.open_history_run(Path("output/lofi-lora"))
        await _settle(pilot)
        await pilot.press("g")
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_history(snap_env, snap_compare):
    assert snap_compare(make_app(), press=["h"], terminal_size=SIZE, run_before=_settle)


def test_presets(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.action_presets()
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_settings(snap_env, snap_compare):
    assert snap_compare(make_app(), press=["s"], terminal_size=SIZE, run_before=_settle)


def test_help(snap_env, snap_compare):
    assert snap_compare(make_app(), press=["question_mark"], terminal_size=SIZE,
                        run_before=_settle)


def test_quit_confirmation_and_error_dialogs(snap_env, snap_compare):
    async def run(pilot):
        pilot.app.show_error("Training failed", "out of memory 3 times in a row",
                             "The run folder's sidestep.log has the details.")
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_demo_setup(snap_env, snap_compare):
    async def run(pilot):
        from sidestep.tui.screens.demo_setup import DemoSetupScreen

        screen = DemoSetupScreen()
        pilot.app.goto(screen)
        await _settle(pilot)
        for line in ("[  0.0s] writing tiny checkpoints", "[ 17.9s] synthesising audio"):
            screen.add_line(line)
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def _dataset_folder(root: Path, demo_root: Path) -> Path:
    import shutil

    audio = root / "audio"
    audio.mkdir()
    for name in ("clip_00", "clip_03", "clip_07"):
        for f in (demo_root / "audio").glob(f"{name}.*"):
            shutil.copy(f, audio / f.name)
    (audio / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    return audio


def test_dataset_browser(snap_env, demo_root, snap_compare):
    _dataset_folder(snap_env, demo_root)

    async def run(pilot):
        pilot.app.action_dataset("audio")
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_preprocess_progress(snap_env, demo_root, snap_compare):
    """Mid pass 1, fed the engine's events by hand (a real run's timing is not stable)."""
    from sidestep.config.resolve import resolve
    from sidestep.data.preprocess import PreprocessEvent
    from sidestep.tui.messages import PreprocessNote, PreprocessProgress
    from sidestep.tui.screens.preprocess import PreprocessScreen

    _dataset_folder(snap_env, demo_root)
    config = resolve("preprocess", {"checkpoint_dir": "./checkpoints", "audio_dir": "audio",
                                    "tensor_output": "audio_tensors"}).config

    async def run(pilot):
        screen = PreprocessScreen(config, start=False)
        pilot.app.push_screen(screen)
        await pilot.pause(0.3)
        for message in (
                PreprocessNote("skipped: audio/broken.wav: cannot read audio header"),
                PreprocessProgress(PreprocessEvent(
                    "plan", 1, 3, message="3 songs on cpu (fp32) into audio_tensors: 1 "
                                          "already done, 2 to encode")),
                PreprocessProgress(PreprocessEvent("load", 0, 2,
                                                   message="loading VAE and text encoder")),
                PreprocessProgress(PreprocessEvent("encode", 1, 2, "clip_07.wav", eta_s=14))):
            screen.post_message(message)
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_estimate_screen(snap_env, snap_compare):
    """A finished ranking fed by hand (a real estimate's timing is not stable), top K 6."""
    import random

    from sidestep.engine.estimate import EstimateResult, projection_names
    from sidestep.tui.messages import EstimateFinished
    from sidestep.tui.screens.estimate import EstimateScreen

    order = projection_names(4)
    random.Random(5).shuffle(order)  # a fixed order with both kinds in the top 6
    ranking = [(n, round(1.0 / (1 + 0.18 * i), 4)) for i, n in enumerate(order)]
    result = EstimateResult(granularity="module", top_k=6, model="acestep-v15-turbo",
                            dataset="tensors", batches=8, seed=42, ranking=ranking,
                            seconds=12.3)

    async def run(pilot):
        screen = EstimateScreen(ask=False)
        pilot.app.goto(screen)
        await pilot.pause(0.3)
        screen.post_message(EstimateFinished(result, None))
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def test_monitor_with_val_loss_and_samples(snap_env, snap_compare, monkeypatch):
    """A run stopped early on its validation loss, with two audio samples (a tone, selected,
    and silence), copied here from the GPU box that trained it (/workspace/...)."""
    from test_tui_samples import write_run

    from sidestep.tui.widgets import samples

    write_run(snap_env / "output", "lofi-val", recorded=Path("/workspace/output/lofi-val"))
    # user, host and this machine's absolute path vary: the scp line is test_tui_samples'
    monkeypatch.setattr(samples, "scp_line", lambda path: "scp trainer@gpu-box:/workspace/"
                        f"output/lofi-val/samples/{Path(path).name} .")

    async def run(pilot):
        pilot.app.open_history_run(Path("output/lofi-val"))
        await _settle(pilot)
        await pilot.press("left_square_bracket")
        await _settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)


def _monitor_of_a_run(app) -> None:
    """As after a start: all five buttons, the longest row."""
    from sidestep.tui.screens.monitor import MonitorScreen
    from sidestep.tui.state import RunState

    app.goto(MonitorScreen(RunState.from_run_dir(Path("output/lofi-lora")), target=app.runner))


OPEN = {"dashboard": lambda app: None,
        "form": lambda app: app.action_new_training("fixed", _form_values()),
        "monitor": lambda app: app.open_history_run(Path("output/lofi-lora")),
        "monitor-of-a-run": _monitor_of_a_run,
        "history": lambda app: app.action_history(),
        "presets": lambda app: app.action_presets(),
        "settings": lambda app: app.action_settings(),
        "dataset": lambda app: app.action_dataset(str(Path("tensors").resolve()))}


async def _open(pilot, screen: str) -> None:
    OPEN[screen](pilot.app)
    await _settle(pilot)


@pytest.mark.parametrize("screen", list(OPEN))
async def test_every_button_shows_on_an_80x24_terminal(snap_env, screen):
    """A default SSH terminal is 80x24: each main screen's buttons are whole and clickable there
    (the monitor's row, the dashboard's last ones and the form's Load/Save were cut off)."""
    from textual.widgets import Button

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot, screen)
        buttons = [b for b in app.screen.query(Button) if b.display]
        assert len(buttons) >= 2, screen
        for button in buttons:
            region = button.region
            label = str(button.label)
            assert region.height > 0 and region.right <= 80 and region.bottom <= 24, \
                (screen, label, region)
            assert region.width >= len(label.replace("…", "")), (screen, label, region)
            under, _ = app.screen.get_widget_at(*region.center)
            assert under is button, (screen, label, region, under)
        if screen == "dashboard":  # the footer's last keys, ? Help and Q Quit, were cut off
            from textual.widgets._footer import FooterKey

            keys = [k for k in app.screen.query(FooterKey) if k.display]
            assert {"question_mark", "q"} <= {k.key for k in keys}, [k.key for k in keys]
            assert all(k.region.right <= 80 and k.region.width > 0 for k in keys), \
                [(k.key, k.region) for k in keys]
