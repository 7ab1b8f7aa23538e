"""What a new user's first session hit: commands that wrote into the wrong place, crashed on a
bad path, or answered with a misleading or noisy line (each test fails without its fix)."""

from __future__ import annotations

import errno
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE
from sidestep.cli import main
from sidestep.cli.output import Out
from sidestep.engine.events import CheckpointSaved, EpochEnded


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(["--plain", *argv])
    shown = capsys.readouterr()
    assert "Traceback" not in shown.err
    return code, shown.out, shown.err


def parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with a file's bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def model_root(tmp_path):
    """A checkpoint root with the turbo folder: the real config.json, an empty weights file
    (the checks before training read no weights)."""
    model = tmp_path / "checkpoints" / "acestep-v15-turbo"
    model.mkdir(parents=True)
    config = json.loads((REFERENCE / "config_turbo.json").read_text())["config"]
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"")
    return tmp_path / "checkpoints"


def songs_in(folder: Path, count: int = 2) -> Path:
    from sidestep.data.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_wav(folder / f"song_{i}.wav", np.zeros((2, 48000), dtype=np.float32))
    return folder


# -- 1. make-demo ------------------------------------------------------------------------------
@pytest.mark.parametrize("under", [False, True], ids=["file", "under-file"])
def test_make_demo_into_a_file_is_one_line_and_writes_nothing(tmp_path, capsys, under):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    target = afile / "demo" if under else afile
    before = tree(tmp_path)
    code, _, err = run(["make-demo", str(target)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(afile) in err and "is a file, not a folder" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_make_demo_that_cannot_write_leaves_nothing(tmp_path, capsys, monkeypatch, existing):
    """A read-only or full disk, found mid-way (root may write anywhere, so the failure is
    simulated): one line naming the path, exit 2, and what was written is gone."""
    import sidestep.demo

    target = tmp_path / "empty" if existing else tmp_path / "new" / "demo"
    if existing:
        target.mkdir()

    def read_only(root, seed=0):
        (root / "acestep-v15-turbo").mkdir(parents=True)
        (root / "acestep-v15-turbo" / "config.json").write_text("{}")
        raise OSError(errno.EROFS, "Read-only file system", str(root / "vae"))

    monkeypatch.setattr(sidestep.demo, "write_checkpoint_root", read_only)
    code, _, err = run(["make-demo", str(target)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{target / 'checkpoints' / 'vae'} (Read-only file system)" in err
    if existing:
        assert target.is_dir() and not any(target.iterdir())
    else:
        assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_make_demo_output_is_its_own_lines_and_ends_with_a_next_step(tmp_path, capsys):
    """No bitsandbytes kernel notice, no weight_norm deprecation, no progress bar (a fresh
    process: the notices come once per import); the hint's command line resolves."""
    proc = subprocess.run([sys.executable, "-m", "sidestep", "--plain", "make-demo",
                           str(tmp_path / "demo"), "--clips", "1"], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    for noise in ("gemm_4bit", "kernels", "FutureWarning", "weight_norm", "Writing model",
                  "it/s"):
        assert noise not in proc.stderr + proc.stdout, noise
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("next, try: sidestep fixed ")
    hint = shlex.split(last.removeprefix("next, try: "))[1:]
    assert str(tmp_path / "demo" / "tensors") in hint
    code, out, _ = run([*hint, "--print-config"], capsys)
    assert code == 0 and json.loads(out)["epochs"] == 2


# -- 2. preprocess into the songs folder ------------------------------------------------------
@pytest.mark.parametrize("case", ["audio-dir", "other-songs", "songs-in-subfolders"])
def test_preprocess_refuses_a_songs_folder_as_tensor_output(tmp_path, capsys, case):
    songs = songs_in(tmp_path / "songs")
    out = songs
    if case == "other-songs":
        out = songs_in(tmp_path / "more")
    elif case == "songs-in-subfolders":
        songs = tmp_path / "album"
        songs_in(songs / "disc1")
        out = songs
    before = tree(tmp_path)
    code, _, err = run(["preprocess", "--checkpoint-dir", str(tmp_path / "ck"),
                        "--audio-dir", str(songs), "--tensor-output", str(out),
                        "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--tensor-output {out} " in err and "Give a separate folder" in err
    assert tree(tmp_path) == before


def test_preprocess_into_an_earlier_tensors_folder_is_still_accepted(tmp_path, capsys):
    """Preprocessing resumes: a folder of its own output passes the check (the run goes on to
    the model, missing here, and fails there)."""
    songs = songs_in(tmp_path / "songs")
    tensors = tmp_path / "tensors"
    tensors.mkdir()
    for name in ("song_0.pt", "manifest.json", ".sidestep-preprocess.json"):
        (tensors / name).write_text("{}")
    before = tree(tmp_path)
    code, _, err = run(["preprocess", "--checkpoint-dir", str(tmp_path / "ck"),
                        "--audio-dir", str(songs), "--tensor-output", str(tensors),
                        "--device", "cpu"], capsys)
    assert code == 2 and "checkpoint folder not found" in err and "--tensor-output" not in err
    assert tree(tmp_path) == before


def test_training_with_preprocess_refuses_the_songs_folder_before_the_summary(
        tmp_path, capsys, model_root):
    songs = songs_in(tmp_path / "songs")
    before = tree(songs)
    code, out, err = run(["-y", "fixed", "--checkpoint-dir", str(model_root), "--preprocess",
                          "--audio-dir", str(songs), "--tensor-output", str(songs),
                          "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and "holds audio files" in err and "Side-Step training" not in out
    assert tree(songs) == before and not (tmp_path / "run").exists()


# -- 3. a mistyped flag -----------------------------------------------------------------------
def test_a_mistyped_flag_names_the_subcommand_help_and_the_closest_flag(capsys):
    err = parse_error(["fixed", "--checkpoint-dir", "a", "--dataset-dir", "b", "--output-dir",
                       "c", "--learning-rat", "0.1"], capsys)
    assert "did you mean --learning-rate?" in err
    assert "`sidestep fixed --help`" in err and "`sidestep --help`" not in err
    err = parse_error(["presets", "save", "x", "--rnk=4"], capsys)
    assert "did you mean --rank?" in err and "`sidestep presets save --help`" in err


def test_a_global_flag_after_the_command_says_where_it_goes(capsys):
    err = parse_error(["fixed", "--checkpoint-dir", "a", "-y"], capsys)
    assert "-y goes before the command: `sidestep -y fixed ...`" in err


# -- 4. a model variant that is not there -----------------------------------------------------
def test_a_missing_model_variant_gets_only_the_real_error(tmp_path, capsys, model_root):
    code, _, err = run(["fixed", "--checkpoint-dir", str(model_root), "--dataset-dir",
                        str(tmp_path), "--output-dir", str(tmp_path / "run"),
                        "--model-variant", "nosuch"], capsys)
    assert code == 2
    assert "model folder not found" in err and "Available: acestep-v15-turbo" in err
    assert "--base-model" not in err and "warning" not in err


# -- 5. a file where a folder is expected -----------------------------------------------------
@pytest.mark.parametrize("command,flag,fix", [
    ("fixed", "--checkpoint-dir", "give the folder that holds the model folders"),
    ("fixed", "--dataset-dir", "give the folder that holds the preprocessed .pt files"),
    ("fixed", "--resume-from", "give a checkpoint folder"),
    ("fixed", "--log-dir", "give a folder path (it is created if missing)"),
    ("preprocess", "--audio-dir", "give the folder that holds the audio files"),
    ("preprocess", "--tensor-output", "give a folder path (it is created if missing)"),
    ("estimate", "--dataset-dir", "give the folder that holds the preprocessed .pt files"),
])
def test_a_file_given_for_a_folder_says_so(tmp_path, capsys, command, flag, fix):
    afile = tmp_path / "afile"
    afile.write_text("x")
    folder = str(tmp_path)
    base = {"fixed": ["--checkpoint-dir", folder, "--dataset-dir", folder,
                      "--output-dir", str(tmp_path / "run")],
            "preprocess": ["--checkpoint-dir", folder, "--audio-dir", folder,
                           "--tensor-output", str(tmp_path / "t")],
            "estimate": ["--checkpoint-dir", folder, "--dataset-dir", folder]}[command]
    code, _, err = run([command, *base, flag, str(afile)], capsys)
    assert code == 2
    assert f"{flag}: {afile} is a file, not a folder; {fix}" in err
    assert "not found" not in err


@pytest.mark.parametrize("command", [["check-dataset", "."], ["check-adapter", "."]])
def test_a_file_as_checkpoint_dir_of_the_other_commands(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run([*command, "--checkpoint-dir", str(afile)], capsys)
    assert code == 2 and f"{afile} is a file, not a folder; give the folder that holds" in err


@pytest.mark.parametrize("command", ["fixed", "preprocess", "estimate"])
def test_a_mistyped_checkpoint_dir_names_the_flag_and_the_fix(tmp_path, capsys, model_root,
                                                               command):
    typo = model_root.parent / "chekpoints"
    folder = str(tmp_path)
    rest = {"fixed": ["--dataset-dir", folder, "--output-dir", str(tmp_path / "run")],
            "preprocess": ["--audio-dir", str(songs_in(tmp_path / "songs")),
                           "--tensor-output", str(tmp_path / "t")],
            "estimate": ["--dataset-dir", folder]}[command]
    before = tree(tmp_path)
    code, _, err = run(["-y", command, "--checkpoint-dir", str(typo), *rest], capsys)
    assert code == 2
    assert (f"{typo}: checkpoint folder not found; set --checkpoint-dir to the folder that "
            "holds acestep-v15-turbo/") in err, err
    assert tree(tmp_path) == before


# -- 6. a write that fails names the file, not its temp file ----------------------------------
@pytest.mark.parametrize("step", ["mkstemp", "replace"])
def test_an_atomic_write_error_names_the_target(tmp_path, monkeypatch, step):
    from sidestep.config import atomic

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".p.json.x.tmp"))

    monkeypatch.setattr(atomic.tempfile if step == "mkstemp" else atomic.os, step, refuse)
    with pytest.raises(OSError) as exc:
        atomic.write_json(tmp_path / "p.json", {})
    assert exc.value.filename == str(tmp_path / "p.json") and exc.value.errno == errno.EROFS
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_presets_export_to_a_folder_it_cannot_write_names_the_path(tmp_path, capsys,
                                                                   monkeypatch):
    from sidestep.config import atomic

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".p.json.x.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    code, _, err = run(["presets", "export", "recommended", str(tmp_path / "p.json")], capsys)
    assert code == 2 and ".tmp" not in err
    assert f"{tmp_path / 'p.json'}: cannot write it (Read-only file system); choose" in err
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "p.json"
    code, _, err = run(["presets", "export", "recommended", str(target)], capsys)
    assert code == 2 and f"{target}: cannot write it ({tmp_path / 'afile'} is a file" in err


# -- 7. a local preset that hides a built-in --------------------------------------------------
def test_saving_under_a_builtin_name_says_it_hides_it(in_tmp_cwd, capsys):
    code, out, err = run(["presets", "save", "recommended", "--lr", "0.002"], capsys)
    assert code == 0 and (in_tmp_cwd / "presets" / "recommended.json").is_file()
    assert "local preset 'recommended' now hides the built-in preset" in err
    assert "`sidestep presets delete recommended`" in err
    code, _, err = run(["presets", "save", "mine", "--lr", "0.002"], capsys)
    assert code == 0 and "hides" not in err


def test_a_preset_saved_with_a_rank_far_from_alpha_warns_and_view_names_model_defaults(
        in_tmp_cwd, capsys):
    """`presets save mine --rank 16` kept alpha 128 (x8) silently, as `fixed --rank 16` does
    not; `presets view` showed turbo's shift 3 and base's CFG 0.15 as if both applied."""
    code, _, err = run(["presets", "save", "mine", "--rank", "16"], capsys)
    assert code == 0 and "alpha 128 with rank 16 scales the adapter by 8" in err
    assert "--alpha 32" in err
    code, _, err = run(["presets", "save", "both", "--rank", "16", "--alpha", "128"], capsys)
    assert code == 0 and "scales the adapter" not in err  # both given: meant
    code, out, _ = run(["presets", "view", "quick_test"], capsys)
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "(the model's default)" in rows["--shift"] and "(the model's default)" in rows[
        "--cfg-ratio"]
    # the flags a user types, not the file's keys; no trailing space after an empty description
    assert "--target-modules" in rows and "target_modules_str" not in out


# -- 8. the best checkpoint, once -------------------------------------------------------------
@pytest.mark.parametrize("plain", [True, False], ids=["plain", "rich"])
def test_the_best_checkpoint_is_named_once_not_every_epoch(capsys, plain):
    from sidestep.cli.train_cmd import PlainProgress, RichProgress

    out = Out(plain=plain)
    out.plain = plain  # rich output even though the test's stdout is not a terminal
    view = PlainProgress(out, 1) if plain else RichProgress(out)
    best = "/runs/r/best/adapter"
    for epoch in range(1, 10):
        view.handle(CheckpointSaved(path=best, step=epoch, epoch=epoch, kind="best"))
        view.handle(EpochEnded(epoch=epoch, step=epoch, mean_loss=1.0 / epoch, seconds=1.0,
                               best=True))
    view.handle(CheckpointSaved(path="/runs/r/final/adapter", step=9, epoch=9, kind="final"))
    shown = capsys.readouterr().out
    assert shown.count("saved best adapter") == 1 and shown.count(best) == 1
    assert "saved final adapter: /runs/r/final/adapter" in shown
    if plain:
        assert shown.count("(new best)") == 9
        # said after the epoch it belongs to (it came first, before "epoch 1/.. done")
        assert shown.index("epoch 1/") < shown.index("saved best adapter")



# -- 9. ~ in a path ---------------------------------------------------------------------------
def test_a_tilde_in_a_path_is_the_home_folder_everywhere(demo_root, small_tensors, tmp_path,
                                                         monkeypatch, capsys):
    """'--output-dir=~/runs/r1' (bash leaves ~ after '=' alone; so does a quoted path, the
    app's fields and presets): the run goes to the home folder, and run.json says where it
    is. Before, a folder named '~' appeared in the current one, while run.json named home."""
    from sidestep.config.schema import BY_NAME
    from sidestep.config.values import check_json_value, parse_text
    from sidestep.tui.form_model import FormModel

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert parse_text(BY_NAME["output_dir"], "~/x") == str(home / "x")
    assert check_json_value(BY_NAME["configs"], ["~/a.json"]) == (str(home / "a.json"),)
    form = FormModel("fixed")
    form.edit("dataset_dir", "~/tensors")
    assert form.value("dataset_dir") == str(home / "tensors")

    code, out, err = run(["-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                          "--dataset-dir", str(small_tensors), "--output-dir=~/runs/r1",
                          "--epochs", "1", "--num-workers", "0", "-r", "4", "--alpha", "8",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    assert list(cwd.iterdir()) == []
    run_json = json.loads((home / "runs" / "r1" / "run.json").read_text())
    assert run_json["config"]["output_dir"] == str(home / "runs" / "r1")
    assert (home / "runs" / "r1" / "final" / "adapter").is_dir()

    # the commands whose paths are not settings, and a list of paths: the same home folder
    code, out, err = run(["presets", "export", "quick_test", "~/quick.json"], capsys)
    assert code == 0 and (home / "quick.json").is_file(), err
    code, out, err = run(["check-adapter", "~/runs/r1/final/adapter"], capsys)
    assert code == 0, err
    code, out, err = run(["export", "~/runs/r1/final/adapter", "--format", "comfyui",
                          "--output=~/r1_comfy.safetensors"], capsys)
    assert code == 0 and (home / "r1_comfy.safetensors").is_file(), err
    (home / "tensors").symlink_to(small_tensors)
    (home / "checkpoints").symlink_to(demo_root / "checkpoints")
    code, out, err = run(["check-dataset", "~/tensors", "--checkpoint-dir=~/checkpoints"],
                         capsys)
    assert code == 0, err
    assert list(cwd.iterdir()) == []
    from sidestep.cli.parser import build_parser

    ns = build_parser().parse_args(["compare-configs", "--configs", "~/a.json", "~/b.json"])
    assert ns.configs == [str(home / "a.json"), str(home / "b.json")]


def test_an_empty_path_on_the_command_line_is_refused_not_taken_as_left_out(capsys, model_root,
                                                                             tmp_path):
    # `--resume-from "$CKPT"` with CKPT unset started a new run instead of resuming
    before = tree(tmp_path)
    for argv in (["fixed", "--resume-from", "", "--checkpoint-dir", str(model_root)],
                 ["fixed", "--resume-from=", "--checkpoint-dir", str(model_root)],
                 ["selective", "--module-config", "  "]):
        err = parse_error(argv, capsys)
        assert "is empty; give a path, or leave the option out" in err, err
        assert err.count("\n") == 2 and "Traceback" not in err
    assert tree(tmp_path) == before


def test_several_values_after_an_equals_sign_say_how_to_give_them(capsys):
    err = parse_error(["compare-configs", "--configs=a.json", "b.json", "c.json"], capsys)
    assert "unrecognized arguments: b.json c.json" in err
    assert "for several write `--configs a.json b.json c.json`" in err
    # a stray word after a one-value flag gets no such hint
    err = parse_error(["fixed", "--rank=4", "oops"], capsys)
    assert "unrecognized arguments: oops" in err and "takes one value" not in err


def test_a_flag_of_another_training_command_says_whose_it_is(capsys):
    # `fixed --module-config x` guessed "did you mean --sample-cfg?"
    err = parse_error(["fixed", "--module-config", "x"], capsys)
    assert "--module-config is a setting of `selective`, not of `fixed`" in err
    assert "did you mean" not in err
    err = parse_error(["vanilla", "--cfg-ratio", "0.1"], capsys)
    assert "--cfg-ratio is a setting of `fixed` and `selective`, not of `vanilla`" in err


def test_paths_shown_from_the_root_folder_stay_absolute(tmp_path, monkeypatch):
    # from `cd /`, `sidestep runs /tmp/x` listed ./tmp/x
    from sidestep.config.paths import short

    monkeypatch.chdir("/")
    assert short(tmp_path / "run") == str(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert short(tmp_path / "run") == "./run"


def test_make_demo_numbers_are_checked_as_settings_are(capsys, tmp_path):
    # "invalid int value: 'abc'"; and --clips 100000 wrote 12 GB before it was stopped
    err = parse_error(["make-demo", str(tmp_path / "d"), "--seed", "abc"], capsys)
    assert "--seed: expected a whole number, got 'abc'" in err
    err = parse_error(["make-demo", str(tmp_path / "d"), "--clips", "100000"], capsys)
    assert "--clips: must be from 1 to 500, got 100000" in err
    assert not (tmp_path / "d").exists()


def test_a_file_given_as_the_checkpoint_folder_is_called_a_file(tmp_path):
    # "/etc/passwd: checkpoint folder not found"
    from sidestep.model.checkpoints import DiscoveryError, list_models

    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(DiscoveryError, match="notes.txt: is a file, not a folder; set "):
        list_models(afile)
    with pytest.raises(DiscoveryError, match="nothere: checkpoint folder not found; set "):
        list_models(tmp_path / "nothere")


def test_the_best_mark_names_what_best_is_chosen_by():
    """Epoch 6's mean 2.4241 was marked "(best so far)" after epoch 5's 2.4131: best/ follows
    the mean of the last epochs (or the validation loss), so the mark names that."""
    from sidestep.engine.events import EpochEnded, from_dict

    e = EpochEnded(epoch=6, step=12, mean_loss=2.4241, seconds=1.0, best=True, measure=2.4131)
    assert e.best_note() == " (new best: recent-epoch mean 2.4131)"
    assert from_dict(e.to_dict()).best_note() == e.best_note()  # kept in events.jsonl
    val = EpochEnded(epoch=6, step=12, mean_loss=2.4, seconds=1.0, val_loss=1.9, best=True,
                     measure=1.9)
    assert val.best_note() == " (new best validation loss)"
    assert EpochEnded(epoch=1, step=2, mean_loss=2.0, seconds=1.0).best_note() == ""


# -- configuration warnings before the prompt ---------------------------------------------------
def test_configuration_warnings_come_before_the_start_prompt(demo_root, small_tensors, tmp_path,
                                                            monkeypatch, capsys):
    """The warmup warning was printed only after "Start training? [y/N]" was answered."""
    import builtins

    shown_at_prompt = []

    def answer(prompt):
        shown_at_prompt.append(capsys.readouterr())
        return "n"

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(builtins, "input", answer)
    run_dir = tmp_path / "run"
    code, out, err = run(["fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                          "--dataset-dir", str(small_tensors), "--output-dir", str(run_dir),
                          "--epochs", "1", "--batch-size", "2", "--gradient-accumulation", "1",
                          "--warmup-steps", "100", "--num-workers", "0", "--device", "cpu"],
                         capsys)
    assert code == 0 and "not started" in out and not run_dir.exists()
    (before,) = shown_at_prompt
    assert "warning: warmup (100 steps) is as long as the whole run (3 steps)" in before.err
    assert "warmup" not in err  # said once, before the prompt
