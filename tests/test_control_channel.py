"""The run folder's control channel (``sidestep stop|pause|resume|save``), the notify command
and ``sidestep runs`` on made-up run folders: fast, with a stand-in for the training loop
that obeys ``Control`` the way the trainer does (tests/test_detach.py uses real runs)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from sidestep.cli import main
from sidestep.engine.control import Control
from sidestep.engine.control_channel import (ACKS_DIR, CONTROL_DIR, ChannelError,
                                             ControlWatcher, read_ack, send)
from sidestep.engine.events import (CheckpointSaved, Problem, RunFinished, RunPaused,
                                    RunResumed, StepMetrics)
from sidestep.engine.notify import NotifySink


class MiniRun:
    """The trainer's ``_obey_control`` and micro-batch loop in miniature, reporting to the
    watcher as the event bus would; every 20 ms a step."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.control = Control()
        self.watcher = ControlWatcher(run_dir, self.control, poll=0.02)
        self.events: list = []
        self.step = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def emit(self, event) -> None:
        self.events.append(event)
        self.watcher.handle(event)

    def save(self) -> None:
        # as the trainer does: a save where one was just made writes nothing and says so
        again = any(isinstance(e, CheckpointSaved) and e.step == self.step for e in self.events)
        self.emit(CheckpointSaved(path=str(self.run_dir / f"checkpoint-step-{self.step}"),
                                  step=self.step, epoch=0, kind="step", again=again))

    def _loop(self) -> None:
        c = self.control
        while True:
            if c.paused:
                self.emit(RunPaused(step=self.step))
                c.wait_while_paused(poll=0.01, on_save=self.save)
                if not c.stop_requested:
                    self.emit(RunResumed(step=self.step))
            if c.stop_requested:
                self.save()
                self.emit(RunFinished(status="stopped", step=self.step,
                                      checkpoint_path=str(self.run_dir / "ck")))
                return
            if c.take_save_request():
                self.save()
            self.step += 1
            self.emit(StepMetrics(step=self.step, epoch=1, loss=1.0, lr=1e-4))
            time.sleep(0.02)

    def __enter__(self) -> "MiniRun":
        self.watcher.start()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.control.request_stop("test over")
        self.thread.join(5)
        self.watcher.close()

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def block(control: Path) -> None:
    """A file where the control folder was (a live run may make the folder again meanwhile:
    then once more)."""
    while True:
        shutil.rmtree(control, ignore_errors=True)
        try:
            control.write_text("")
            return
        except IsADirectoryError:
            continue


