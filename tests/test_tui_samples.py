"""Validation loss and audio samples on the monitor (issue #17): the run state keeps them, the
loss chart plots the validation loss, and the samples panel shows each sample's spectrogram,
loudness and the scp line that copies it off the box."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import make_app, wait_until
from sidestep.engine.events import (EpochEnded, LogLine, RunFinished, RunStarted, SampleWritten,
                                    StepMetrics, to_json)
from sidestep.tui.state import RunState

RATE = 48000
TONE_HZ = 1000.0
T0 = 1_790_000_000.0


def write_samples(folder: Path, seconds: float = 2.0) -> tuple[Path, Path]:
    """samples/epoch-2.wav (a 1 kHz tone at half scale, stereo) and samples/epoch-4.wav
    (digital silence)."""
    from sidestep.data.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * t).astype(np.float32)
    write_wav(folder / "epoch-2.wav", np.stack([tone, tone]), RATE)
    write_wav(folder / "epoch-4.wav", np.zeros((2, t.size), dtype=np.float32), RATE)
    return folder / "epoch-2.wav", folder / "epoch-4.wav"


def run_events(run: Path, epochs: int = 4, steps_per_epoch: int = 5, val: bool = True,
               sample_every: int = 2, early_stop: bool = True,
               recorded: Path | None = None) -> list:
    """A finished run's events: steps, epoch ends with validation losses (the best at epoch
    3), a sample every ``sample_every`` epochs (the files of ``write_samples``) and an early
    stop. ``recorded``: the run folder the events name (where it was trained, when it has been
    copied here since)."""
    recorded = recorded or run
    config = {"adapter_type": "lora", "epochs": 8, "sample_every_n_epochs": sample_every,
              "val_split": 0.1 if val else 0.0}
    events: list = [RunStarted(run_dir=str(run), config=config, device="cuda:0",
                               precision="bf16", model="acestep-v15-turbo", adapter_type="lora",
                               trainable_params=114688, dataset_size=12,
                               steps_per_epoch=steps_per_epoch,
                               total_steps=8 * steps_per_epoch, total_epochs=8, time=T0)]
    val_losses = {1: 2.20, 2: 2.05, 3: 1.98, 4: 2.02}
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            loss = 2.4 - 0.5 * (1 - math.exp(-step / 8)) + 0.04 * math.sin(step * 1.7)
            events.append(StepMetrics(step=step, epoch=epoch, loss=loss, lr=3e-4,
                                      samples_per_sec=8.5, time=T0 + step))
        events.append(EpochEnded(epoch=epoch, step=step, mean_loss=loss, seconds=1.4,
                                 val_loss=val_losses[epoch] if val else None,
                                 best=val and epoch in (1, 2, 3), time=T0 + step))
        if sample_every and epoch % sample_every == 0:
            sample = SampleWritten(path=str(recorded / "samples" / f"epoch-{epoch}.wav"),
                                   epoch=epoch, step=step, prompt="lofi piano, warm tape",
                                   lyrics="", seed=42, duration=2.0, steps=8, cfg=1.0,
                                   seconds=3.2, time=T0 + step)
            events.append(sample)
            # the engine logs the same line right after the event (trainer._sample)
            events.append(LogLine(f"sample for epoch {epoch}: {sample.path} (3.2 s to render)",
                                  time=T0 + step))
    reason = ("early stop: the validation loss has not improved for 1 epochs (best 1.9800 at "
              "epoch 3)") if early_stop else None
    events.append(RunFinished(status="completed", step=step, epoch=epochs,
                              adapter_path=str(run / "final" / "adapter"), best_loss=1.98,
                              seconds=60, reason=reason, time=T0 + 60))
    return events


def write_run(root: Path, name: str = "lofi-val", **kw) -> Path:
    run = root / name
    write_samples(run / "samples")
    (run / "events.jsonl").write_text("".join(to_json(e) + "\n"
                                              for e in run_events(run, **kw)))
    return run


# -- the run state -----------------------------------------------------------------------------
def test_run_state_rebuilt_from_events_keeps_val_losses_samples_and_the_stop_reason(tmp_path):
    run = write_run(tmp_path)
    state = RunState.from_run_dir(run)
    assert state.val_losses == {1: (5, 2.20), 2: (10, 2.05), 3: (15, 1.98), 4: (20, 2.02)}
    assert state.val_series == ([5, 10, 15, 20], [2.20, 2.05, 1.98, 2.02])
    assert state.best_val_epoch == 3
    assert [s.epoch for s in state.samples] == [2, 4]
    assert state.samples[0].path == str(run / "samples" / "epoch-2.wav")
    assert state.samples[0].seed == 42 and state.sample_every == 2
    text = [line for _, line in state.log]
    ends = {int(line.split()[1]): line for line in text if line.startswith("epoch ")}
    assert "val loss 1.9800 (new best validation loss; saved best/adapter)" in ends[3]
    assert "val loss 2.0200 (1.4 s)" in ends[4]
    # the sample line once, though the engine logged it too
    assert [line for line in text if line.startswith("sample for epoch")] == [
        f"sample for epoch {n}: {run / 'samples' / f'epoch-{n}.wav'} (3.2 s to render)"
        for n in (2, 4)]
    assert text[-1] == ("run completed (early stop: the validation loss has not improved for "
                        "1 epochs (best 1.9800 at epoch 3))")


def test_a_run_without_validation_or_samples_keeps_none():
    state = RunState()
    for event in run_events(Path("/nowhere"), val=False, sample_every=0, early_stop=False):
        state.apply(event)
    assert state.val_losses == {} and state.val_series == ([], [])
    assert state.samples == [] and state.sample_every == 0
    assert not any("val loss" in line for _, line in state.log)
    assert list(state.log)[-1][1] == "run completed"


def test_samples_of_an_old_run_include_files_no_event_names(tmp_path):
    from sidestep.tui.state import samples_of_run

    run = write_run(tmp_path)
    (run / "samples" / "epoch-10.wav").write_bytes((run / "samples" / "epoch-4.wav")
                                                   .read_bytes())
    found = samples_of_run(run)
    assert [(s.epoch, Path(s.path).name, s.seed) for s in found] == [
        (2, "epoch-2.wav", 42), (4, "epoch-4.wav", 42), (10, "epoch-10.wav", -1)]


# -- the loss chart ------------------------------------------------------------------------------
def test_loss_chart_plots_the_validation_loss_at_the_epoch_ends(tmp_path):
    from sidestep.tui.widgets.charts import VAL_MARKER, LossChart

    state = RunState.from_run_dir(write_run(tmp_path))
    chart = LossChart()
    chart.refresh = lambda *a, **k: None
    chart.draw(state)
    chart.replay()
    monitor = chart.plt._active.monitor
    assert f"{VAL_MARKER} val" in monitor.title
    # raw, smoothed, the val line, its markers, the best point
    assert monitor.x[2] == monitor.x[3] == [5, 10, 15, 20]
    assert monitor.y[3] == [2.20, 2.05, 1.98, 2.02]
    # a new epoch's val loss redraws; a log line does not
    drawn = []
    chart.refresh = lambda *a, **k: drawn.append(1)
    state.apply(LogLine("note"))
    chart.draw(state)
    assert drawn == []
    state.apply(EpochEnded(epoch=5, step=25, mean_loss=1.9, seconds=1.0, val_loss=1.95))
    chart.draw(state)
    assert drawn == [1]


def test_loss_chart_without_validation_is_unchanged():
    from sidestep.tui.widgets.charts import LossChart

    state = RunState()
    for event in run_events(Path("/nowhere"), val=False, sample_every=0):
        state.apply(event)
    chart = LossChart()
    chart.refresh = lambda *a, **k: None
    chart.draw(state)
    chart.replay()
    monitor = chart.plt._active.monitor
    assert monitor.title == "loss: raw · smoothed · ● best" and len(monitor.x) == 3


# -- the samples panel on the monitor ------------------------------------------------------------
async def open_monitor(app, pilot, state):
    from sidestep.tui.screens.monitor import MonitorScreen
    from sidestep.tui.widgets.samples import SamplesPanel

    app.goto(MonitorScreen(state, live=False))
    assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen)
                            and app.screen.query(SamplesPanel), 10)
    await pilot.pause(0.2)
    return app.screen


def _picture_rows(widget) -> list[list[tuple[object, object]]]:
    """Each picture cell's (upper colour, lower colour), top row first, axes left out."""
    from sidestep.tui.widgets.spectrogram import AXIS

    rows = []
    height = widget.size.height
    for y in range(height - 1):  # the last line is the time axis
        cells = []
        for seg in widget.render_line(y):
            for ch in seg.text:
                cells.append((ch, seg.style))
        cells = cells[AXIS:]
        rows.append([(st.color if ch == "▀" else st.bgcolor, st.bgcolor) for ch, st in cells])
    return rows


