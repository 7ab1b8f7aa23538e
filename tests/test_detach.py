"""Runs that outlive the terminal, with real processes: ``--detach`` from a terminal that is
then closed, ``runs``, ``attach``, the control commands and ``--notify-command`` on a live
run, and a detached run killed with -9."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from sidestep.cli import main
from sidestep.cli.detach import child_argv
from sidestep.engine.checkpointing import is_complete, list_checkpoints
from sidestep.engine.control_channel import CONTROL_DIR, read_ack, send
from test_control_channel import block

SIDESTEP = Path(sys.executable).parent / "sidestep"


def _argv(demo_root, tensors, out, *extra) -> list[str]:
    # long enough to watch (2 steps an epoch), and no epoch checkpoints to slow it
    return [str(SIDESTEP), "-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--dataset-dir", str(tensors), "--output-dir", str(out), "--epochs", "2000",
            "--save-every", "2000", "--device", "cpu", "--num-workers", "0", "--log-every",
            "1", "--rank", "4", "--alpha", "8", "--detach", *extra]


def _steps(out: Path) -> int:
    try:
        text = (out / "events.jsonl").read_text()
    except OSError:
        return 0
    return text.count('{"type": "step"')


def _info(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is not training
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


def _runs(cwd: Path, *dirs) -> dict:
    proc = subprocess.run([str(SIDESTEP), "runs", "--json", *map(str, dirs)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {Path(r["path"]).name: r for r in json.loads(proc.stdout)["runs"]}


class Terminal:
    """A terminal that runs one shell command and can then be closed: tmux where it is
    installed, else a pseudo-terminal whose session the command leads."""

    def __init__(self, command: str, cwd: Path):
        self.socket = f"sidestep-test-{os.getpid()}-{time.monotonic_ns()}"
        self.proc = None
        self.open = True
        if shutil.which("tmux"):
            subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
                            "-s", "run", "-x", "160", "-y", "50", "-c", str(cwd),
                            f"{command}; sleep 600"], check=True, timeout=30)
        else:
            self.master, slave = os.openpty()
            self.proc = subprocess.Popen(["/bin/sh", "-c", f"{command}; sleep 600"],
                                         stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                         start_new_session=True,
                                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY,
                                                                        0))
            os.close(slave)

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        if self.proc is None:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], timeout=30)
            return
        os.close(self.master)  # hang-up: the session's processes get SIGHUP
        try:
            os.killpg(self.proc.pid, signal.SIGHUP)
        except OSError:
            pass
        self.proc.wait(30)


def test_the_child_runs_the_same_command_without_detach():
    argv = child_argv(["--plain", "fixed", "--epochs", "3", "--detach", "--notify-command",
                       "echo --detach"])
    assert argv[:3] == [sys.executable, "-m", "sidestep"]
    assert "--detach" not in argv and argv[-1] == "--no-detach"
    assert "-y" in argv[:6] and "echo --detach" in argv
    # the switches it adds are not repeated from the user's own (`-y --plain fixed`)
    argv = child_argv(["-y", "--plain", "--yes", "fixed", "--detach", "--seed", "4"])
    assert argv[3:] == ["--plain", "-y", "fixed", "--seed", "4", "--no-detach"]


def test_detach_with_bad_input_is_refused_before_anything_is_made(demo_root, tmp_path,
                                                                   capsys):
    out = tmp_path / "out"
    code = main(["-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                 "--dataset-dir", str(tmp_path / "no-such-tensors"), "--output-dir",
                 str(out), "--detach"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-tensors" in err and "Traceback" not in err
    assert not out.exists()
    # a validation split that leaves nothing to train on is found before the process starts
    import shutil

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted((demo_root / "tensors").glob("*.pt"))[0], one)
    code = main(["-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                 "--dataset-dir", str(one), "--output-dir", str(out), "--val-split", "0.5",
                 "--detach"])
    assert code == 2 and "--val-split" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_detached_run_outlives_its_terminal_and_obeys_commands(demo_root, small_tensors,
                                                                 tmp_path):
    out = tmp_path / "run"
    notified = tmp_path / "notified.txt"
    command = shlex.join(_argv(demo_root, small_tensors, out, "--notify-command",
                               f"env | grep ^SIDESTEP_ > {notified}"))
    terminal = Terminal(command, tmp_path)
    pid = None
    try:
        _until(lambda: _steps(out) >= 2, 240, "the first steps", out)
        pid = _info(out)["pid"]
        terminal.close()  # the terminal is gone; the run is not
        gone_at = _steps(out)
        _until(lambda: _steps(out) >= gone_at + 3, 60, "steps after the terminal closed", out)
        assert _alive(pid) and _info(out)["status"] == "running"

        row = _runs(tmp_path, out)["run"]
        assert (row["status"], row["live"], row["pid"]) == ("running", True, pid)
        assert row["step"] >= gone_at and row["last_loss"] is not None

        # attach shows steps; ctrl+c leaves the run training
        view = subprocess.Popen([str(SIDESTEP), "--plain", "attach", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(view.stdout), daemon=True)
        reader.start()
        try:  # the newest step, then live ones as the run writes them
            _until(lambda: sum(line.startswith("step ") for line in seen) >= 3, 60,
                   "steps in attach's view", out)
            view.send_signal(signal.SIGINT)
            view.wait(30)
            reader.join(10)
        finally:
            if view.poll() is None:
                view.kill()
        said = "".join(seen)
        assert view.returncode == 0, said
        assert said.startswith(f"attached to {out} (pid {pid})")
        assert "detached; the run keeps training" in said and "Traceback" not in said
        after_attach = _steps(out)
        _until(lambda: _steps(out) > after_attach + 1, 60, "steps after attach left", out)

        # pause and resume sent at once: both take effect, in that order
        pause, resume = send(out, "pause"), send(out, "resume")
        for name in (pause, resume):
            _until(lambda n=name: (read_ack(out, n) or {}).get("state") == "done", 60,
                   f"the answer to {name}", out)
        assert read_ack(out, pause)["message"].startswith("paused at step")
        assert read_ack(out, resume)["message"].startswith("resumed at step")
        kinds = [json.loads(line)["type"] for line in
                 (out / "events.jsonl").read_text().splitlines()]
        assert kinds.index("paused") < kinds.index("resumed")

        # a control folder the run cannot be reached through: exit 2, run unaffected
        control = out / CONTROL_DIR
        block(control)
        try:
            blocked = subprocess.run([str(SIDESTEP), "stop", str(out)], capture_output=True,
                                     text=True, timeout=60)
        finally:
            control.unlink()  # the run makes the folder again
        _until(lambda: (control / "acks").is_dir(), 30, "the control folder again", out)
        assert blocked.returncode == 2
        assert "is not a folder" in blocked.stderr and "Traceback" not in blocked.stderr
        before = _steps(out)
        _until(lambda: _steps(out) > before, 60, "steps after the refused stop", out)
        assert _alive(pid)

        saved_now = subprocess.run([str(SIDESTEP), "save", str(out)], capture_output=True,
                                   text=True, timeout=120)
        assert saved_now.returncode == 0, saved_now.stderr
        assert saved_now.stdout.startswith(f"save: saved {out}/checkpoint-step-")

        # save and stop at once: both answered, a complete checkpoint, status stopped
        save = send(out, "save")
        stop = subprocess.run([str(SIDESTEP), "stop", str(out)], capture_output=True,
                              text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stop: stopped at step" in stop.stdout and "--resume-from" in stop.stdout
        _until(lambda: (read_ack(out, save) or {}).get("state") == "done", 30,
               "the answer to save", out)
        _until(lambda: not _alive(pid), 60, "the run's process to end", out)
        assert _info(out)["status"] == "stopped"
        saved = list_checkpoints(out)
        assert saved and is_complete(saved[-1])
        assert "Traceback" not in (out / "console.log").read_text()
        row = _runs(tmp_path, out)["run"]
        assert (row["status"], row["live"]) == ("stopped", False)

        env = dict(line.split("=", 1) for line in notified.read_text().splitlines())
        assert env["SIDESTEP_STATUS"] == "stopped"
        assert Path(env["SIDESTEP_RUN_DIR"]) == out.resolve()
        assert int(env["SIDESTEP_STEP"]) == _info(out)["last_step"]
        assert env["SIDESTEP_EPOCH"] == str(_info(out)["last_epoch"])
        assert env["SIDESTEP_CHECKPOINT"] == str(saved[-1])
    finally:
        terminal.close()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_detached_run_killed_hard_shows_interrupted(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    launch = subprocess.run(_argv(demo_root, small_tensors, out), capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert launch.returncode == 0, launch.stderr
    assert f"started in the background: {out}" in launch.stdout
    pid = int(launch.stdout.split("(pid ")[1].split(")")[0])
    try:
        starting = _runs(tmp_path)  # before run.json: known from the detached-start record
        assert starting["run"]["status"] in ("starting", "running")
        _until(lambda: _steps(out) >= 1, 240, "the first step", out)
        assert _info(out)["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        _until(lambda: not _alive(pid), 30, "the kill")
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert _info(out)["status"] == "running"  # what the file says; the process says otherwise
    row = _runs(tmp_path)["run"]
    assert (row["status"], row["live"], row["pid"]) == ("interrupted", False, None)
    refused = subprocess.run([str(SIDESTEP), "pause", str(out)], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    assert "not running (status: interrupted" in refused.stderr


def test_a_detached_start_whose_model_does_not_load_says_why_and_leaves_nothing(
        demo_root, small_tensors, tmp_path):
    """Weights that do not load are found only once the run loads them: --detach said
    "started in the background", exit 0, and left a folder whose console.log held the error.
    It waits for the run to begin training, and a start that ends first is an error (exit 2,
    nothing left), as in the foreground."""
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(demo_root / "checkpoints", checkpoints, symlinks=True)
    for weights in (checkpoints / "acestep-v15-turbo").glob("*.safetensors"):
        weights.unlink()
        weights.write_bytes(b"not a safetensors file")
    out = tmp_path / "run"
    argv = _argv(demo_root, small_tensors, out)
    argv[argv.index("--checkpoint-dir") + 1] = str(checkpoints)
    launch = subprocess.run(argv, capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert launch.returncode == 2, (launch.stdout, launch.stderr)
    assert "model.safetensors" in launch.stderr and "Traceback" not in launch.stderr
    assert "started in the background" not in launch.stdout
    assert not out.exists()


def test_a_resume_into_its_own_folder_waits_for_its_own_start(tmp_path):
    """The folder of a run resumed in place already holds that run's run_started and maybe an
    error line from long ago: --detach took the old event as this start and said "started"
    for a resume that then failed. Only what the new process writes counts."""
    from sidestep.cli.detach import _await_start

    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text('{"type": "run_started", "time": 1}\n')
    (run / "console.log").write_text("error: an old failure\n")
    events, log = (run / "events.jsonl").stat().st_size, (run / "console.log").stat().st_size
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); "
                              f"open({str(run / 'console.log')!r}, 'a').write("
                              "'error: weights do not load\\n')"])
    assert _await_start(run, child.pid, events, log) == "weights do not load"
    child.wait(10)
    # and one that begins training is seen as started
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); "
                              f"open({str(run / 'events.jsonl')!r}, 'a').write("
                              "'{\"type\": \"run_started\", \"time\": 2}\\n'); time.sleep(5)"])
    try:
        assert _await_start(run, child.pid, events, log) is None
    finally:
        child.kill()
        child.wait(10)
