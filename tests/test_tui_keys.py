"""Keys: letters typed into any field stay there (no app shortcut, no focus jump); the app's
letter keys work in both cases when no field has focus; Esc from a history run's curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from textual.widgets import Checkbox, Input, OptionList, Select

from conftest import burst, form_built, make_app, wait_until
from sidestep.tui.screens.dashboard import DashboardScreen
from sidestep.tui.screens.dialogs import ConfirmScreen
from sidestep.tui.screens.help import HelpScreen
from sidestep.tui.screens.history import HistoryScreen
from sidestep.tui.screens.monitor import MonitorScreen
from sidestep.tui.screens.settings import SettingsScreen
from test_tui import SIZE, open_form
from test_tui_snapshots import _write_run

LETTERS = ["f", "v", "d", "h", "s", "q", "F", "V", "D", "H", "S", "Q", "question_mark"]
TYPED = "fvdhsqFVDHSQ?"


async def _type_letters(app, pilot, widget):
    """Type every shortcut letter into ``widget``: the screen and the focus must not change."""
    screen = app.screen
    widget.focus()
    await pilot.pause(0.1)
    assert app.focused is widget
    for key in LETTERS:
        await pilot.press(key)  # (press waits until the app has handled the key)
        assert app.screen is screen, f"{key!r} typed into {widget} changed the screen"
        assert app.focused is widget, f"{key!r} typed into {widget} moved focus " \
                                      f"to {app.focused}"
    await pilot.pause(0.1)  # anything a key set off later (a pushed screen) shows by now
    assert app.screen is screen and app.focused is widget
    assert app.is_running


async def test_letters_typed_into_fields_stay_there(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)

        # a text input
        box = form.query_one("#input-dataset_dir", Input)
        box.value = ""
        await _type_letters(app, pilot, box)
        assert box.value == TYPED

        # the model field: letters stay in its box while its list of models shows; Up and
        # Down move through the list (which never takes focus), Enter picks
        model = form.query_one("#input-model_variant", Input)
        model.focus()
        await pilot.pause(0.2)
        options = form.query_one("#model-options", OptionList)
        assert options.display and options.option_count > 0
        model.value = ""
        await pilot.pause(0.1)
        await _type_letters(app, pilot, model)
        assert model.value == TYPED
        model.value = ""
        await pilot.pause(0.2)
        assert options.display and options.option_count == 2
        await pilot.press("down", "down")
        assert app.focused is model and options.highlighted == 1
        await pilot.press("up")
        picked = options.get_option_at_index(options.highlighted).id
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.focused is model and model.value == picked
        assert form.model.value("model_variant") == picked

        # a select, closed and open (type-to-search in its list)
        select = form.query_one("#input-adapter_type", Select)
        before = select.value
        await _type_letters(app, pilot, select)
        assert select.value == before
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert select.expanded
        overlay = app.focused
        for key in LETTERS:
            await pilot.press(key)
            await pilot.pause(0.05)
            assert app.screen is form and app.focused is overlay
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.screen is form and not select.expanded

        # check boxes: the form's own switch and a boolean setting
        switch = form.query_one("#advanced-switch", Checkbox)
        await _type_letters(app, pilot, switch)
        assert switch.value is False
        form.action_toggle_advanced()
        await pilot.pause(0.3)
        flag = form.query_one("#input-pin_memory", Checkbox)
        before = flag.value
        await _type_letters(app, pilot, flag)
        assert flag.value == before
        assert app.runner.state is None and app.errors == []


async def test_fixing_a_field_shown_for_its_error_keeps_focus(tui_env):
    """An advanced field shows in Basic mode while it has an error; fixing it must not hide
    it under the cursor (focus would jump and the next key land in another field)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, device="gpu0")
        field = form.query_one("#field-device")
        assert not form.advanced and field.display and field.has_class("has-error")
        box = form.query_one("#input-device", Input)
        box.focus()
        box.action_end()
        await pilot.pause(0.1)
        for _ in range(len(box.value)):
            await pilot.press("backspace")
        await pilot.press("c", "p", "u")
        await pilot.pause(0.3)
        assert not field.has_class("has-error")
        assert app.focused is box and field.display
        await pilot.press("x")
        await pilot.pause(0.2)
        assert app.focused is box and box.value == "cpux"
        # once focus leaves, Basic mode hides it again (when it is valid)
        await type_back(pilot, box, "cpu")
        form.query_one("#input-epochs", Input).focus()
        await pilot.pause(0.2)
        form.refresh_form()
        await pilot.pause(0.2)
        assert not field.display


