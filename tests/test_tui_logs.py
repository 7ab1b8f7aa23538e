"""The app's logs wrap to their width: at 80 columns the end of a long line (the preprocess
log's "…/audio_tensors: 0 already done, 12 to encode") was cut off."""

from __future__ import annotations

from textual.app import App, ComposeResult

from sidestep.tui.widgets.wrapped_log import WrappedLog


class _LogApp(App):
    def compose(self) -> ComposeResult:
        yield WrappedLog(id="log")


async def test_a_long_line_wraps_whole_in_a_narrow_log():
    line = "preprocess plan 0/12 12 songs on cpu (fp32) into /home/me/.cache/sidestep/demo/" \
           "audio_tensors: 0 already done, 12 to encode"
    app = _LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        log = app.query_one(WrappedLog)
        log.write(line)
        await pilot.pause(0.2)
        shown = [strip.text.rstrip() for strip in log.lines]
        assert all(len(s) <= 60 for s in shown), shown
        assert "".join(s if s.endswith("/") else s + " " for s in shown).split() == \
            line.split(), shown
