"""The user's run folders are sacred: a refused or failed start changes nothing that was there,
resume writes only into its own run or a new folder, and a run killed hard shows as interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import train_config
from sidestep.cli import main
from sidestep.engine.run_dir import (RunDirError, check_output_dir, find_runs, run_is_alive,
                                     summarize)
from sidestep.engine.trainer import Trainer


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its bytes' hash and its mode."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            out[rel] = f"dir {path.stat().st_mode:o}"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + \
                f" {path.stat().st_mode:o}"
    return out


@pytest.fixture(scope="module")
def two_runs(demo_root, small_tensors, tmp_path_factory):
    """Run A (stopped-able: it keeps checkpoint-epoch-1) and run B, both completed."""
    root = tmp_path_factory.mktemp("runs")
    for name in ("A", "B"):
        result = Trainer(train_config(demo_root, small_tensors, root / name, epochs=2)).run()
        assert result.status == "completed", result.error
    return root


def cli(*argv: str) -> int:
    return main(["--plain", "-y", *argv])


def train_flags(demo_root, tensors, out, *extra):
    return ["fixed", "--checkpoint-dir", str(demo_root / "checkpoints"), "--dataset-dir",
            str(tensors), "--output-dir", str(out), "--device", "cpu", "--epochs", "2",
            "--num-workers", "0", "--rank", "4", "--alpha", "8", *extra]


def test_resume_into_another_runs_folder_is_refused(two_runs, demo_root, small_tensors,
                                                    capsys):
    a, b = two_runs / "A", two_runs / "B"
    before = tree_hash(two_runs)
    code = cli(*train_flags(demo_root, small_tensors, b, "--resume-from",
                            str(a / "checkpoint-epoch-1")))
    assert code == 2
    err = capsys.readouterr().err
    assert str(b) in err and "resume into that folder" in err and "Traceback" not in err
    assert tree_hash(two_runs) == before
    # the engine refuses too (the app starts runs through it, not the CLI)
    result = Trainer(train_config(demo_root, small_tensors, b, epochs=3,
                                  resume_from=str(a / "checkpoint-epoch-1"))).run()
    assert result.status == "failed" and result.error_kind == "input"
    assert tree_hash(two_runs) == before


def test_refused_start_leaves_the_completed_run_unchanged(two_runs, demo_root, small_tensors,
                                                          capsys):
    b = two_runs / "B"
    before = tree_hash(two_runs)
    assert cli(*train_flags(demo_root, small_tensors, b)) == 2
    assert "already holds a run (status: completed)" in capsys.readouterr().err
    result = Trainer(train_config(demo_root, small_tensors, b, epochs=1)).run()
    assert result.status == "failed" and "already holds a run" in result.error
    assert tree_hash(two_runs) == before
    assert json.loads((b / "run.json").read_text())["status"] == "completed"


def test_resume_writes_into_its_own_folder_or_a_new_one(two_runs, demo_root, small_tensors,
                                                        tmp_path):
    a = two_runs / "A"
    check_output_dir(a, str(a / "checkpoint-epoch-2"))  # its own run's newest: allowed
    # going back in place would overwrite checkpoint-epoch-2, best/ and final/: a branch goes
    # into a new folder (a resume from epoch 1 of a copied, completed run replaced them all)
    before = tree_hash(a)
    with pytest.raises(RunDirError, match=r"went on past it \(checkpoint-epoch-2\).*"
                                          r"Resume from checkpoint-epoch-2.*new --output-dir"):
        check_output_dir(a, str(a / "checkpoint-epoch-1"))
    assert tree_hash(a) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_dir(empty, str(a / "checkpoint-epoch-1"))
    check_output_dir(tmp_path / "new" / "deeper", str(a / "checkpoint-epoch-1"))
    (empty / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="new or empty --output-dir"):
        check_output_dir(empty, str(a / "checkpoint-epoch-1"))


@pytest.mark.parametrize("broken", ["dataset", "device", "checkpoint", "weights"])
def test_a_failed_start_leaves_nothing_and_the_folder_stays_usable(
        broken, demo_root, small_tensors, tmp_path, capsys):
    """A typo in any path or setting: exit 2, nothing written, and the corrected command then
    runs in the same folder (nor does the failed start show up in History)."""
    checkpoints = demo_root / "checkpoints"
    tensors, device = small_tensors, "cpu"
    if broken == "dataset":
        tensors = tmp_path / "no-such-tensors"
    elif broken == "device":
        device = "cuda:7"
    elif broken == "checkpoint":
        checkpoints = tmp_path / "no-checkpoints"
    else:  # weights that do not load: found only after the folder was claimed
        checkpoints = tmp_path / "checkpoints"
        shutil.copytree(demo_root / "checkpoints", checkpoints, symlinks=True)
        for weights in (checkpoints / "acestep-v15-turbo").glob("*.safetensors"):
            weights.write_bytes(b"not a safetensors file")
    out = tmp_path / "output" / "my_lora"
    argv = train_flags(demo_root, tensors, out)
    argv[argv.index("--checkpoint-dir") + 1] = str(checkpoints)
    argv[argv.index("--device") + 1] = device
    assert cli(*argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err
    if broken in ("dataset", "checkpoint"):  # refused before the summary and the estimate
        assert "Side-Step training" not in captured.out and "VRAM" not in captured.out
    assert err.count("error: ") == 1, err  # said once, not by the log, the event and the exit
    assert not (tmp_path / "output").exists(), list((tmp_path / "output").rglob("*"))
    assert find_runs([tmp_path]) == []
    # the same folder, once it already exists (empty: a run needs a new or empty folder)
    out.mkdir(parents=True)
    assert cli(*argv) == 2
    assert list(out.iterdir()) == []
    # a folder holding anything else is refused before anything is written, naming what it
    # holds: a run mixed into a songs, tensors or checkpoint folder is hard to take out
    (out / "notes.txt").write_text("mine")
    before = tree_hash(tmp_path / "output")
    capsys.readouterr()
    assert cli(*train_flags(demo_root, small_tensors, out, "--epochs", "1")) == 2
    assert "is not empty (it holds notes.txt)" in capsys.readouterr().err
    assert tree_hash(tmp_path / "output") == before
    (out / "notes.txt").unlink()
    assert cli(*train_flags(demo_root, small_tensors, out, "--epochs", "1")) == 0
    assert (out / "final" / "adapter").is_dir()


def test_a_failed_resume_leaves_its_run_as_it_was(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    assert Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run().status == \
        "completed"
    before = tree_hash(out)
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=2, adapter_type="lokr",
                                  resume_from=str(out / "checkpoint-epoch-1"))).run()
    assert result.status == "failed" and "--adapter-type lokr" in result.error
    assert tree_hash(out) == before


def test_leftovers_of_an_older_failed_start_do_not_block_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "failed", "pid": 1, "host": "x"}))
    (out / "events.jsonl").write_text(json.dumps({"type": "log", "message": "x"}) + "\n")
    check_output_dir(out, None)
    (out / "events.jsonl").write_text(json.dumps({"type": "step", "step": 1}) + "\n")
    with pytest.raises(RunDirError, match="already holds a run"):
        check_output_dir(out, None)


def test_run_json_has_the_mode_of_the_other_files(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    assert Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run().status == \
        "completed"
    info = json.loads((out / "run.json").read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["heartbeat_at"] >= info["started_at"]
    mode = (out / "run.json").stat().st_mode & 0o777
    assert mode == (out / "events.jsonl").stat().st_mode & 0o777
    assert mode & 0o044  # readable by others, like every file the umask lets be


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_whose_process_is_gone_shows_interrupted(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-step-3").mkdir(parents=True)
    for name in ("COMPLETE", "training_state.pt"):
        (run / "checkpoint-step-3" / name).write_text("3")
    (run / "checkpoint-step-3" / "adapter").mkdir()
    here = socket.gethostname()
    info = {"status": "running", "pid": _dead_pid(), "host": here, "started_at": time.time()}
    (run / "run.json").write_text(json.dumps(info))
    summary = summarize(run)
    assert summary.status == "interrupted"
    assert summary.latest_checkpoint == run / "checkpoint-step-3"
    with pytest.raises(RunDirError, match="status: interrupted"):
        check_output_dir(run, None)
    check_output_dir(run, str(run / "checkpoint-step-3"))  # resuming it is allowed

    # a live process (this one) is running, and its folder is refused even for resume
    (run / "run.json").write_text(json.dumps(dict(info, pid=os.getpid())))
    assert summarize(run).status == "running"
    with pytest.raises(RunDirError, match="in progress"):
        check_output_dir(run, str(run / "checkpoint-step-3"))

    # another host: judged by its heartbeat
    other = dict(info, host=here + "-elsewhere", heartbeat_at=time.time())
    assert run_is_alive(other)
    assert not run_is_alive(dict(other, heartbeat_at=time.time() - 3600))
    # a run.json from before pids were recorded: judged by its files' age
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    old = time.time() - 3600
    for path in run.iterdir():
        os.utime(path, (old, old))
    assert summarize(run).status == "interrupted"


def test_tensorboard_logs_the_learning_rate_the_console_shows(demo_root, small_tensors,
                                                              tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import Recorder

    rec = Recorder()
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, epochs=1, warmup_steps=2,
                       learning_rate=1e-3)
    assert Trainer(cfg, [rec]).run().status == "completed"
    shown = {e.step: e.lr for e in rec.of("step")}
    acc = EventAccumulator(str(out / "runs"))
    acc.Reload()
    logged = {s.step: s.value for s in acc.Scalars("lr")}
    assert logged.keys() == shown.keys() and shown[1] == pytest.approx(1e-4)
    for step, lr in shown.items():
        assert logged[step] == pytest.approx(lr, rel=1e-6)


def test_a_run_stopped_before_its_first_step_keeps_nothing(demo_root, small_tensors, tmp_path):
    """`sidestep fixed ... | head -1` closes the pipe before training starts: the run stops with
    nothing trained, so it leaves no checkpoint-step-0 that would block the folder."""
    from sidestep.engine.control import Control

    control = Control()
    control.request_stop("output closed")
    out = tmp_path / "run"
    result = Trainer(train_config(demo_root, small_tensors, out, epochs=1), [], control).run()
    assert result.status == "stopped" and result.checkpoint_path is None
    assert not out.exists()
    assert Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run().status == \
        "completed"


def test_every_view_counts_the_epochs_a_run_has_completed(tmp_path, capsys):
    """A live run in its third epoch has completed two: `sidestep runs`, the dashboard's live
    row and History (the summary) all say 2/5, as they do once it has ended."""
    from sidestep.engine.events import EpochEnded, RunStarted, StepMetrics, to_json
    from sidestep.engine.live_runs import run_rows
    from sidestep.tui.screens.dashboard import live_cells

    run = tmp_path / "runs" / "song"
    run.mkdir(parents=True)
    events = [RunStarted(run_dir=str(run), config={"epochs": 5}, device="cpu",
                         precision="fp32", model="m", adapter_type="lora", trainable_params=1,
                         dataset_size=2, steps_per_epoch=2, total_steps=10, total_epochs=5)]
    for epoch in (1, 2):
        events += [StepMetrics(step=2 * epoch - 1, epoch=epoch, loss=0.5, lr=1e-4),
                   StepMetrics(step=2 * epoch, epoch=epoch, loss=0.4, lr=1e-4),
                   EpochEnded(epoch=epoch, step=2 * epoch, mean_loss=0.45, seconds=1.0)]
    events.append(StepMetrics(step=5, epoch=3, loss=0.3, lr=1e-4))  # the third is under way
    (run / "events.jsonl").write_text("".join(to_json(e) + "\n" for e in events))
    (run / "run.json").write_text(json.dumps({
        "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
        "started_at": time.time(), "config": {"epochs": 5}}))

    assert summarize(run).epochs_done == 2  # History's "epochs" column
    (row,) = run_rows([tmp_path / "runs"])
    assert row["live"] and row["epoch"] == 3 and row["epochs_done"] == 2
    assert live_cells(row)[2] == "2/5"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "epochs" in out.splitlines()[0] and " 2/5 " in out and " 5/10 " in out
    # the run stops there: the monitor of it (History's Open curves) says 2 done, not "3/5"
    from sidestep.engine.events import RunFinished
    from sidestep.tui.state import RunState

    with open(run / "events.jsonl", "a") as fh:
        fh.write(to_json(RunFinished(status="stopped", step=5, epoch=2)) + "\n")
    state = RunState.from_run_dir(run)
    assert not state.active and state.epochs_done == 2 and state.epoch == 3


def test_training_into_the_dataset_or_checkpoint_folder_is_refused(demo_root, small_tensors,
                                                                    tmp_path, capsys):
    """--output-dir pointed at the tensors or the checkpoint root (a slip of the tab key):
    exit 2 and neither folder changes."""
    tensors = tmp_path / "tensors"
    shutil.copytree(small_tensors, tensors)
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(demo_root / "checkpoints", checkpoints, symlinks=True)
    before = tree_hash(tmp_path)
    for out in (tensors, checkpoints):
        argv = train_flags(demo_root, tensors, out)
        argv[argv.index("--checkpoint-dir") + 1] = str(checkpoints)
        assert cli(*argv) == 2
        err = capsys.readouterr().err
        assert f"{out}: is not empty" in err and "Traceback" not in err
    assert tree_hash(tmp_path) == before


def test_resume_mistakes_are_named_and_a_finished_run_is_left_alone(demo_root, small_tensors,
                                                                    tmp_path, capsys,
                                                                    monkeypatch):
    """From a relative folder, as a user types it: run.json keeps absolute paths; --resume-from
    given the run folder, its final adapter or a missing path says what to give instead;
    resuming a finished run with the same --epochs is refused and changes nothing; without
    --output-dir a resume continues in the checkpoint's own folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_tensors, "tensors")
    flags = ["fixed", "--checkpoint-dir", str(demo_root / "checkpoints"), "--dataset-dir",
             "tensors", "--device", "cpu", "--num-workers", "0", "--rank", "4", "--alpha", "8",
             "--save-every", "1"]
    assert cli(*flags, "--output-dir", "out/song", "--epochs", "1") == 0
    run = tmp_path / "out" / "song"
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["dataset_dir"] == str(tmp_path / "tensors")
    assert info["config"]["output_dir"] == str(run)
    assert Path(info["adapter_path"]).is_absolute()
    (ckpt,) = run.glob("checkpoint-*")
    capsys.readouterr()
    before = tree_hash(tmp_path / "out")
    cases = {"out/song": f"is a run folder, not one of its checkpoints; resume from its "
                         f"newest checkpoint, out/song/{ckpt.name}",
             "out/song/final": "holds an adapter, not a training checkpoint",
             "out/nothere": "out/nothere: checkpoint folder not found",
             f"out/song/{ckpt.name}/adapter": "is the adapter inside a checkpoint; resume "
                                              f"from the checkpoint itself, out/song/{ckpt.name}",
             "tensors": "tensors: not a checkpoint; give one of a run's checkpoint folders",
             str(ckpt): "that run has already trained 1 epoch (--epochs 1); raise --epochs "
                        "above 1"}

    def times():  # a refusal after the folder was claimed rewrote the same bytes
        return {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}

    stamps = times()
    for given, says in cases.items():
        assert cli(*flags, "--resume-from", given, "--epochs", "1") == 2, given
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
        assert tree_hash(tmp_path / "out") == before, given
        assert times() == stamps, given
    # no --output-dir: the checkpoint's own run folder
    assert cli(*flags, "--resume-from", str(ckpt), "--epochs", "2") == 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["last_epoch"] == 2
    assert info["resumed_from"] == str(ckpt)


