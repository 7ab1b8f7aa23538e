"""The app and runs in other processes: the dashboard lists a run started with ``--detach`` and
attaches the monitor to it (its steps grow; pause, resume and stop reach it through the control
channel); a run started from the form with "Keep running after I quit" is its own process,
which quitting the app leaves training; the setting that pre-fills that field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Checkbox, DataTable, Select

from conftest import form_built, make_app, wait_until
from sidestep.engine.checkpointing import is_complete, list_checkpoints
from sidestep.engine.control_channel import read_ack, send
from sidestep.tui.attached import AttachedRun
from sidestep.tui.runner import left_running
from sidestep.tui.screens.dashboard import DashboardScreen
from sidestep.tui.screens.dialogs import ConfirmScreen
from sidestep.tui.screens.monitor import MonitorScreen

SIZE = (100, 32)
LONG = {"epochs": 2000, "save_every": 2000, "log_every": 1, "rank": 4, "alpha": 8,
        "num_workers": 0}


def _steps(out: Path) -> int:
    try:
        return (out / "events.jsonl").read_text().count('{"type": "step"')
    except OSError:
        return 0


def _events(out: Path) -> list[str]:
    return [json.loads(line)["type"] for line in (out / "events.jsonl").read_text().splitlines()]


def _info(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # exited but not reaped (the app's own child) is not training
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _until(predicate, timeout: float, what: str, out: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    log = (out / "console.log").read_text()[-3000:] if out and (out / "console.log").exists() \
        else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def _kill(pid: int | None) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _detach_from_cli(cwd: Path, out: Path) -> int:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LONG.items()]
    launch = subprocess.run(
        [sys.executable, "-m", "sidestep", "--plain", "-y", "fixed", "--checkpoint-dir",
         "./checkpoints", "--dataset-dir", "./tensors", "--output-dir", str(out), "--device",
         "cpu", *flags, "--detach"], cwd=cwd, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    return int(launch.stdout.split("(pid ")[1].split(")")[0])


@pytest.mark.slow
async def test_attach_to_a_detached_run_pause_resume_and_stop(tui_env):
    out = tui_env / "output" / "background"
    pid = _detach_from_cli(tui_env, out)
    try:
        _until(lambda: _steps(out) >= 1, 240, "the first step", out)
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs-table", DataTable)
            key = str(Path("output/background"))  # as the output root names it

            def listed() -> bool:
                try:
                    return str(table.get_row(key)[1]).startswith("running · step ")
                except Exception:
                    return False

            assert await wait_until(pilot, listed, 30)
            assert table.get_row_index(key) == 0  # live runs first
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen)
                                    and isinstance(app.screen.target, AttachedRun), 30)
            monitor = app.screen
            state = monitor.state
            assert state is app.attached[str(out.resolve())].state
            assert state.steps and state.total_epochs == 2000  # caught up on what was written
            first = state.step
            assert await wait_until(pilot, lambda: state.step >= first + 2, 120)
            assert state.steps == sorted(state.steps)

            await pilot.press("space")
            assert await wait_until(pilot, lambda: state.status == "paused", 60)
            assert "paused" in _events(out)
            # (the label follows on the monitor's next refresh, up to a second later)
            assert await wait_until(
                pilot, lambda: str(monitor.query_one("#pause").label) == "Resume (space)", 10)
            await pilot.press("space")
            assert await wait_until(pilot, lambda: state.status == "running", 60)
            kinds = _events(out)
            assert kinds.index("paused") < kinds.index("resumed")
            resumed_at = state.step
            assert await wait_until(pilot, lambda: state.step > resumed_at, 60)

            await pilot.press("x")
            assert await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
            await pilot.click("#stop")
            assert await wait_until(pilot, lambda: state.finished is not None, 120)
            assert state.status == "stopped"
            assert is_complete(Path(state.finished.checkpoint_path))
            assert monitor.query_one("#stop").disabled
            assert app.errors == []
            assert left_running(app) == []  # nothing left training
        _until(lambda: not _alive(pid), 60, "the run's process to end", out)
        assert _info(out)["status"] == "stopped"
        assert list_checkpoints(out)
        assert "Traceback" not in (out / "console.log").read_text()
    finally:
        _kill(pid)


@pytest.mark.slow
async def test_a_run_started_to_keep_running_outlives_the_app(tui_env):
    """From the form with "Keep running after I quit": checked like any start, then its own
    process, shown attached; quitting the app says how to attach again and leaves it training;
    the control channel stops it."""
    out = tui_env / "output" / "keeps-going"
    pid = None
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_new_training("fixed", {"checkpoint_dir": "./checkpoints",
                                          "dataset_dir": "./tensors",
                                          "output_dir": "./output/keeps-going", "detach": True,
                                          "device": "cpu", **LONG})
        assert await wait_until(pilot, lambda: form_built(app)
                                and app.screen.resolved is not None, 20)
        await app.workers.wait_for_complete()
        assert app.screen.resolved.config.detach
        await pilot.press("ctrl+s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 120)
        run = app.screen.target
        assert isinstance(run, AttachedRun) and not app.runner.active
        pid = run.process["pid"]
        try:
            assert await wait_until(pilot, lambda: run.state.step >= 2, 240), \
                (out / "console.log").read_text()[-3000:]
            assert run.active and _alive(pid) and _info(out)["pid"] == pid
            assert "in the background" in str(app.screen.query_one("#run-title").render())
            await pilot.press("q")  # no dialog: nothing of this process's is training
            assert await wait_until(pilot, lambda: not app.is_running, 10)
        except BaseException:
            _kill(pid)
            raise
    try:
        assert left_running(app) == [
            f"the run keeps training in the background: sidestep attach {out.resolve()}"]
        at_exit = _steps(out)
        _until(lambda: _steps(out) >= at_exit + 2, 120, "steps after the app quit", out)
        assert _alive(pid) and _info(out)["status"] == "running"
        command = send(out, "stop")
        _until(lambda: (read_ack(out, command) or {}).get("state") == "done", 120,
               "the stop's answer", out)
        _until(lambda: not _alive(pid), 60, "the run's process to end", out)
        assert _info(out)["status"] == "stopped"
        saved = list_checkpoints(out)
        assert saved and is_complete(saved[-1])
    finally:
        _kill(pid)


async def test_keep_running_setting_prefills_the_form(tui_env):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.action_new_training("fixed")
        assert await wait_until(pilot, lambda: form_built(app)
                                and app.screen.is_mounted, 10)
        assert "detach" not in app.screen.explicit  # off by default: as before

        await pilot.press("escape")
        await pilot.press("s")
        await pilot.pause(0.3)
        app.screen.query_one("#set-keep_running", Checkbox).value = True
        app.screen.query_one("#set-notify", Select).value = "both"
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        saved, _ = app.settings_store.load()
        assert (saved.keep_running, saved.notify) == (True, "both")
        assert app.settings.keep_running

        app.action_new_training("vanilla")
        assert await wait_until(pilot, lambda: form_built(app)
                                and app.screen.is_mounted, 10)
        form = app.screen
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert form.explicit["detach"] is True
        assert form.query_one("#field-detach").query_one(Checkbox).value is True
        assert app.errors == []


async def test_dashboard_lists_nothing_live_without_live_runs(tui_env):
    """No run in another process: the dashboard's rows and its Monitor button are as ever."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, DashboardScreen) and screen._live == {}
        assert screen.query_one("#go-monitor").disabled
        app.action_monitor()
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)