async def type_back(pilot, box, text):
    box.action_end()
    for _ in range(len(box.value)):
        await pilot.press("backspace")
    await pilot.press(*list(text))
    await pilot.pause(0.2)


async def test_letter_keys_work_in_both_cases_when_no_field_has_focus(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        for key, screen in (("S", SettingsScreen), ("D", DashboardScreen),
                            ("H", HistoryScreen), ("d", DashboardScreen),
                            ("question_mark", HelpScreen), ("D", DashboardScreen)):
            app.set_focus(None)
            await pilot.press(key)
            assert await wait_until(pilot, lambda: isinstance(app.screen, screen), 5), key
        for key, mode in (("F", "fixed"), ("V", "vanilla")):
            app.set_focus(None)
            await pilot.press(key)
            assert await wait_until(pilot, lambda: form_built(app),
                                    5), key
            assert app.screen.mode == mode
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        # the footer writes the letter keys in capitals, like the help and the spec
        app.set_focus(None)
        await pilot.pause(0.3)
        footer_keys = {b.key_display for b in app._bindings.key_to_bindings.get("F", [])}
        assert footer_keys == {"F"}
        await pilot.press("Q")
        assert await wait_until(pilot, lambda: not app.is_running, 5)


async def open_history_of_one(app, pilot, key):
    """History by ``key``, once it lists the one run written for the test."""
    await pilot.press(key)
    assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), 5)
    history = app.screen
    assert await wait_until(pilot, lambda: len(history.runs) == 1, 10)
    return history


async def test_escape_from_a_history_run_returns_to_history(tui_env):
    _write_run(tui_env / "output", "old-run", "completed", 9, False)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        history = await open_history_of_one(app, pilot, "h")
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        assert not app.screen.live
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is history, 5)
        # from the dashboard's recent runs, Esc still leads to the dashboard
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        app.open_history_run(Path("output/old-run"))
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
        assert len(app.screen_stack) == 2