def test_the_resume_command_is_ready_to_paste(tmp_path):
    """Every "resume with" line names the run's mode and quotes the path: a bare
    `--resume-from /runs/my song/checkpoint-step-4` was neither a command nor one argument."""
    from sidestep.engine.run_dir import resume_command

    run = tmp_path / "my song"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"mode": "vanilla"}}))
    ckpt = run / "checkpoint-step-4"
    assert resume_command(ckpt) == f"sidestep vanilla --resume-from '{ckpt}'"
    assert resume_command(ckpt, "selective") == f"sidestep selective --resume-from '{ckpt}'"
    # a run folder that cannot say: the default mode
    assert resume_command(tmp_path / "gone" / "checkpoint-step-1") == \
        f"sidestep fixed --resume-from {tmp_path / 'gone' / 'checkpoint-step-1'}"


def test_the_resume_command_starts_as_the_tool_was_started(tmp_path, monkeypatch):
    """Started with `uv run` (the README's way), `sidestep` alone is not on PATH."""
    from sidestep.engine.run_dir import resume_command

    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")
    assert resume_command(tmp_path / "c", "fixed") == \
        f"uv run sidestep fixed --resume-from {tmp_path / 'c'}"


def test_the_resume_command_names_the_script_when_its_venv_is_not_on_path(tmp_path,
                                                                        monkeypatch):
    """Started as `.venv/bin/sidestep ...` from a shell without the venv on PATH, a bare
    `sidestep fixed --resume-from ...` answered 'command not found'."""
    import os
    import sys

    from sidestep.engine.run_dir import resume_command

    venv_bin = os.path.dirname(sys.executable)
    script = os.path.join(venv_bin, "sidestep")
    if not os.path.exists(script):
        pytest.skip("the tests' Python has no sidestep script beside it")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resume_command(tmp_path / "c", "fixed") == \
        f"{script} fixed --resume-from {tmp_path / 'c'}"
    monkeypatch.setenv("PATH", venv_bin)
    assert resume_command(tmp_path / "c", "fixed") == \
        f"sidestep fixed --resume-from {tmp_path / 'c'}"


