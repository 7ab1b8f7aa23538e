"""The dataset browser and preprocessing in the app (issue #14), driven with Pilot: `p` opens
the browser on the demo audio, build and preprocess complete and offer training, cancel leaves
no partial file, a corrupt file is a row with a problem, not a crash."""

from __future__ import annotations

import os
import shutil

import pytest
from textual.widgets import Button, DataTable, Input

from conftest import burst, form_built, make_app, wait_until
from sidestep.demo import DEMO_MARKER
from sidestep.tui.screens.dataset import DatasetScreen
from sidestep.tui.screens.preprocess import PreprocessScreen
from sidestep.tui.screens.settings_dialog import SettingsDialog
from sidestep.tui.screens.train_form import TrainingFormScreen

SIZE = (100, 32)


@pytest.fixture
def demo_copy(tmp_path, demo_root):
    """A demo folder of our own: the shared checkpoints, three of the songs (copied: the
    browser writes dataset.json next to them), and a corrupt file."""
    demo = tmp_path / "demo"
    (demo / "audio").mkdir(parents=True)
    os.symlink(demo_root / "checkpoints", demo / "checkpoints")
    os.symlink(demo_root / "tensors", demo / "tensors")
    shutil.copy(demo_root / DEMO_MARKER, demo / DEMO_MARKER)
    for name in ("clip_00", "clip_01", "clip_03"):
        for f in (demo_root / "audio").glob(f"{name}.*"):
            shutil.copy(f, demo / "audio" / f.name)
    (demo / "audio" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    return demo


async def open_browser(app, pilot):
    if isinstance(app.screen, TrainingFormScreen):  # --demo opens the form first
        await pilot.press("escape")
    await pilot.press("p")
    assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen), 10)
    browser = app.screen
    assert await wait_until(pilot, lambda: browser.report is not None, 60)
    return browser


async def run_dialog(app, pilot):
    assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
    await pilot.pause(0.2)
    await pilot.press("ctrl+s")


async def test_browse_build_preprocess_and_train(tui_env, demo_copy):
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        browser = await open_browser(app, pilot)
        assert browser.folder == demo_copy / "audio"
        table = browser.query_one("#dataset-table", DataTable)
        assert table.row_count == 4
        headers = [str(c.label) for c in table.columns.values()]
        assert headers[:3] == ["file", "length", "rate"]
        broken = str(demo_copy / "audio" / "broken.wav")
        assert table.get_row(broken)[-1].startswith("✗ unreadable")
        assert [p.kind for p in browser.report.problems if p.file == broken] == ["unreadable"]

        await pilot.press("b")  # build dataset.json
        await run_dialog(app, pilot)
        assert await wait_until(pilot, lambda: (demo_copy / "audio" / "dataset.json").is_file(),
                                30)
        assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen)
                                and app.screen.report is not None, 60)

        await pilot.press("p")  # preprocess
        await run_dialog(app, pilot)
        assert await wait_until(pilot, lambda: isinstance(app.screen, PreprocessScreen), 10)
        progress = app.screen
        assert await wait_until(pilot, lambda: progress.finished, 240)
        result = progress.result
        assert len(result.written) == 3, result.failed
        assert not result.failed  # dataset.json skipped the corrupt file when it was built
        out = demo_copy / "audio_tensors"
        assert sorted(p.name for p in out.glob("*.pt")) == ["clip_00.pt", "clip_01.pt",
                                                            "clip_03.pt"]
        assert not progress.query_one("#pp-train", Button).disabled

        await pilot.press("t")  # "Train on these"
        assert await wait_until(pilot, lambda: form_built(app), 10)
        form = app.screen
        await app.workers.wait_for_complete()
        assert form.current_values()["dataset_dir"] == str(out)
        # the .pt folder: frames under their own header, not under "rate"
        app.action_dataset(str(out))
        assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen)
                                and app.screen.folder == out and app.screen.report is not None,
                                60)
        table = app.screen.query_one("#dataset-table", DataTable)
        assert [str(c.label) for c in table.columns.values()][2] == "frames"
        assert table.get_row(str(out / "clip_00.pt"))[2].endswith(" fr")
        assert app.errors == []