def wait_ack(run_dir, name, states=("done", "ended", "ignored", "unchanged"),
             timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ack = read_ack(run_dir, name)
        if ack and ack["state"] in states:
            return ack
        time.sleep(0.01)
    raise AssertionError(f"no final answer to {name}: {read_ack(run_dir, name)}")


def test_pause_then_resume_sent_at_once_both_take_effect(tmp_path):
    with MiniRun(tmp_path) as run:
        time.sleep(0.1)
        pause, resume = send(tmp_path, "pause"), send(tmp_path, "resume")
        assert pause < resume  # names sort in sending order
        assert wait_ack(tmp_path, pause)["message"].startswith("paused at step")
        assert wait_ack(tmp_path, resume)["message"].startswith("resumed at step")
        assert not run.control.paused
        kinds = run.types()
        assert kinds.index("paused") < kinds.index("resumed")
        steps_after = len([e for e in run.events[kinds.index("resumed"):]
                           if e.type == "step"])
        time.sleep(0.1)
        assert len([e for e in run.events if e.type == "step"]) > steps_after  # training on
    # the commands were taken: only their answers are left
    assert not list((tmp_path / CONTROL_DIR).glob("*.json"))
    assert len(list((tmp_path / CONTROL_DIR / ACKS_DIR).glob("*.json"))) == 2


@pytest.mark.parametrize("order", [("save", "stop"), ("stop", "save")])
def test_save_and_stop_at_once_both_answered(tmp_path, order):
    with MiniRun(tmp_path) as run:
        names = dict(zip(order, (send(tmp_path, order[0]), send(tmp_path, order[1]))))
        stop = wait_ack(tmp_path, names["stop"])
        save = wait_ack(tmp_path, names["save"])
        assert stop["state"] == "done" and stop["message"].startswith("stopped at step")
        assert save["state"] == "done" and save["message"].startswith("saved ")
        assert run.types()[-1] == "run_finished"


def test_many_senders_at_once_every_command_arrives(tmp_path):
    with MiniRun(tmp_path) as run:
        names: list[str] = []
        lock = threading.Lock()

        def sender():
            name = send(tmp_path, "save")
            with lock:
                names.append(name)

        threads = [threading.Thread(target=sender) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(names)) == 12
        for name in names:
            assert wait_ack(tmp_path, name)["state"] == "done"
        assert "checkpoint" in run.types()


def test_pause_while_paused_and_resume_when_running_say_so(tmp_path):
    with MiniRun(tmp_path):
        # "unchanged", not "done": the run did nothing, and the sender exits 1 for it
        ack = wait_ack(tmp_path, send(tmp_path, "resume"))
        assert (ack["state"], ack["message"]) == \
            ("unchanged", "the run was not paused; nothing to resume")
        wait_ack(tmp_path, send(tmp_path, "pause"))
        ack = wait_ack(tmp_path, send(tmp_path, "pause"))
        assert ack["state"] == "unchanged" and ack["message"].startswith("already paused")
        save = wait_ack(tmp_path, send(tmp_path, "save"))  # saved at once, while paused
        assert save["state"] == "done" and save["message"].startswith("saved ")
        # nothing trained since: it says so (it answered "saved ..." for a save not made)
        again = wait_ack(tmp_path, send(tmp_path, "save"))
        assert again["state"] == "done"
        assert again["message"].endswith("nothing new to save"), again
        assert wait_ack(tmp_path, send(tmp_path, "resume"))["state"] == "done"


def test_commands_left_from_an_earlier_run_are_not_obeyed(tmp_path):
    folder = tmp_path / CONTROL_DIR
    folder.mkdir()
    (folder / "00000000000000000001-1-aaaaaa.json").write_text('{"command": "stop"}')
    (folder / "00000000000000000002-1-bbbbbb.json").write_text('{"command": "explode"}')
    with MiniRun(tmp_path) as run:
        assert read_ack(tmp_path, "00000000000000000001-1-aaaaaa.json")["state"] == "ignored"
        name = "00000000000000000003-1-cccccc.json"
        (folder / name).write_text('{"command": "explode"}')
        assert wait_ack(tmp_path, name)["message"] == "unknown command 'explode'"
        time.sleep(0.1)
        assert not run.control.stop_requested


def test_a_run_that_ends_answers_what_it_holds(tmp_path):
    with MiniRun(tmp_path) as run:
        pause = send(tmp_path, "pause")
        wait_ack(tmp_path, pause)
        stop, resume = send(tmp_path, "stop"), send(tmp_path, "resume")
        assert wait_ack(tmp_path, stop)["state"] == "done"
        assert wait_ack(tmp_path, resume)["state"] == "ended"
        assert run.types()[-1] == "run_finished"


def test_the_control_folder_is_tidied_when_nothing_was_sent(tmp_path):
    with MiniRun(tmp_path):
        assert (tmp_path / CONTROL_DIR / ACKS_DIR).is_dir()
    assert not (tmp_path / CONTROL_DIR).exists()


def test_sending_where_the_run_cannot_hear_is_a_clear_error(tmp_path):
    with pytest.raises(ChannelError, match="takes no commands"):
        send(tmp_path, "stop")
    (tmp_path / CONTROL_DIR).write_text("not a folder")
    with pytest.raises(ChannelError, match="is not a folder"):
        send(tmp_path, "stop")


def test_a_file_in_place_of_the_control_folder_does_not_upset_the_run(tmp_path):
    with MiniRun(tmp_path) as run:
        control = tmp_path / CONTROL_DIR
        block(control)
        steps = run.step
        time.sleep(0.15)
        assert run.step > steps and not run.control.stop_requested
        control.unlink()  # gone altogether: the run makes it again
        deadline = time.monotonic() + 5
        while not (control / ACKS_DIR).is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wait_ack(tmp_path, send(tmp_path, "save"))["state"] == "done"


def _send_as_nobody(run_dir: Path, command: str) -> str:
    """``send`` from a forked child running as the unprivileged user ``nobody`` (root ignores
    permissions): what it raised, as text, or "sent"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report through the pipe, leave at once
        message = "no report"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            send(run_dir, command)
            message = "sent"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        report = fh.read().decode()
    os.waitpid(pid, 0)
    return report


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_an_unwritable_control_folder_is_a_clear_error(tmp_path):
    """A user who may not write the run's folder gets a clear error; the run goes on."""
    import tempfile

    if os.geteuid() == 0:  # as root: the run is root's, the command comes from nobody
        run_dir = Path(tempfile.mkdtemp(prefix="sidestep-perm-"))
        run_dir.chmod(0o755)
    else:
        run_dir = tmp_path
    try:
        with MiniRun(run_dir) as run:
            control = run_dir / CONTROL_DIR
            control.chmod(0o555)  # readable, not writable
            try:
                if os.geteuid() == 0:
                    report = _send_as_nobody(run_dir, "stop")
                    assert report.startswith("ChannelError: ") and \
                        "cannot write a command there" in report, report
                else:
                    with pytest.raises(ChannelError, match="cannot write a command there"):
                        send(run_dir, "stop")
            finally:
                control.chmod(0o700)
            steps = run.step
            time.sleep(0.15)
            assert run.step > steps and not run.control.stop_requested
            assert wait_ack(run_dir, send(run_dir, "save"))["state"] == "done"
    finally:
        if run_dir != tmp_path:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)