async def test_keys_typed_faster_than_the_form_redraws_are_kept(tui_env):
    """A keystroke whose Changed message is still queued when the form redraws (another
    field's edit, a path check) stays in its field, and the form's value follows it: the
    redraw put the old value back (typing '8' into Batch size showed '1' while 'a value is
    required'), and the next keys edited text the form no longer knew."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot)
        form = app.screen
        batch, lr = form.query_one("#input-batch_size", Input), form.query_one(
            "#input-learning_rate", Input)
        assert batch.value == "1"
        batch.focus()
        batch.value = "8"  # a keystroke: its Changed message is queued, not yet handled
        lr.value = "0.002"  # and one in a field not yet edited, typed as fast
        form.refresh_form()  # a redraw runs first (an earlier edit's, a path check's)
        assert batch.value == "8" and lr.value == "0.002"
        # the queued Changed messages are handled (seconds on a loaded machine)
        assert await wait_until(pilot, lambda: form.model.value("batch_size") == 8
                                and form.model.value("learning_rate") == 0.002, 10)
        await app.workers.wait_for_complete()
        assert batch.value == "8" and form.model.value("batch_size") == 8
        assert lr.value == "0.002" and form.model.value("learning_rate") == 0.002
        assert not form.blocking_problems()
        # a redraw with nothing pending still shows what the form decides (a preset's value)
        form.model.set_preset("quick_test", {"seed": 7})
        form.refresh_form()
        assert form.query_one("#input-seed", Input).value == "7"


async def test_keys_arriving_faster_than_the_app_handles_them_land_in_order(tui_env):
    """Keys that reach the app in one burst (a slow SSH link, a busy redraw) act as typed: a
    backspace before a Tab deletes in the field being left, letters after it go to the next
    field. Before, a backspace's binding ran once the key had bubbled back up, against the
    focus of that moment, and Tab moved focus only then, after the next letters had gone to
    the old field."""

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        data, lr = form.query_one("#input-dataset_dir", Input), form.query_one(
            "#input-learning_rate", Input)
        data.focus()
        data.value = "/tmp/abc"
        data.cursor_position = len(data.value)
        await pilot.pause(0.3)
        before = lr.value
        # no wait between them: all queued before any is handled
        await burst(pilot, app, ["backspace", "tab", "9", "backspace", "8", "shift+tab", "x"])
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert data.value == "/tmp/abx" and lr.value == before + "8"
        assert app.focused is data
        assert form.model.value("learning_rate") == float(before + "8")


async def test_settings_errors_use_labels_and_a_missing_folder_is_named(tui_env):
    """The Settings screen names a bad value by its label (not 'refresh_hz'); a checkpoint
    folder that does not exist is saved (it may be mounted later) with a warning naming it."""
    from textual.widgets import Static

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_settings()
        assert await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen), 5)
        screen = app.screen
        await pilot.pause(0.2)
        screen.query_one("#set-refresh_hz", Input).value = "fast"
        screen.action_save()
        await pilot.pause(0.1)
        error = str(screen.query_one("#settings-error", Static).render())
        assert error == "✗ Monitor refresh rate must be a number", error
        screen.query_one("#set-refresh_hz", Input).value = "2"
        screen.query_one("#set-checkpoint_dir", Input).value = "./no-such-models"
        screen.action_save()
        await pilot.pause(0.2)
        assert str(screen.query_one("#settings-error", Static).render()) == ""
        assert app.settings.checkpoint_dir == "./no-such-models"
        notes = [n.message for n in app._notifications if n.severity == "warning"]
        assert any("Default checkpoint folder: ./no-such-models does not exist" in m
                   for m in notes), notes
        # an output root that no run could write in is refused on Save (test_tui_presets_settings)
        # saved: Esc leaves at once; an unsaved change is asked about first
        screen.query_one("#set-refresh_hz", Input).value = "5"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("enter")  # the safe button: keep editing
        assert await wait_until(pilot, lambda: app.screen is screen, 5)
        screen.query_one("#set-refresh_hz", Input).value = "2"  # back as saved
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)


def test_messages_shared_with_the_cli_name_the_apps_fields():
    """A message written for the command line names the field, not the flag, in the app."""
    from sidestep.tui.wording import in_app_words

    assert in_app_words("checkpoint folder not found; set --checkpoint-dir to the folder") == \
        "checkpoint folder not found; set 'Checkpoint directory' to the folder"
    assert in_app_words("use --lr 1e-4 or --learning-rate 1e-4") == \
        "use 'Learning rate' 1e-4 or 'Learning rate' 1e-4"
    # a switch's flag and anything not a setting stay as written
    assert in_app_words("pass --force to replace it; see --help") == \
        "pass --force to replace it; see --help"
    # a command the app has a screen for
    assert in_app_words("no .pt files found; preprocess your audio first (`sidestep "
                        "preprocess` or the --preprocess flag)") == \
        "no .pt files found; preprocess your audio first (Dataset browser → Preprocess)"


def test_app_texts_say_what_to_do_in_the_app_not_which_command_to_run(tmp_path):
    """A broken module config said "write it again with `sidestep estimate`", and Keep
    running's help "print its folder and return (control it with `sidestep runs/...`)":
    the app has the Estimate screen and the dashboard for that."""
    import json

    from sidestep.config import schema
    from sidestep.engine.module_config import ModuleConfigError, load_module_config
    from sidestep.tui.wording import in_app_words

    messages = []
    for name, text in (("missing.json", None), ("bad.json", "{"), ("other.json", "{}"),
                       ("old.json", json.dumps({"version": 99, "modules": []}))):
        if text is not None:
            (tmp_path / name).write_text(text)
        try:
            load_module_config(tmp_path / name)
        except ModuleConfigError as exc:
            messages.append(in_app_words(str(exc)))
    assert len(messages) == 4
    for message in messages:
        assert "sidestep estimate" not in message and "Estimate screen (E" in message, message
    keep = in_app_words(schema.BY_NAME["detach"].help)
    assert "print its folder" not in keep and "the dashboard lists it" in keep, keep
    assert keep.endswith("From a terminal: `sidestep runs/stop/pause/attach`.")  # secondary


async def test_a_new_form_in_the_demo_trains_on_the_demo_songs(tui_env, demo_root):
    """--demo: F from the dashboard fills the demo's tensors next to its model, as the first
    form does (it asked for a dataset folder, beside the demo's checkpoint folder)."""
    app = make_app(demo=True, demo_dir=demo_root)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: form_built(app), 30)
        await app.workers.wait_for_complete()
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.press("f")
        assert await wait_until(pilot, lambda: form_built(app), 10)
        form = app.screen
        assert form.explicit["dataset_dir"] == str(demo_root / "tensors")
        assert form.explicit["checkpoint_dir"] == str(demo_root / "checkpoints")
        # the demo's quick settings and its own runs folder, not 100 epochs into ./output
        assert form.preset_name == "quick_test"
        assert Path(form.explicit["output_dir"]).parent == demo_root / "runs"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.press("V")
        assert await wait_until(pilot, lambda: form_built(app), 10)
        assert app.screen.mode == "vanilla" and app.screen.preset_name == "quick_test"
        # the browser's "Train on these": its tensors, a run folder in the demo's too
        app.action_new_training("fixed", {"dataset_dir": str(demo_root / "tensors")})
        assert await wait_until(pilot, lambda: form_built(app) and app.screen.mode == "fixed",
                                10)
        assert Path(app.screen.explicit["output_dir"]).parent == demo_root / "runs"