async def test_cancel_leaves_no_partial_file(tui_env, demo_copy):
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        browser = await open_browser(app, pilot)
        await pilot.press("p")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        mine = demo_copy / "mine_tensors"
        app.screen.query_one("#input-tensor_output", Input).value = str(mine)
        await run_dialog(app, pilot)
        assert await wait_until(pilot, lambda: isinstance(app.screen, PreprocessScreen), 10)
        progress = app.screen
        # cancel as soon as the first song is under way
        assert await wait_until(pilot, lambda: progress.last_event is not None
                                and progress.last_event.phase == "encode", 120)
        await pilot.press("c")
        assert await wait_until(pilot, lambda: progress.finished, 240)
        assert progress.result.cancelled
        out = mine
        assert list(out.glob("*.pt")) == []
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        assert progress.query_one("#pp-train", Button).disabled
        # preprocessing the folder again starts from what was typed for it
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is browser, 10)
        await pilot.press("p")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        assert app.screen.query_one("#input-tensor_output", Input).value == str(mine)
        assert app.errors == []


async def test_a_folder_that_is_a_file_is_an_error_row_not_a_crash(tui_env):
    (tui_env / "notes.txt").write_text("not a folder")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_dataset("notes.txt")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen)
                                and app.screen.report is not None, 20)
        assert [p.kind for p in app.screen.report.problems] == ["not_a_folder"]
        assert "nothing to train on" in app.screen.summary()
        assert app.screen.query_one("#dataset-preprocess", Button).disabled
        assert app.errors == []


@pytest.mark.slow
async def test_a_folder_of_500_songs_is_browsable_while_it_is_read(tui_env, monkeypatch):
    """All rows show from the directory walk; the keys work while the worker decodes. The
    decode waits for the key presses to be checked (a timed delay lost the race on a busy
    machine), then runs for real."""
    import threading

    import numpy as np
    import soundfile as sf

    from sidestep.data import check

    real = check.audio_facts
    keys_checked = threading.Event()

    def slow(*args, **kwargs):
        keys_checked.wait(120)  # the scan is still under way while the keys are pressed
        return real(*args, **kwargs)

    monkeypatch.setattr(check, "audio_facts", slow)

    folder = tui_env / "many"
    folder.mkdir()
    t = np.arange(16_000) / 16_000  # 1 s songs: the decode, not the length, is under test
    for i in range(500):
        sf.write(folder / f"song_{i:03d}.wav", (0.2 * np.sin(2 * np.pi * (100 + i) * t))
                 .astype(np.float32), 16_000, subtype="PCM_16")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_dataset(str(folder))
        assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen)
                                and app.screen.is_mounted, 10)
        browser = app.screen
        table = browser.query_one("#dataset-table", DataTable)
        assert await wait_until(pilot, lambda: table.row_count == 500, 10)
        assert browser.report is None  # still decoding, yet every row is there
        await pilot.press("down", "down", "down")
        assert table.cursor_row == 3 and browser.report is None
        keys_checked.set()
        assert await wait_until(pilot, lambda: browser.report is not None, 300)
        assert len(browser.report.audio) == 500 and browser.report.usable
        assert app.errors == []


async def test_path_completion_offers_folders_only(tmp_path):
    from sidestep.tui.screens.dataset import PathSuggester

    (tmp_path / "songs_2024").mkdir()
    (tmp_path / "songs.txt").write_text("a file, not offered")
    (tmp_path / ".hidden").mkdir()
    s = PathSuggester()
    assert await s.get_suggestion(f"{tmp_path}/so") == f"{tmp_path}/songs_2024/"
    assert await s.get_suggestion(f"{tmp_path}/songs_2024") == f"{tmp_path}/songs_2024/"
    assert await s.get_suggestion(f"{tmp_path}/x") is None
    assert await s.get_suggestion(f"{tmp_path}/") == f"{tmp_path}/songs_2024/"
    assert await s.get_suggestion(f"{tmp_path}/.h") == f"{tmp_path}/.hidden/"


