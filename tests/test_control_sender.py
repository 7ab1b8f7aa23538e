"""The run's log credits a command to the app when the app sent it, to the CLI otherwise."""

from __future__ import annotations

import logging
import os

import pytest

from sidestep.engine.control_channel import control_dir, send
from test_control_channel import MiniRun, wait_ack


@pytest.mark.parametrize("sender, who", [("sidestep-tui", "the app (sidestep-tui, pid {})"),
                                         ("", "`sidestep stop` (pid {})")], ids=["app", "cli"])
def test_the_log_names_who_asked(tmp_path, caplog, sender, who):
    who = who.format(os.getpid())
    control_dir(tmp_path).mkdir()
    with caplog.at_level(logging.INFO, logger="sidestep.engine"):
        with MiniRun(tmp_path) as run:
            wait_ack(tmp_path, send(tmp_path, "stop", sender=sender))
            assert run.control.stop_reason == f"{who} asked to stop"
    assert f"{who}: stop and save" in caplog.text
