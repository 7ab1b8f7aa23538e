"""The training form's model without Textual: values, validation and display by the one
precedence ``resolve`` uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sidestep.config import resolve as resolve_mod
from sidestep.config.resolve import resolve
from sidestep.tui.form_model import FormModel, check_path, form_settings, fresh_run_dir

PATHS = {"checkpoint_dir": "/ckpt", "dataset_dir": "/data", "output_dir": "/out"}


def test_the_model_imports_no_textual():
    code = ("import sys, sidestep.tui.form_model; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'textual'], 'textual'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_invalid_value_blocks_and_names_its_field():
    form = FormModel("fixed", PATHS, advanced=True)
    form.edit("rank", "sixty")
    assert form.resolve() is not None  # the bad text is not a value: rank keeps its default
    problems = form.blocking_problems()
    label = form.by_name["rank"].label
    assert len(problems) == 1 and problems[0].startswith(f"{label}: ")
    assert form.field_views(lambda name: True)["rank"].error
    assert form.status_line()[1] is True
    form.edit("rank", "8")
    assert not form.blocking_problems() and form.resolve().config.rank == 8


def test_the_status_line_names_the_first_problem_in_form_order():
    """A bad Rank typed, then a dataset folder that is not there: "first:" named Rank (typed
    errors came first), though the dataset field is above it on the form."""
    form = FormModel("fixed", PATHS, advanced=True)
    form.edit("rank", "sixty")
    form.set_path_check("dataset_dir", "missing: dataset folder not found", None)
    form.resolve()
    names = [s.name for s in form.settings]
    assert names.index("dataset_dir") < names.index("rank")
    line, bad = form.status_line()
    assert bad and f"first: {form.by_name['dataset_dir'].label}: " in line, line
    assert form.blocking_problems()[1].startswith(f"{form.by_name['rank'].label}: ")


def test_required_fields_wait_for_an_edit_or_a_start():
    form = FormModel("fixed", {k: v for k, v in PATHS.items() if k != "dataset_dir"},
                     advanced=False)
    assert form.resolve() is None and form.blocking_problems()
    assert form.field_views(lambda name: False)["dataset_dir"].error is None
    form.tried_start = True
    view = form.field_views(lambda name: False)["dataset_dir"]
    assert view.error and view.visible


@pytest.mark.parametrize("windows", [False, True])
def test_an_invalid_form_shows_what_resolve_gives(windows, monkeypatch):
    monkeypatch.setattr(resolve_mod, "IS_WINDOWS", windows)
    profile = {"batch_size": 2, "rank": 32}
    form = FormModel("fixed", {**PATHS, "model_variant": "base"})
    form.set_profile(profile, None, [])
    form.set_preset("p", {"rank": 16, "epochs": 7, "not_a_field": 1})
    expected = resolve("fixed", {**PATHS, "model_variant": "base"}, {"rank": 16, "epochs": 7},
                       profile=profile, windows=windows)
    assert form.resolve() is not None
    assert form.current_values() == expected.config.to_dict()
    form.edit("dataset_dir", "")  # resolve refuses a run without a dataset
    assert form.resolve() is None
    shown = form.current_values()
    views = form.field_views(lambda name: False)
    for s in form_settings("fixed"):
        if s.name == "dataset_dir" or expected.sources[s.name] == "rule":
            continue
        assert shown[s.name] == getattr(expected.config, s.name), s.name
        assert views[s.name].value == shown[s.name], s.name
    assert shown["num_workers"] == (0 if windows else 4)
    assert (shown["rank"], shown["batch_size"], shown["epochs"]) == (16, 2, 7)


def test_a_preset_takes_over_typed_values():
    form = FormModel("fixed", {**PATHS, "rank": 8, "epochs": 3})
    form.edit("epochs", "three")
    assert form.set_preset("p", {"epochs": 5, "rank": 16}) == ["epochs", "rank"]
    assert "rank" not in form.explicit and not form.parse_errors
    assert form.resolve().config.epochs == 5


def test_path_checks(tmp_path):
    assert check_path("dataset_dir", "", None) == (None, None, None)
    assert check_path("checkpoint_dir", "", None) == (None, None, [])
    error, _note, entries = check_path("checkpoint_dir", str(tmp_path), None)
    assert error and "no ACE-Step model folders" in error and entries == []
    error, note, _ = check_path("output_dir", str(tmp_path / "new"), None)
    assert error is None and note == "new folder"
    form = FormModel("fixed", PATHS)
    form.set_path_check("dataset_dir", "missing", None)
    assert form.blocking_problems() == [f"{form.by_name['dataset_dir'].label}: missing"]
    form.set_path_check("dataset_dir", None, "3 preprocessed songs")
    assert not form.blocking_problems() and form.path_notes["dataset_dir"]


def test_a_file_given_as_a_folder_reads_the_same_on_the_form_and_in_the_estimate(tmp_path):
    """/etc/passwd as the dataset folder: the form's path check said "dataset folder not
    found", the estimate's dialog (resolve's check) "is a file, not a folder"."""
    from sidestep.config.resolve import ConfigError, resolve

    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    try:
        resolve("estimate", {"checkpoint_dir": str(tmp_path), "dataset_dir": str(a_file)})
    except ConfigError as exc:
        in_dialog = {p.field: p.message for p in exc.problems}["dataset_dir"]
    else:
        raise AssertionError("resolve took a file as the dataset folder")
    on_form, _, _ = check_path("dataset_dir", str(a_file), None)
    assert on_form == in_dialog and "is a file, not a folder" in on_form
    for name in ("output_dir", "checkpoint_dir"):
        assert "is a file, not a folder" in check_path(name, str(a_file), None)[0], name