# -- the CLI on made-up run folders ---------------------------------------------------------------
def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_run(folder: Path, pid: int, status: str = "running", steps: int = 3) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "status": status, "pid": pid, "host": socket.gethostname(), "started_at": time.time(),
        "config": {"mode": "fixed", "epochs": 4, "adapter_type": "lora"}}))
    lines = [{"type": "run_started", "run_dir": str(folder), "config": {}, "device": "cpu",
              "precision": "fp32", "model": "acestep-v15-turbo", "adapter_type": "lora",
              "trainable_params": 10, "dataset_size": 6, "steps_per_epoch": 2,
              "total_steps": 8, "total_epochs": 4, "time": time.time()}]
    lines += [{"type": "step", "step": i, "epoch": 1 + i // 2, "loss": 1.0 / i, "lr": 1e-4,
               "time": time.time()} for i in range(1, steps + 1)]
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_runs_tells_live_from_interrupted_by_the_process(tmp_path, capsys):
    live = _fake_run(tmp_path / "live", os.getpid())
    killed = _fake_run(tmp_path / "killed", _dead_pid())
    assert main(["--plain", "runs", "--json", str(tmp_path)]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows["live"]["status"] == "running" and rows["live"]["live"]
    assert rows["live"]["pid"] == os.getpid()
    assert (rows["live"]["step"], rows["live"]["total_steps"]) == (3, 8)
    assert rows["live"]["last_loss"] == pytest.approx(1 / 3)
    assert rows["killed"]["status"] == "interrupted" and not rows["killed"]["live"]
    assert rows["killed"]["pid"] is None
    # the newest complete checkpoint is what to resume the killed run from
    for name in ("checkpoint-step-2", "checkpoint-step-3"):
        ckpt = killed / name
        (ckpt / "adapter").mkdir(parents=True)
        (ckpt / "training_state.pt").write_bytes(b"")
    (killed / "checkpoint-step-3" / "COMPLETE").write_text("")
    (killed / "checkpoint-step-2" / "COMPLETE").write_text("")
    (killed / "checkpoint-step-9").mkdir()  # a save killed before its marker
    assert main(["--plain", "runs", str(live), str(killed)]) == 0
    header, *lines, hint = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "checkpoint"
    # ... and the command that does it, ready to paste (the table gave only the folder's name)
    assert hint == (f"{killed} is interrupted; go on with: sidestep fixed --resume-from "
                    f"{killed / 'checkpoint-step-3'}")
    row = {line.split()[0]: line.split() for line in lines}
    assert row[str(killed)][1] == "interrupted" and row[str(killed)][-1] == "checkpoint-step-3"
    assert row[str(live)][1] == "running" and row[str(live)][4] == "3/8"
    assert row[str(live)][-1] == "-"


def test_runs_finds_the_settings_output_root(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "output" / "a", _dead_pid(), status="completed")
    assert main(["--plain", "runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert row["status"] == "completed"
    # more finished runs than --limit: it says how many are not shown, and how to see them
    for name in ("b", "c"):
        _fake_run(tmp_path / "output" / name, _dead_pid(), status="completed")
    assert main(["--plain", "runs", "--limit", "2"]) == 0
    assert "1 older run not shown: --limit 0 lists every run" in capsys.readouterr().out


def test_control_commands_refuse_runs_that_are_not_live(tmp_path, capsys):
    killed = _fake_run(tmp_path / "killed", _dead_pid())
    (killed / CONTROL_DIR).mkdir()
    assert main(["stop", str(killed)]) == 2
    err = capsys.readouterr().err
    assert "not running (status: interrupted (its process is gone))" in err
    assert not list((killed / CONTROL_DIR).iterdir())  # nothing was sent
    assert main(["pause", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")  # a file is not called missing
    assert main(["stop", str(tmp_path / "afile")]) == 2
    assert f"{tmp_path / 'afile'}: is a file; give a run folder" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "afile")]) == 2
    assert f"{tmp_path / 'afile'}: is a file; give run folders" in capsys.readouterr().err
    assert main(["attach", str(killed)]) == 2
    assert main(["save", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_resume_of_a_running_run_and_pause_of_a_paused_one_exit_1(tmp_path, capsys):
    """The help and README say exit 1 when the run did not do it: `resume` of a run that was
    not paused printed "the run was not paused" and exited 0."""
    run = _fake_run(tmp_path / "live", os.getpid())
    with MiniRun(run):
        assert main(["--plain", "resume", "--wait", "10", str(run)]) == 1
        assert "resume: the run was not paused; nothing to resume" in capsys.readouterr().err
        assert main(["--plain", "pause", "--wait", "10", str(run)]) == 0
        capsys.readouterr()
        assert main(["--plain", "pause", "--wait", "10", str(run)]) == 1
        assert "pause: already paused at step" in capsys.readouterr().err
        assert main(["--plain", "resume", "--wait", "10", str(run)]) == 0


def test_a_command_nobody_reads_times_out_and_stays_queued(tmp_path, capsys):
    run = _fake_run(tmp_path / "live", os.getpid())  # "live", but no watcher
    (run / CONTROL_DIR).mkdir()
    assert main(["save", "--wait", "0.3", str(run)]) == 1
    assert "has not read the command" in capsys.readouterr().err
    assert len(list((run / CONTROL_DIR).glob("*.json"))) == 1


def test_wait_0_sends_and_exits_1_as_the_help_says(tmp_path, capsys):
    """`pause --wait 0` exited 0, though the run was not seen to pause: the help says 1."""
    run = _fake_run(tmp_path / "live", os.getpid())  # "live", but no watcher
    (run / CONTROL_DIR).mkdir()
    assert main(["--plain", "pause", "--wait", "0", str(run)]) == 1
    assert f"sent pause to {run} (--wait 0: not waiting for it)" in capsys.readouterr().out
    assert len(list((run / CONTROL_DIR).glob("*.json"))) == 1  # it stays queued
    with pytest.raises(SystemExit):
        main(["pause", "--help"])
    assert "exit 1 unless the run had already acted" in " ".join(capsys.readouterr().out.split())


def test_a_corrupt_run_json_is_called_corrupt_not_missing(tmp_path, capsys):
    from conftest import tree_hash

    run = _fake_run(tmp_path / "run", os.getpid())
    (run / "run.json").write_text('{"status": "running", "pid": ')  # cut short
    before = tree_hash(tmp_path)
    for command in ("pause", "stop", "attach"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert f"{run / 'run.json'}: unreadable (not valid JSON" in err, err
        assert "no run.json" not in err
    assert tree_hash(tmp_path) == before


# -- the notify command ---------------------------------------------------------------------------
def test_notify_runs_with_the_run_in_its_environment(tmp_path):
    out = tmp_path / "env.json"
    sink = NotifySink(f"python3 -c 'import json,os; json.dump(dict(os.environ), "
                      f"open(\"{out}\", \"w\"))'", tmp_path / "run")
    sink.handle(Problem(kind="oom", message="out of memory 3 times", remedy="lower it",
                        fatal=True))
    sink.handle(RunFinished(status="failed", step=12, epoch=3, error="x",
                            checkpoint_path="/r/checkpoint-step-12"))
    sink.close()
    env = json.loads(out.read_text())
    assert env["SIDESTEP_STATUS"] == "failed"
    assert env["SIDESTEP_RUN_DIR"] == str((tmp_path / "run").resolve())
    assert (env["SIDESTEP_STEP"], env["SIDESTEP_EPOCH"]) == ("12", "3")
    assert env["SIDESTEP_ERROR"] == "out of memory 3 times (try: lower it)"
    assert env["SIDESTEP_CHECKPOINT"] == "/r/checkpoint-step-12"


def test_notify_failures_and_hangs_are_warnings_never_errors(tmp_path, caplog):
    done = RunFinished(status="completed", step=4, epoch=2, adapter_path="/a")
    failing = NotifySink("echo oops; exit 3", tmp_path)
    failing.handle(done)
    hanging = NotifySink("sleep 30", tmp_path, timeout=0.3)
    hanging.handle(done)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="sidestep.engine"):
        failing.close()
        hanging.close()
    assert time.monotonic() - t0 < 10
    text = caplog.text
    assert "exited with 3" in text and "oops" in text
    assert "stopped after 0 s" in text
    silent = NotifySink("exit 0", tmp_path)
    silent.close()  # no run_finished: nothing to say, nothing run


def test_liveness_of_a_run_resumed_in_its_own_folder(tmp_path):
    """A resumed run appends to its predecessor's events.jsonl, run_finished included: the
    process decides, and only an end this process logged counts once it is gone."""
    from sidestep.engine.run_dir import summarize

    run = _fake_run(tmp_path / "run", os.getpid())
    info = json.loads((run / "run.json").read_text())
    earlier = {"type": "run_finished", "status": "stopped", "step": 3,
               "time": info["started_at"] - 60}
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps(earlier) + "\n")
    assert summarize(run).status == "running"
    (run / "run.json").write_text(json.dumps(dict(info, pid=_dead_pid())))
    assert summarize(run).status == "interrupted"
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps(dict(earlier, status="completed", time=time.time())) + "\n")
    assert summarize(run).status == "completed"


def test_a_detached_resume_may_use_a_new_folder_holding_only_its_console_log(tmp_path):
    from sidestep.engine.run_dir import CONSOLE_LOG, RunDirError, check_output_dir

    new = tmp_path / "new"
    new.mkdir()
    (new / CONSOLE_LOG).write_text("started in the background\n")
    check_output_dir(new, str(tmp_path / "old" / "checkpoint-step-3"))
    (new / "other.txt").write_text("")
    with pytest.raises(RunDirError, match="holds other files"):
        check_output_dir(new, str(tmp_path / "old" / "checkpoint-step-3"))


def test_attach_follows_the_file_and_ends_with_the_run(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", os.getpid())  # this process stands in for the run
    result = {}
    view = threading.Thread(target=lambda: result.update(
        code=main(["--plain", "attach", str(run)])))
    view.start()
    time.sleep(0.5)
    later = [{"type": "step", "step": 4, "epoch": 2, "loss": 0.2, "lr": 1e-4},
             {"type": "paused", "step": 4}, {"type": "resumed", "step": 4},
             {"type": "run_finished", "status": "stopped", "step": 4, "epoch": 1,
              "checkpoint_path": str(run / "checkpoint-step-4")}]
    with open(run / "events.jsonl", "a") as fh:
        for line in later:
            fh.write(json.dumps(dict(line, time=time.time())) + "\n")
            fh.flush()
            time.sleep(0.05)
    view.join(20)
    assert result["code"] == 130  # as the run ended: stopped
    shown = capsys.readouterr().out
    assert f"attached to {run} (pid {os.getpid()})" in shown
    assert "step 3/8 epoch 2/4" in shown and "step 4/8 epoch 2/4" in shown  # then, and live
    assert "paused at step 4" in shown and "resumed at step 4" in shown
    assert f"resume with: sidestep fixed --resume-from {run / 'checkpoint-step-4'}" \
        in shown


def test_attach_catches_up_in_the_order_the_run_went(tmp_path, capsys):
    """The newest step, then the epoch it ended (the epoch's line came first)."""
    run = _fake_run(tmp_path / "run", _dead_pid(), status="completed", steps=2)
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"type": "epoch_end", "epoch": 1, "step": 2, "mean_loss": 0.75,
                             "seconds": 1.0, "time": time.time()}) + "\n")
        fh.write(json.dumps({"type": "run_finished", "status": "completed", "step": 2,
                             "epoch": 1, "adapter_path": str(run / "final"),
                             "time": time.time()}) + "\n")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()),
                                              "status": "running", "pid": os.getpid()}))
    assert main(["--plain", "attach", str(run)]) == 0
    shown = capsys.readouterr().out
    step, epoch = shown.index("step 2/8"), shown.index("mean loss 0.75")
    assert step < epoch, shown