def test_a_run_outside_the_output_root_is_found_again(demo_root, small_tensors, tmp_path,
                                                      in_tmp_cwd, capsys):
    """A run given another --output-dir vanished from History and `sidestep runs` once the
    app that started it had quit: every run's folder is noted when it starts."""
    from sidestep.cli.runs_cmd import default_roots
    from sidestep.engine.run_dir import find_runs
    from conftest import make_app

    out = tmp_path / "elsewhere" / "song-lora"
    assert Trainer(train_config(demo_root, small_tensors, out, epochs=1)).run().status == \
        "completed"
    assert out in [r.path for r in find_runs(default_roots())]
    assert out in [r.path for r in find_runs(make_app().run_places())]
    assert main(["--plain", "runs"]) == 0
    assert "song-lora" in capsys.readouterr().out


UNMAKEABLE = Path("/proc/sidestep-run")  # root's permission bits say yes; mkdir says no


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(
        demo_root, small_tensors, capsys):
    assert cli(*train_flags(demo_root, small_tensors, UNMAKEABLE)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Side-Step training" not in captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--output-dir /proc/sidestep-run: cannot create" in lines[0], \
        captured.err
    assert not UNMAKEABLE.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_run_folder_that_cannot_be_made_at_start_is_an_input_error(
        demo_root, small_tensors, monkeypatch):
    """The disk changed between the pre-flight and the run's own mkdir: still one line."""
    import sidestep.data.paths as paths

    monkeypatch.setattr(paths, "_creation_problem", lambda path, flag: None, raising=False)
    result = Trainer(train_config(demo_root, small_tensors, UNMAKEABLE, epochs=1)).run()
    assert result.status == "failed" and result.error_kind == "input", result.error
    assert result.error.startswith("--output-dir /proc/sidestep-run: cannot create")


def test_a_second_start_into_a_folder_being_started_is_refused(demo_root, small_tensors,
                                                              tmp_path, capsys):
    """Two starts a second apart into one new --output-dir both passed the check (run.json
    says "running" only after the model loads) and trained over each other; a detached pair
    left one run no command could see. The first start now holds the folder from its
    pre-flight: the second is refused, nothing written, and the folder is free again after."""
    from conftest import tree_hash
    from sidestep.engine.run_dir import FolderLock

    out = tmp_path / "run"
    first = FolderLock(out).take()  # another process between its pre-flight and run.json
    before = tree_hash(tmp_path)
    args = ["--plain", "-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
            "--dataset-dir", str(small_tensors), "--output-dir", str(out), "--epochs", "1",
            "--warmup-steps", "0"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "another run is starting or running there" in err, err
    assert f"pid {os.getpid()}" in err and "Traceback" not in err
    assert tree_hash(tmp_path) == before and not out.exists()
    first.release()
    cfg = train_config(demo_root, small_tensors, out, epochs=1)
    assert Trainer(cfg, []).run().status == "completed"
    FolderLock(out).take().release()  # let go of at the end of the run


def test_without_a_writable_cache_the_folder_is_not_locked_and_the_run_goes_on(tmp_path,
                                                                              monkeypatch):
    """The lock lives in the cache; a cache that cannot be written (here a file) must not stop
    a run, nor make a second lock look taken."""
    from sidestep.engine.run_dir import FolderLock

    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("SIDESTEP_CACHE_DIR", str(tmp_path / "cache"))
    lock = FolderLock(tmp_path / "run").take()
    FolderLock(tmp_path / "run").take().release()
    lock.release()