def test_a_dataset_folder_with_broken_pt_files_blocks_start(tmp_path):
    """3 good .pt files and 2 broken ones read "5 preprocessed songs, ready", and the run
    failed once it had loaded the model."""
    import torch

    songs = tmp_path / "tensors"
    songs.mkdir()
    for i in range(3):
        torch.save({"x": torch.zeros(2)}, songs / f"good_{i}.pt")
    (songs / "junk.pt").write_bytes(b"not a tensor file")
    whole = (songs / "good_0.pt").read_bytes()
    (songs / "cut.pt").write_bytes(whole[: len(whole) // 2])  # a copy that broke off
    error, note, _ = check_path("dataset_dir", str(songs), None)
    assert note is None and error.startswith("2 of the 5 .pt files are not tensor files (")
    assert "cut.pt" in error and "junk.pt" in error
    for f in ("junk.pt", "cut.pt"):
        (songs / f).unlink()
    assert check_path("dataset_dir", str(songs), None)[:2] == (None, "3 preprocessed songs")


def test_fresh_run_dir_never_reuses_a_folder(tmp_path):
    first = fresh_run_dir(tmp_path, "demo")
    (tmp_path / first).mkdir()
    second = fresh_run_dir(tmp_path, "demo")
    assert second != first and second.startswith(first)


def test_the_estimate_line_waits_for_the_models_config():
    """Shown on the default model's sizes first, it jumped once the real config was read."""
    form = FormModel("fixed", PATHS, advanced=True)
    form.resolve()
    assert form.estimate_line() == ("VRAM estimate: reading the model's config …", None)
    form.model_cfg_pending = False  # read (or not found: the default sizes then)
    assert form.estimate_line()[0].startswith("VRAM estimate: ") and "GiB peak" in \
        form.estimate_line()[0]


def test_the_estimate_line_gives_the_effective_batch_over_devices():
    form = FormModel("fixed", PATHS, advanced=True)
    form.model_cfg_pending = False
    form.resolve()
    assert "per device" not in form.estimate_line()[0]
    for name, value in (("devices", "2"), ("batch_size", "3"), ("gradient_accumulation", "2")):
        form.edit(name, value)
    form.resolve()
    text = form.estimate_line()[0]
    assert "GiB peak per device · batch 3 x accumulation 2 x 2 devices = 12 songs" in text


def test_a_resumed_run_keeps_its_adapter_and_batches_in_the_form():
    """History's Resume: changing the batch size (or the adapter's rank, ...) is refused by
    the engine at start; the form says so on the field at once, with the run's value."""
    saved = {"adapter_type": "lora", "rank": 64, "alpha": 128, "batch_size": 1,
             "gradient_accumulation": 4, "optimizer_type": "adamw", "seed": 42}
    ckpt = "/out/checkpoint-step-5"
    form = FormModel("fixed", {**PATHS, "resume_from": ckpt, **saved}, advanced=True)
    form.resumed = (ckpt, saved)
    assert form.resolve() is not None
    form.edit("batch_size", "2")
    form.edit("rank", "16")
    assert form.resolve() is None
    views = form.field_views(lambda name: True)
    assert "keeps the run's 1" in views["batch_size"].error
    assert "keeps the run's 64" in views["rank"].error
    assert "to start a new run with this" in views["rank"].error
    assert form.status_line()[1] is True
    form.edit("batch_size", "1")
    form.edit("rank", "64")
    assert form.resolve() is not None
    assert form.resume_notes() == []
    form.edit("seed", "9")
    assert form.resolve() is not None
    assert form.resume_notes() == ["resuming with 'Seed' 9 (the run used 42): the data order "
                                   "and random draws will differ from the original run"]
    # another checkpoint typed in: the run's settings no longer apply
    form.edit("batch_size", "2")
    form.edit("resume_from", "/elsewhere/checkpoint-step-1")
    assert form.resolve() is not None


def test_the_status_line_counts_epochs_in_words():
    for epochs, words in ((1, "1 epoch,"), (2, "2 epochs,")):
        form = FormModel("fixed", {**PATHS, "epochs": epochs})
        assert form.resolve() is not None
        assert words in form.status_line()[0]


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_made_is_an_error_not_a_new_folder():
    error, note, _ = check_path("output_dir", "/proc/sidestep-run", None)
    assert note is None and error.startswith("--output-dir /proc/sidestep-run: cannot create")