# -- AttachedRun against a stand-in process (no training: quick) --------------------------------
def _stand_in() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def _fake_run(folder: Path, pid: int, started_at: float) -> Path:
    """A run folder as a live run leaves it: run.json naming ``pid``, events of an earlier run
    in the same folder, then this one's first step."""
    from sidestep.engine.events import RunFinished, RunStarted, StepMetrics, to_json
    from sidestep.engine.run_dir import process_identity

    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "status": "running", "started_at": started_at, **process_identity(pid),
        "config": {"epochs": 10}}))
    (folder / "control" / "acks").mkdir(parents=True)
    old = [RunStarted(run_dir=str(folder), config={}, device="cpu", precision="fp32",
                      model="tiny", adapter_type="lora", trainable_params=1, dataset_size=1,
                      steps_per_epoch=1, total_steps=5, total_epochs=5, time=started_at - 99),
           StepMetrics(step=1, epoch=1, loss=9.0, lr=1e-4, time=started_at - 98),
           RunFinished(status="stopped", step=1, time=started_at - 97)]
    new = [RunStarted(run_dir=str(folder), config={}, device="cpu", precision="fp32",
                      model="tiny", adapter_type="lora", trainable_params=1, dataset_size=1,
                      steps_per_epoch=2, total_steps=20, total_epochs=10, time=started_at + 1),
           StepMetrics(step=2, epoch=1, loss=1.5, lr=1e-4, time=started_at + 2)]
    (folder / "events.jsonl").write_text("".join(to_json(e) + "\n" for e in old + new))
    return folder