async def test_without_a_folder_the_browser_asks_for_one(tui_env):
    """No demo and no dataset root in the settings: P scanned the folder the app was started
    in and said it held no audio. It asks, with the cursor in the folder field."""
    from textual.widgets import Static

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("p")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DatasetScreen), 10)
        browser = app.screen
        await pilot.pause(0.3)
        summary = str(browser.query_one("#dataset-summary", Static).render())
        assert summary.startswith("Type the folder of your songs"), summary
        assert app.focused.id == "dataset-path" and browser.report is None
        await pilot.press("B")  # typed into the field: a folder's name, not "build"
        assert browser.query_one("#dataset-path").value == "B"
        assert app.errors == []


async def test_the_buttons_act_on_the_folder_the_field_names(tui_env, demo_copy, tmp_path):
    """A new folder typed in Folder, then Tab and B: the Build dialog offered to write
    dataset.json into the old folder the table still showed. Leaving the field scans the new
    one, and B/P/T typed before that scan only start it."""
    other = tmp_path / "other songs"
    other.mkdir()
    for f in (demo_copy / "audio").glob("clip_00.*"):
        shutil.copy(f, other / f.name)
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        browser = await open_browser(app, pilot)
        field = browser.query_one("#dataset-path", Input)
        field.focus()
        await pilot.pause(0.1)
        field.value = str(other)
        browser.action_build()  # B before the field was left: scans, offers nothing
        await pilot.pause(0.2)
        assert not isinstance(app.screen, SettingsDialog)
        assert browser.folder == other
        assert await wait_until(pilot, lambda: browser.report is not None, 60)
        browser.query_one("#dataset-table", DataTable).focus()
        await pilot.pause(0.1)
        await pilot.press("b")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        assert str(other / "dataset.json") in app.screen.note
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is browser, 10)
        # Tab out of a changed field scans it
        field.focus()
        await pilot.pause(0.1)
        field.value = str(demo_copy / "audio")
        await pilot.press("tab")
        assert await wait_until(pilot, lambda: browser.folder == demo_copy / "audio"
                                and browser.report is not None, 60)
        assert not (other / "dataset.json").exists()
        assert app.errors == []


async def test_the_preprocess_dialog_refuses_a_bad_tensor_output_on_its_field(tui_env,
                                                                            demo_copy):
    """Tensor output = the songs folder: the dialog closed into a screen that said it could
    not start (in flags: --tensor-output), its bar pulsing on. The error is on the field, in
    the app's words, the dialog stays, and a field's error follows what is typed."""
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        await open_browser(app, pilot)
        songs = sorted((demo_copy / "audio").iterdir())
        await pilot.press("p")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        dialog = app.screen
        dialog.query_one("#input-tensor_output", Input).value = str(demo_copy / "audio")
        await run_dialog(app, pilot)
        error = dialog.query_one("#field-tensor_output .field-error")
        assert await wait_until(pilot, lambda: "'Tensor output'" in str(error.render()), 10)
        assert app.screen is dialog and "--tensor-output" not in str(error.render())
        # typed over, the error goes with the typo
        box = dialog.query_one("#input-max_duration", Input)
        box.value = "xyz"
        await pilot.press("ctrl+s")
        limit = dialog.query_one("#field-max_duration .field-error")
        assert await wait_until(pilot, lambda: "xyz" in str(limit.render()), 5)
        box.value = "120"
        assert await wait_until(pilot, lambda: str(limit.render()).strip() == "", 5)
        assert sorted((demo_copy / "audio").iterdir()) == songs
        assert app.errors == []


async def test_build_dataset_json_can_be_written_elsewhere(tui_env, demo_copy, tmp_path):
    """A songs folder that cannot be written gave an error naming 'Output file', which the
    dialog did not have. It has it now, checked before the dialog closes."""
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        await open_browser(app, pilot)
        await pilot.press("b")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        dialog = app.screen
        box = dialog.query_one("#input-output", Input)
        box.value = str(tmp_path / "missing" / "songs.json")
        await run_dialog(app, pilot)
        error = dialog.query_one("#field-output .field-error")
        assert await wait_until(pilot, lambda: "does not exist" in str(error.render()), 10)
        assert app.screen is dialog and not (tmp_path / "missing").exists()
        box.value = str(tmp_path / "songs.json")
        await run_dialog(app, pilot)
        assert await wait_until(pilot, lambda: (tmp_path / "songs.json").is_file(), 30)
        assert not (demo_copy / "audio" / "dataset.json").exists()
        assert app.errors == []


