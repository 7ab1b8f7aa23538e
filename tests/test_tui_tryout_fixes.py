"""Defects a tryout of the app found: Top K values that cannot be used, the preprocess
screen's keys after it ends, tables that fit the terminal, the selection's attention counts."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import Button, Input, Static

from conftest import make_app, wait_until
from sidestep.tui.messages import EstimateFinished, PreprocessFinished
from sidestep.tui.screens.dialogs import ErrorScreen
from sidestep.tui.screens.estimate import EstimateScreen
from sidestep.tui.widgets.ranking import selection_line
from sidestep.tui.widgets.tables import FitTable, fill_table, shorten

SIZE = (100, 32)


def _result(top_k: int = 3):
    from sidestep.engine.estimate import EstimateResult, projection_names

    ranking = [(n, 1.0 / (1 + i)) for i, n in enumerate(projection_names(2))]  # 16 modules
    return EstimateResult(granularity="module", top_k=top_k, model="acestep-v15-turbo",
                          dataset="tensors", batches=2, seed=42, ranking=ranking, seconds=1.0)


async def _fed(app, pilot, top_k: int = 3) -> EstimateScreen:
    screen = EstimateScreen(ask=False)
    app.goto(screen)
    await pilot.pause(0.3)
    screen.post_message(EstimateFinished(_result(top_k), None))
    assert await wait_until(pilot, lambda: screen.result is not None, 10)
    return screen


def _error_up(app) -> bool:
    return isinstance(app.screen, ErrorScreen) and bool(app.screen.query("#close"))


def _selection(screen) -> str:
    return str(screen.query_one("#est-selection", Static).render())


@pytest.mark.parametrize("typed, said", [("0", "selects nothing"), ("-3", "selects nothing"),
                                         ("abc", "whole number"),
                                         ("20", "more than the 16 modules")])
async def test_an_unusable_top_k_is_refused_on_the_field_and_nothing_is_saved(
        tui_env, typed, said):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _fed(app, pilot)
        box = screen.query_one("#est-k", Input)
        box.value = typed
        assert await wait_until(pilot, lambda: box.has_class("est-bad"), 10)
        assert said in _selection(screen) and screen.k == 3
        out = tui_env / "picked.json"
        screen.query_one("#est-output", Input).value = str(out)
        screen.action_save()  # W: refused, the K shown before is not written in its place
        assert await wait_until(pilot, lambda: _error_up(app), 10)
        assert not out.exists() and screen.saved is None
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 10)
        screen.action_train()  # T writes first: refused too
        assert await wait_until(pilot, lambda: _error_up(app), 10)
        assert not out.exists()


async def test_a_top_k_above_the_ranking_from_the_dialog_is_shown_refused_not_clamped(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _fed(app, pilot, top_k=50)
        box = screen.query_one("#est-k", Input)
        assert await wait_until(pilot, lambda: box.has_class("est-bad"), 10)
        assert box.value == "50" and "Top K 50 is more than the 16 modules" in _selection(screen)
        box.value = "5"
        assert await wait_until(pilot, lambda: screen.k == 5 and not box.has_class("est-bad"),
                                10)
        assert app.errors == []


def test_the_selection_counts_self_and_cross_attention():
    ranking = [("layers.0.self_attn.q_proj", 1.0), ("layers.0.cross_attn.k_proj", 0.5),
               ("layers.1.self_attn.v_proj", 0.2)]
    assert selection_line(ranking, 3, "module") == \
        "3 of 3 modules selected: 2 self-, 1 cross-attention"


def _pp_config(tui_env):
    from sidestep.config.resolve import resolve

    (tui_env / "audio").mkdir()
    return resolve("preprocess", {"checkpoint_dir": "./checkpoints", "audio_dir": "audio",
                                  "tensor_output": "audio_tensors"}).config


@pytest.mark.parametrize("written", [0, 2])
async def test_preprocess_screen_after_it_ends_offers_no_cancel_and_t_only_with_tensors(
        tui_env, written):
    from textual.widgets._footer import FooterKey

    from sidestep.data.preprocess import PreprocessResult
    from sidestep.tui.screens.preprocess import PreprocessScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        screen = PreprocessScreen(_pp_config(tui_env), start=False)
        app.push_screen(screen)
        assert await wait_until(pilot, lambda: screen.query(FooterKey), 10)
        keys = lambda: [k.description for k in screen.query(FooterKey)]  # noqa: E731
        assert "Cancel" in keys() and "Train on these" not in keys()
        result = PreprocessResult(written=[tui_env / f"{i}.pt" for i in range(written)],
                                  cancelled=not written, total=3)
        screen.post_message(PreprocessFinished(result, None))
        assert await wait_until(pilot, lambda: screen.finished, 10)
        assert await wait_until(pilot, lambda: "Cancel" not in keys(), 10), keys()
        assert not screen.query_one("#pp-cancel", Button).display
        assert (("Train on these" in keys()) == bool(written)), keys()
        assert screen.query_one("#pp-train", Button).disabled == (not written)


class _TableApp(App):
    def compose(self):
        yield FitTable(id="t")


RUNS = [(f"/home/someone/music/side-step/output/lora-run-{i}-with-a-long-name", "completed",
         "10/10", "0.1234", "2026-12-04 12:00") for i in range(3)]
HEADERS = ("run", "status", "epochs", "lowest loss", "started")


@pytest.mark.parametrize("width", [80, 160])
async def test_tables_fit_the_terminal_and_keep_the_end_of_a_path(width):
    app = _TableApp()
    async with app.run_test(size=(width, 12)) as pilot:
        table = app.query_one(FitTable)
        fill_table(table, HEADERS, RUNS)
        await pilot.pause(0.2)
        total = sum(c.get_render_width(table) for c in table.columns.values())
        assert total <= width, (total, width)
        first = str(table.get_row_at(0)[0])
        if width == 80:  # cut from the left: the run's own name stays
            assert first.startswith("…") and first.endswith("run-0-with-a-long-name")
        else:  # room for it all: nothing cut
            assert first == RUNS[0][0]
        assert [str(c) for c in table.get_row_at(0)[1:]] == list(RUNS[0][1:])
        await pilot.resize_terminal(80 if width == 160 else 160, 12)  # fits again
        await pilot.pause(0.3)
        assert str(table.get_row_at(0)[0]).startswith("…") == (width == 160)


def test_shorten_keeps_a_paths_end_and_a_texts_start():
    assert shorten("/a/b/c/run-7/best", 12) == "…/run-7/best"
    assert shorten("a long description", 8) == "a long …"
    assert shorten("short", 10) == "short"


def test_prose_with_a_slash_is_cut_at_its_end_not_its_start():
    assert shorten("Comfortable tier (RTX 3090/4090), whole songs", 12) == "Comfortable…"