async def test_a_new_form_shows_first_and_builds_hidden_rows_after_in_schema_order(tui_env):
    """A new form is built with the rows it shows (a quarter of them in Basic); the rest follow
    once it is on screen. Advanced asked for at once, and keys typed at once, are not lost: the
    rows end up in the schema's order under their headings, every Advanced row shown, and the
    text typed is in the field that had focus."""
    from textual import events

    from sidestep.tui.screens.train_form import TrainingFormScreen, group_id
    from sidestep.tui.widgets.fields import SettingField

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.post_message(events.Key("F", "F"))
        assert await wait_until(pilot, lambda: isinstance(app.screen, TrainingFormScreen)
                                and app.screen.focused is not None, 10, step=0.01)
        form = app.screen
        first = form.focused
        start = first.value
        assert len(form.query(SettingField)) < len(form.settings)  # not all built yet
        await burst(pilot, app, ["end", "slash", "z", "f2"])
        assert await wait_until(pilot, lambda: form.built, 20)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert first.value == start + "/z"
        body = form.query_one("#form-body")
        order = [w.id for w in body.children]
        expected, group = [], None
        for s in form.settings:
            if s.group != group:
                group = s.group
                expected.append(group_id(group))
            expected.append(f"field-{s.name}")
        assert order == expected
        shown = {f.setting.name for f in form.query(SettingField) if f.display}
        hidden_by_rule = {s.name for s in form.settings
                          if not form.model.visible_by_condition(s)}
        assert shown == {s.name for s in form.settings} - hidden_by_rule
        assert app.errors == []