def _append(folder: Path, *events, torn: str = "") -> None:
    from sidestep.engine.events import to_json

    with open(folder / "events.jsonl", "a") as fh:
        fh.write("".join(to_json(e) + "\n" for e in events) + torn)


class FakeApp:
    def __init__(self):
        self.notes: list[str] = []
        self.errors: list[BaseException] = []

    def notify(self, message, **_kw):
        self.notes.append(message)

    def run_worker(self, work, **_kw):
        try:
            work()
        except Exception as exc:
            self.errors.append(exc)


def test_attached_run_catches_up_follows_and_sends_commands(tmp_path, monkeypatch):
    from sidestep.engine.events import RunPaused, StepMetrics, to_json
    from sidestep.tui import attached

    monkeypatch.setattr(attached, "LOOK_SECONDS", 0.0)
    monkeypatch.setattr(attached, "GRACE_SECONDS", 0.0)
    proc = _stand_in()
    try:
        folder = _fake_run(tmp_path / "run", proc.pid, time.time() - 50)
        app = FakeApp()
        run = AttachedRun.open(app, folder)
        state = run.state
        # only this process's events: the earlier run's step 1 and its end are not shown
        assert (state.steps, state.total_epochs, state.status) == ([2], 10, "running")
        assert run.active and run.claimed and run.outlives_app
        now = time.time()
        step4 = to_json(StepMetrics(step=4, epoch=2, loss=1.3, lr=1e-4, time=now + 1))
        _append(folder, StepMetrics(step=3, epoch=2, loss=1.4, lr=1e-4, time=now),
                torn=step4[:20])
        run.poll()
        run.drain()
        assert state.steps == [2, 3] and run.active  # the torn line waits for its end
        with open(folder / "events.jsonl", "a") as fh:
            fh.write(step4[20:] + "\n")
        _append(folder, RunPaused(step=4, time=now + 2))
        run.poll()
        run.drain()
        assert state.steps == [2, 3, 4] and state.status == "paused"

        run.resume()
        run.save_now()
        sent = sorted((folder / "control").glob("*.json"))
        assert [json.loads(p.read_text())["command"] for p in sent] == ["resume", "save"]
        assert app.errors == []
        (folder / "control").rename(folder / "control-gone")
        (folder / "control").write_text("")  # a file where the folder was
        run.pause()
        assert "is not a folder" in str(app.errors[-1])  # the App shows it as a notice

        proc.kill()
        proc.wait(10)
        run.poll()  # gone: noticed ...
        run.poll()  # ... and, after the grace period, ended
        run.drain()
        assert state.status == "interrupted" and not run.active
        assert "process ended without finishing" in state.finished.error
        assert run.take_finished() is state.finished and run.take_finished() is None
    finally:
        proc.kill()
        proc.wait(10)


def test_stop_while_loading_ends_the_process(tmp_path, monkeypatch):
    from sidestep.engine.run_dir import process_identity
    from sidestep.tui import attached

    monkeypatch.setattr(attached, "LOOK_SECONDS", 0.0)
    monkeypatch.setattr(attached, "GRACE_SECONDS", 0.0)
    proc = _stand_in()
    try:
        folder = tmp_path / "loading"
        folder.mkdir()
        app = FakeApp()
        run = AttachedRun(app, folder, process=process_identity(proc.pid), since=time.time())
        run.poll()
        run.drain()
        assert run.active and not run.claimed and run.state.status == "starting"
        run.pause()
        assert "still loading" in app.notes[-1] and not (folder / "control").exists()
        run.stop()
        assert proc.wait(10) == -signal.SIGTERM
        run.poll()
        run.drain()
        run.poll()
        run.drain()
        assert run.state.status == "stopped" and not run.active
        assert app.errors == []
    finally:
        proc.kill()
        proc.wait(10)