def test_the_build_message_counts_in_words(tmp_path):
    """"wrote ...: 1 songs (1 notes)"."""
    from sidestep.tui.messages import DatasetBuilt

    said = []

    class Screen:
        def notify(self, text, **_):
            said.append(text)

        def action_scan(self):
            pass

    path = tmp_path / "dataset.json"
    DatasetScreen.on_dataset_built(Screen(), DatasetBuilt(path, 1, ["a.wav: no sidecar"], None))
    DatasetScreen.on_dataset_built(Screen(), DatasetBuilt(path, 2, ["x", "y"], None))
    assert said[0] == f"wrote {path}: 1 song (1 note)"
    assert said[2] == f"wrote {path}: 2 songs (2 notes)"


async def test_from_the_dataset_root_the_cursor_starts_in_the_folder_field(tui_env, demo_copy):
    """Settings → Dataset root set: P opened the browser on the root with the table focused,
    so a subfolder's name typed next ran B/P/T ("pop" opened Preprocess). The cursor starts at
    the end of the Folder field; a folder given by name (the demo's) still starts on the
    table, where B/P/T act on it."""
    import json
    from pathlib import Path

    settings = Path(os.environ["SIDESTEP_CONFIG_DIR"]) / "settings.json"
    data = json.loads(settings.read_text())
    data["dataset_root"] = str(demo_copy)
    settings.write_text(json.dumps(data))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        browser = await open_browser(app, pilot)
        assert app.focused.id == "dataset-path"
        await burst(pilot, app, [("slash", "/"), *"audio"])
        assert app.screen is browser  # no Preprocess / Train dialog
        assert browser.query_one("#dataset-path", Input).value == f"{demo_copy}/audio"
        await burst(pilot, app, ["enter"])
        assert await wait_until(pilot, lambda: browser.folder == demo_copy / "audio"
                                and browser.report is not None, 60)
        assert app.errors == []


async def test_preprocess_dialog_takes_a_dataset_json_checked_as_typed(tui_env, demo_copy):
    """The dialog had no Dataset JSON field: a dataset.json elsewhere could not be used."""
    from sidestep.tui.widgets.fields import SettingField

    labelled = demo_copy / "labelled.json"
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        await open_browser(app, pilot)
        await pilot.press("p")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        dialog = app.screen
        field = next(f for f in dialog.query(SettingField) if f.setting.name == "dataset_json")
        box = dialog.query_one("#input-dataset_json", Input)
        assert box.value == ""  # optional: the folder has no dataset.json yet
        box.value = str(labelled)
        assert await wait_until(pilot, lambda: field.has_class("has-error"), 10)
        from sidestep.data.dataset_json import build_dataset

        build_dataset(demo_copy / "audio", output=labelled)
        box.value = str(labelled) + " "  # typed again, now that it exists
        box.value = str(labelled)
        assert await wait_until(pilot, lambda: not field.has_class("has-error"), 10)
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, PreprocessScreen), 10)
        assert str(app.screen.config.dataset_json) == str(labelled)
        app.screen.action_cancel()
        assert await wait_until(pilot, lambda: app.screen.finished, 240)


async def test_keep_it_returns_to_the_build_dialog_with_what_was_typed(tui_env, demo_copy):
    """Keep it (dataset.json exists) closed everything: what was typed was lost."""
    from sidestep.tui.screens.dialogs import ConfirmScreen

    existing = demo_copy / "audio" / "dataset.json"
    existing.write_text("{\"mine\": true}")
    app = make_app(demo=True, demo_dir=demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: form_built(app), 30)
        browser = await open_browser(app, pilot)
        await pilot.press("b")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        app.screen.query_one("#input-tag", Input).value = "my-tag"
        await run_dialog(app, pilot)
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                                and app.screen.query("#cancel"), 10)
        app.screen.query_one("#cancel").press()
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsDialog), 10)
        assert app.screen.query_one("#input-tag", Input).value == "my-tag"
        assert existing.read_text() == "{\"mine\": true}"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is browser, 10)
        assert existing.read_text() == "{\"mine\": true}" and app.errors == []