def _level(colour) -> int:
    from sidestep.tui.widgets.spectrogram import RAMP

    return RAMP.index(colour)


async def test_monitor_shows_samples_spectrogram_loudness_and_scp_line(tui_env, monkeypatch):
    from sidestep.data.spectrum import describe_audio
    from sidestep.tui.widgets import samples as samples_mod
    from sidestep.tui.widgets.samples import SampleList, SamplesPanel
    from sidestep.tui.widgets.spectrogram import Spectrogram, band_centres

    monkeypatch.setattr("getpass.getuser", lambda: "trainer")
    monkeypatch.setattr("socket.gethostname", lambda: "gpu-box-7")
    run = write_run(tui_env / "output")
    tone_path, silence_path = run / "samples" / "epoch-2.wav", run / "samples" / "epoch-4.wav"
    state = RunState.from_run_dir(run)
    app = make_app()
    copied = []
    async with app.run_test(size=(100, 32)) as pilot:
        monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
        screen = await open_monitor(app, pilot, state)
        panel = screen.query_one(SamplesPanel)
        assert await wait_until(pilot, lambda: panel.display and panel.entries
                                and all(e.done for e in panel.entries), 60)
        await pilot.pause(0.2)
        assert str(screen.query_one("#epoch-label").render()) == \
            "4/8 epochs done   val loss 2.0200 (best 1.9800 @ 3)"
        # the newest sample (silence) is selected first
        assert panel.selected == 1
        facts = str(panel.query_one("#sample-facts").render())
        assert "epoch 4" in facts and "digital silence" in facts
        spec = panel.query_one(Spectrogram)
        rows = _picture_rows(spec)
        assert rows and all(_level(c) == 0 for row in rows for pair in row for c in pair)
        listing = str(panel.query_one(SampleList).render())
        assert "epoch   4    2.0 s  silent" in listing
        assert panel.scp_text() == f"scp trainer@gpu-box-7:{os.path.abspath(silence_path)} ."

        await pilot.press("left_square_bracket")
        await pilot.pause(0.2)
        assert panel.selected == 0
        tone = describe_audio(tone_path)
        facts = str(panel.query_one("#sample-facts").render())
        assert f"{tone.lufs:.1f} LUFS" in facts and -8 < tone.lufs < -4
        assert f"peak {tone.peak_dbfs:.1f} dBFS" in facts and "2.0 s" in facts
        assert "48 kHz stereo" in facts
        prompt = str(panel.query_one("#sample-prompt").render())
        assert "seed 42" in prompt and 'prompt "lofi piano, warm tape"' in prompt
        scp = f"scp trainer@gpu-box-7:{os.path.abspath(tone_path)} ."
        assert panel.scp_text() == scp
        assert samples_mod.scp_line(tone_path) == scp
        shown = str(panel.query_one("#sample-scp").render())
        assert shown == scp and "\n" not in shown  # one line (the box may cut what it shows)
        # the tone's energy: the brightest cells in the rows that show 1 kHz, dark elsewhere
        rows = _picture_rows(spec)
        cells = len(rows)
        bands = band_centres(len(spec.mel_db), 48000)
        tone_band = min(range(len(bands)), key=lambda b: abs(bands[b] - TONE_HZ))
        half = 2 * cells * tone_band // len(bands)          # half-cell rows from the bottom
        y, upper = cells - 1 - half // 2, half % 2 == 1
        col = len(rows[y]) // 2
        column = [c for row in rows for c in row[col]]   # top to bottom, upper then lower
        tone_level = _level(rows[y][col][0 if upper else 1])
        assert tone_level == max(_level(c) for c in column) >= 20
        # away from the tone's bands the picture is dark: the highest and lowest bands
        assert _level(column[0]) <= 4 and _level(column[-1]) <= 4
        assert sum(_level(c) >= 12 for c in column) <= 4  # a tone, not a smear

        await pilot.press("y")
        assert copied == [scp]
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert panel.selected == 1  # stays on the last