async def test_the_monitor_shows_a_refused_command_and_keeps_going(tui_env):
    """Attached from History's way in (a live run's folder): the monitor drives the run; a
    control folder that cannot take commands is a notice, never a traceback."""
    proc = _stand_in()
    try:
        folder = _fake_run(tui_env / "output" / "elsewhere", proc.pid, time.time() - 50)
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            app.open_history_run(Path("output/elsewhere"))
            assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
            assert isinstance(app.screen.target, AttachedRun) and app.screen.live
            await pilot.press("c")
            assert await wait_until(pilot, lambda: list((folder / "control").glob("*.json")),
                                    10)
            (folder / "control" / "acks").rmdir()
            for f in (folder / "control").iterdir():
                f.unlink()
            (folder / "control").rmdir()
            (folder / "control").write_text("")
            await pilot.press("space")
            assert await wait_until(pilot, lambda: any(
                "is not a folder" in n.message for n in app._notifications), 10)
            assert app.errors == [] and app.is_running
            assert app.screen.state.active
            assert left_running(app) == [
                f"the run keeps training in the background: sidestep attach {folder.resolve()}"]
    finally:
        proc.kill()
        proc.wait(10)


async def test_dashboard_finds_a_run_started_later_and_attaches_without_focus(tui_env,
                                                                             monkeypatch):
    """A run started in another terminal while the dashboard shows appears by itself; opening
    it focuses no button (Enter then sends nothing); its process killed with -9 shows as
    interrupted within seconds."""
    from sidestep.tui import attached
    from sidestep.tui.screens import dashboard

    monkeypatch.setattr(dashboard, "LIVE_REFRESH_S", 0.3)
    monkeypatch.setattr(attached, "LOOK_SECONDS", 0.3)
    monkeypatch.setattr(attached, "GRACE_SECONDS", 0.5)
    proc = _stand_in()
    try:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await app.workers.wait_for_complete()
            screen = app.screen
            assert isinstance(screen, DashboardScreen) and screen._live == {}
            folder = _fake_run(tui_env / "output" / "later", proc.pid, time.time() - 50)
            assert await wait_until(pilot, lambda: len(screen._live) == 1, 10)
            table = screen.query_one("#runs-table", DataTable)
            assert table.get_row_at(0)[0] == "later" and "running" in table.get_row_at(0)[1]
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
            monitor = app.screen
            assert isinstance(monitor.target, AttachedRun) and app.focused is None
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert not list((folder / "control").glob("*.json"))  # nothing was pressed

            killed = time.monotonic()
            proc.kill()
            proc.wait(10)
            assert await wait_until(pilot, lambda: monitor.state.status == "interrupted", 10)
            assert time.monotonic() - killed < 5
            assert app.errors == []
    finally:
        proc.kill()
        proc.wait(10)


async def test_a_killed_background_run_elsewhere_stays_in_the_lists(tui_env, tmp_path):
    """A detached run whose folder is outside the output root, killed: History and the
    dashboard still list it (from the record of background starts), as interrupted."""
    from sidestep.engine.live_runs import record
    from sidestep.tui.screens.history import HistoryScreen

    proc = _stand_in()
    folder = _fake_run(tmp_path / "elsewhere" / "night-run", proc.pid, time.time() - 50)
    record(folder, proc.pid)
    proc.kill()
    proc.wait(10)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        rows = app.screen.query_one("#runs-table", DataTable)
        assert [tuple(rows.get_row_at(i)[:2]) for i in range(rows.row_count)] == [
            ("night-run", "interrupted")]
        await pilot.press("h")
        assert await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen)
                                and app.screen.runs, 10)
        assert [(r.name, r.status) for r in app.screen.runs] == [("night-run", "interrupted")]
        assert app.errors == []