async def test_ctrl_c_says_how_to_quit_and_changes_nothing(tui_env):
    """ctrl+c (a terminal habit) on the dashboard: the app stays, on the same screen, and says
    which keys quit."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.press("ctrl+c")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DashboardScreen) and app.is_running
        shown = [n.message for n in app._notifications]
        assert any("ctrl+c does not quit here" in m and "ctrl+q" in m for m in shown), shown


@pytest.mark.parametrize("key", ["F", "E"])
async def test_keys_typed_straight_after_the_key_that_opens_a_field_land_in_it(tui_env, key):
    """F (the form) or E (the estimate's dialog), then at once "/zz" and a backspace: they
    reached the new screen before it had put the cursor in its first field and were lost."""
    from sidestep.tui.screens.settings_dialog import SettingsDialog
    from sidestep.tui.screens.train_form import TrainingFormScreen

    screen_type = TrainingFormScreen if key == "F" else SettingsDialog
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.pause(0.3)
        await burst(pilot, app, [key, "end", "slash", "z", "z", "backspace"])
        assert await wait_until(pilot, lambda: isinstance(app.screen, screen_type)
                                and isinstance(app.screen.focused, Input), 20)
        box = app.screen.focused
        assert box.id == "input-checkpoint_dir" and box.value.endswith("/z"), box.value
        # the form's later rows finish mounting before the test app is torn down (torn down
        # mid-mount, a Select could not find its parts: Textual's own race, at exit only)
        assert key == "E" or await wait_until(pilot, lambda: form_built(app), 30)
        assert app.errors == []


async def test_tabs_typed_straight_after_f_move_through_the_form(tui_env):
    """F Tab Tab Tab 7 in one burst: the Tabs moved focus on a form that had none yet, and the
    7 landed in Checkpoint directory. They wait for the form's first field, then land as
    typed slowly."""

    from sidestep.tui.screens.train_form import TrainingFormScreen

    async def focused_after(pilot, app, at_once: bool) -> str:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.pause(0.3)
        if at_once:
            await burst(pilot, app, ["f", "tab", "tab", "tab", "7"])
        else:
            await pilot.press("f")
            assert await wait_until(pilot, lambda: isinstance(app.screen, TrainingFormScreen)
                                    and isinstance(app.screen.focused, Input), 20)
            await pilot.pause(0.3)
            await pilot.press("tab", "tab", "tab", "7")
            assert await wait_until(pilot, lambda: app.typed.idle, 20)
        assert isinstance(app.screen, TrainingFormScreen)
        box = app.screen.focused
        assert box.value.endswith("7"), (box.id, box.value)
        assert await wait_until(pilot, lambda: form_built(app), 30)
        return box.id

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        slow = await focused_after(pilot, app, at_once=False)
    assert slow != "input-checkpoint_dir"
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await focused_after(pilot, app, at_once=True) == slow
        assert app.errors == []


async def test_screen_letter_keys_work_in_capitals_as_the_footer_shows_them(tui_env):
    """Every screen's letter key is shown in capitals and takes both cases (B, R, W, X, ...
    did nothing typed as shown); on History, O opens the selected run's curves."""
    import importlib
    import pkgutil

    import sidestep.tui.screens as screens

    letters = []
    for info in pkgutil.iter_modules(screens.__path__):
        module = importlib.import_module(f"sidestep.tui.screens.{info.name}")
        for cls in vars(module).values():
            for b in getattr(cls, "BINDINGS", ()) if isinstance(cls, type) else ():
                keys = b.key.split(",") if hasattr(b, "key") else []
                if any(len(k) == 1 and k.isalpha() for k in keys):
                    letters.append((cls.__name__, b.key, b.key_display))
    assert len(letters) >= 15, letters
    for name, keys, shown in letters:
        parts = set(keys.split(","))
        assert {k.lower() for k in parts} | {k.upper() for k in parts} == parts, (name, keys)
        assert shown is not None and shown.isupper(), (name, keys, shown)

    _write_run(tui_env / "output", "old-run", "completed", 9, False)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_history_of_one(app, pilot, "H")
        await pilot.press("O")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        assert app.errors == []


async def test_a_history_key_typed_before_the_runs_are_listed_is_done_when_they_are(tui_env):
    """H then O at once: O came before History's worker had listed the runs and did
    nothing (R opened no form, X said "no run to export")."""
    _write_run(tui_env / "output", "old-run", "completed", 9, False)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.pause(0.3)
        await burst(pilot, app, ["H", "O"])
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        assert app.screen.state.title == "old-run" and app.errors == []