async def test_unreadable_sample_shows_a_line_not_a_traceback(tui_env):
    from sidestep.tui.widgets.samples import SamplesPanel
    from sidestep.tui.widgets.spectrogram import Spectrogram

    run = write_run(tui_env / "output")
    (run / "samples" / "epoch-4.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    state = RunState.from_run_dir(run)
    state.apply(SampleWritten(path=str(run / "samples" / "epoch-6.wav"), epoch=6, step=30,
                              prompt="", lyrics="", seed=1, duration=2.0, time=T0 + 99))
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        panel = (await open_monitor(app, pilot, state)).query_one(SamplesPanel)
        assert await wait_until(pilot, lambda: panel.entries
                                and all(e.done for e in panel.entries), 60)
        await pilot.pause(0.2)
        for index, name in ((2, "epoch-6.wav"), (1, "epoch-4.wav")):
            panel.select(index)
            await pilot.pause(0.1)
            assert f"{name} is unreadable" in str(panel.query_one("#sample-facts").render())
            assert panel.query_one(Spectrogram).note.startswith(f"cannot show {name}: ")
        assert app._exception is None


async def test_monitor_of_a_run_that_will_render_samples_says_so(tui_env):
    """Set to render samples but none yet: the panel is there, saying when one comes."""
    from sidestep.tui.widgets.samples import SamplesPanel
    from sidestep.tui.widgets.spectrogram import Spectrogram

    state = RunState()
    for event in run_events(Path("/nowhere"), epochs=1, sample_every=3, early_stop=False)[:-1]:
        state.apply(event)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_monitor(app, pilot, state)
        panel = app.screen.query_one(SamplesPanel)
        assert panel.display and panel.region.height > 0
        assert panel.query_one(Spectrogram).note == \
            "no audio sample yet: one renders every 3 epochs"
        chart = app.screen.query_one("#loss-chart")
        assert chart.region.height >= 6 and chart.region.width >= 30  # the chart still shows
        # the log box gives up three lines at this size and tails the newest two
        tail = str(app.screen.query_one("#run-log").render())
        newest = [line for _, line in list(state.log)[-2:]]
        assert [row[:30] for row in tail.splitlines()] == [line[:30] for line in newest]
        # a sample arrives: the panel shows it without a key press
        tone, _ = write_samples(tui_env / "run" / "samples")
        state.apply(SampleWritten(path=str(tone), epoch=3, step=15, prompt="", lyrics="",
                                  seed=7, duration=2.0, seconds=1.0, time=T0 + 50))
        assert await wait_until(pilot, lambda: panel.entries and panel.entries[0].done, 60)
        await pilot.pause(0.3)
        assert "LUFS" in str(panel.query_one("#sample-facts").render())
        assert panel.query_one(Spectrogram).note == "" and panel.query_one(Spectrogram).mel_db


async def test_monitor_without_samples_has_no_panel(tui_env):
    from sidestep.tui.widgets.samples import SamplesPanel

    state = RunState()
    for event in run_events(Path("/nowhere"), val=False, sample_every=0):
        state.apply(event)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await open_monitor(app, pilot, state)
        assert not app.screen.query_one(SamplesPanel).display
        assert app.screen.query_one("#lr-chart").display


async def test_history_shows_an_old_runs_samples(tui_env):
    """History: highlighting a run that rendered samples shows them (list, spectrogram,
    [ ] to move); a run without samples hides the panel."""
    from sidestep.tui.screens.history import HistoryScreen
    from sidestep.tui.widgets.samples import SamplesPanel

    run = write_run(tui_env / "output")
    other = tui_env / "output" / "plain-run"
    other.mkdir()
    (other / "events.jsonl").write_text("".join(
        to_json(e) + "\n" for e in run_events(other, sample_every=0, val=False,
                                               early_stop=False)))
    os.utime(other / "events.jsonl", (T0 - 100, T0 - 100))  # listed after the sampled run
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("h")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen)
                                and len(app.screen.runs) == 2, 30)
        screen = app.screen
        table = screen.query_one("#history-table")
        names = [r.path.name for r in screen.runs]
        table.move_cursor(row=names.index("lofi-val"))
        panel = screen.query_one("#history-samples", SamplesPanel)
        assert await wait_until(pilot, lambda: screen.has_class("-samples")
                                and len(panel.entries) == 2
                                and all(e.done for e in panel.entries), 60)
        assert panel.display and panel.listing.resolve() == run.resolve()
        assert panel.current.event.epoch == 4 and panel.current.summary.silent
        await pilot.press("left_square_bracket")
        assert panel.current.event.epoch == 2 and panel.current.summary.lufs is not None
        table.move_cursor(row=names.index("plain-run"))
        await pilot.pause()
        assert not screen.has_class("-samples")
        assert app._exception is None


