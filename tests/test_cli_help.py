"""Every ``--help`` in the CLI tree prints and exits 0, and long options are never
prefix-matched (issue #12)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sidestep.cli import main
from sidestep.cli.parser import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the parser and every subparser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + (name,))


ALL_PATHS = [path for path, _ in _walk(build_parser())]


def test_tree_covers_the_commands():
    # guards the walk itself: it must reach nested `presets` actions and the training modes
    assert ("fixed",) in ALL_PATHS and ("presets", "save") in ALL_PATHS
    assert len(ALL_PATHS) > 15
    # runs that outlive the terminal (issue #18)
    for name in ("runs", "attach", "stop", "pause", "resume", "save"):
        assert (name,) in ALL_PATHS


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: " ".join(p) or "sidestep")
def test_help_prints(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("usage:")
    assert "Traceback" not in out.err


def test_tui_help_prints(capsys):
    from sidestep.launch import build_parser as tui_parser

    with pytest.raises(SystemExit) as exc:
        tui_parser().parse_args(["--help"])
    assert exc.value.code == 0
    assert "--demo" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["-m", "sidestep", "--help"],
    ["-m", "sidestep", "fixed", "--help"],
    ["-m", "sidestep", "presets", "save", "--help"],
    ["-m", "sidestep", "stop", "--help"],
    ["-c", "from sidestep.launch import entry; entry()", "--help"],
], ids=["sidestep", "fixed", "presets-save", "stop", "sidestep-tui"])
def test_help_in_a_real_process(argv):
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert "Traceback" not in proc.stderr


def test_no_parser_allows_abbreviations():
    for path, parser in _walk(build_parser()):
        assert parser.allow_abbrev is False, " ".join(path)


@pytest.mark.parametrize("argv", [
    ["fixed", "--epoch", "3", "--print-config"],
    ["vram-estimate", "--epoch", "3"],
    ["presets", "save", "x", "--epoch", "3"],
])
def test_option_prefix_is_an_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--epoch" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["fixd"], "argument COMMAND: unknown command 'fixd'; did you mean `fixed`?"),
    (["presets", "lst"], "argument ACTION: unknown action 'lst'; did you mean `list`?"),
    (["export", "x", "--output", "y.safetensors", "--format", "comfyu"],
     "unknown choice 'comfyu'; did you mean `comfyui`?"),
])
def test_a_mistyped_command_or_choice_gets_a_guess(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    with pytest.raises(SystemExit):  # nothing near: the list, as before
        main(["zzz"])
    assert "invalid choice: 'zzz'" in capsys.readouterr().err


def _option_help(argv: list[str], flag: str, capsys) -> str:
    """The help text of ``flag`` in ``argv --help``, on one line."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag + " "))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 8):  # the next option, or the end of the group
            break
        block.append(line)
    return " ".join(" ".join(block).split())


@pytest.mark.parametrize("argv,flag,says,not_says", [
    # a shared setting's help describes what this command does with it (tryout: each help
    # showed the text of another command)
    (["build-dataset"], "--output", "Default: INPUT/dataset.json", "estimate-<variant>"),
    (["estimate"], "--output", "estimate-<variant>-<granularity>.json", "INPUT/dataset.json"),
    (["estimate"], "--dataset-dir", "ranked", "--preprocess"),
    (["check-dataset"], "--chunk-duration", "shorter than this", "recommended"),
    (["fixed"], "--chunk-duration", "random window", "reported"),
    (["fixed"], "--dataset-dir", "--preprocess", "ranked"),
])
def test_a_shared_setting_is_described_for_the_command(argv, flag, says, not_says, capsys):
    text = _option_help(argv, flag, capsys)
    assert says in text and not_says not in text, text
    assert text.count("efault") <= 1, text  # its default said once