async def test_a_dialog_shows_its_own_keys_not_the_screens_underneath(tui_env):
    """A dialog showed the dashboard's F Train, H History, ... below it, none of which act
    there; it shows its own (Esc closes)."""
    from textual.widgets._footer import FooterKey

    from sidestep.tui.screens.dialogs import ErrorScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.show_error("Something failed", "the reason")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), 5)
        # the footer composes its keys a moment after the dialog (later under load)
        assert await wait_until(pilot, lambda: app.screen.query(FooterKey), 10)
        shown = [k.description for k in app.screen.query(FooterKey)]
        assert "Close" in shown and "Train" not in shown and "History" not in shown, shown
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)


async def test_history_says_it_lists_runs_from_elsewhere_too(tui_env, tmp_path):
    """Its header named only the output roots while it listed runs started in other folders."""
    from textual.widgets import Static

    from sidestep.engine.live_runs import remember_run

    _write_run(tui_env / "output", "here", "completed", 9, False)
    _write_run(tmp_path / "other", "there", "completed", 9, False)
    remember_run(tmp_path / "other" / "there")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("h")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen)
                                and len(app.screen.runs) == 2, 10)
        header = str(app.screen.query_one("#history-roots", Static).render())
        assert header.startswith("runs found under: ") and \
            header.endswith("; and 1 started elsewhere"), header


async def test_keys_that_did_nothing_are_not_typed_into_the_next_screen(tui_env):
    """x y z S a b on the dashboard: Settings opened with 'abxyz' in its first field (the
    unused x y z came back up to the app once Settings had a text box focused); k F put a
    'k' after the form's checkpoint folder."""
    from sidestep.tui.screens.train_form import TrainingFormScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.pause(0.3)
        await burst(pilot, app, ["x", "y", "z", "S", "a", "b"])
        assert isinstance(app.screen, SettingsScreen)
        assert app.screen.query_one("#set-checkpoint_dir", Input).value == "ab"
        app.screen.query_one("#set-checkpoint_dir", Input).value = app.settings.checkpoint_dir
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
        await pilot.pause(0.3)
        await burst(pilot, app, ["k", "F"])
        form = app.screen
        assert isinstance(form, TrainingFormScreen)
        assert await wait_until(pilot, lambda: form_built(app), 30)
        assert not form.query_one("#input-checkpoint_dir", Input).value.endswith("k")


async def test_monitor_keys_typed_after_g_act_in_order(tui_env):
    """G Esc L in one burst: the log opened, Esc and L reached it before it was there, and it
    stayed open, the chart unchanged."""
    from sidestep.tui.screens.log_view import LogScreen

    _write_run(tui_env / "output", "old-run", "completed", 9, False)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.open_history_run(Path("output/old-run"))
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        monitor = app.screen
        await pilot.pause(0.5)
        chart = monitor.query_one("#loss-chart")
        assert not chart.log_scale
        await burst(pilot, app, ["G", "escape", "L", "G"])
        assert await wait_until(pilot, lambda: chart.log_scale and
                                isinstance(app.screen, LogScreen), 10)
        await burst(pilot, app, ["escape", "L"])
        assert await wait_until(pilot, lambda: app.screen is monitor and not chart.log_scale,
                                10)


async def test_keys_typed_after_enter_opens_a_dialog_land_in_it(tui_env):
    """Enter on the form's Save… button, then 'abc' at once: the prompt opened without them."""
    from sidestep.tui.screens.dialogs import PromptScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot)
        assert await wait_until(pilot, lambda: form_built(app), 30)
        form.query_one("#preset-save").focus()
        await pilot.pause(0.3)
        await burst(pilot, app, ["enter", "a", "b", "c"])
        assert isinstance(app.screen, PromptScreen)
        assert app.screen.query_one("#prompt-input", Input).value.endswith("abc")