@pytest.mark.slow
async def test_a_real_run_with_samples_shows_them_on_the_monitor(tui_env, demo_root,
                                                                  small_tensors):
    """The app trains the demo with a sample every epoch: the monitor lists each rendered wav
    with its spectrogram, and the loss chart gets the validation curve."""
    from conftest import train_config
    from sidestep.tui.screens.monitor import MonitorScreen
    from sidestep.tui.widgets.samples import SamplesPanel
    from sidestep.tui.widgets.spectrogram import Spectrogram

    out = tui_env / "output" / "sampled"
    cfg = train_config(demo_root, small_tensors, out, epochs=2, save_every=10,
                       val_split=0.34, ema_decay=0.9, sample_every_n_epochs=1,
                       sample_duration=1.0)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        app.start_run(cfg)
        assert await wait_until(pilot, lambda: app.runner.state is not None
                                and app.runner.state.finished is not None, 300)
        state = app.runner.state
        assert state.finished.status == "completed", state.finished.error
        assert [s.epoch for s in state.samples] == [1, 2]
        assert len(state.val_losses) == 2
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        panel = screen.query_one(SamplesPanel)
        assert await wait_until(pilot, lambda: panel.display and len(panel.entries) == 2
                                and all(e.done for e in panel.entries), 60)
        summary = panel.current.summary
        assert summary is not None and summary.sample_rate == 48000 and summary.channels == 2
        assert summary.duration == pytest.approx(1.0)
        assert panel.query_one(Spectrogram).mel_db  # drawn from the real file
        assert app._exception is None
