"""What each subcommand does once its arguments are parsed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidestep.cli import EXIT_BAD_INPUT, EXIT_OK
from sidestep.cli.output import Out
from sidestep.cli.parser import explicit_values
from sidestep.config import schema
from sidestep.config.presets import PresetError, PresetStore
from sidestep.config.resolve import ConfigError, Resolved, resolve


def dispatch(args: argparse.Namespace) -> int:
    out = Out(plain=args.plain)
    command = args.command
    if command == "presets":
        from sidestep.cli.presets_cmd import run_presets

        return run_presets(args, out)
    if command == "gpu":
        from sidestep.cli.vram_cmd import run_gpu

        return run_gpu(args, out)
    if command == "vram-estimate":
        from sidestep.cli.vram_cmd import run_vram_estimate

        # selective's memory is fixed's on fewer modules: its module config is not needed
        mode = "fixed" if args.mode == "selective" else args.mode
        resolved = resolve_from_args(mode, args, out, require_paths=False)
        return EXIT_BAD_INPUT if resolved is None else run_vram_estimate(resolved, args, out)
    if command == "check-dataset":
        from sidestep.cli.data_cmds import run_check_dataset

        return run_check_dataset(args, out)
    if command == "make-demo":
        from sidestep.cli.data_cmds import run_make_demo

        return run_make_demo(args, out)
    if command in ("export", "check-adapter"):
        from sidestep.cli.adapter_cmds import run_adapter_command

        return run_adapter_command(args, out)
    if command in ("runs", "attach", "stop", "pause", "resume", "save"):
        from sidestep.cli.runs_cmd import run_runs_command

        return run_runs_command(args, out)
    if command in schema.COMMANDS:
        return run_schema_command(command, args, out)
    out.error(f"unknown command {command!r}")
    return EXIT_BAD_INPUT


def resolve_from_args(command: str, args: argparse.Namespace, out: Out,
                      require_paths: bool = True) -> Resolved | None:
    """Profile + preset + explicit flags -> checked config; prints problems, None on error."""
    explicit = explicit_values(args, schema.settings_for(command))
    if command in schema.TRAIN_MODES and explicit.get("resume_from"):
        explicit = with_resumed_run(command, explicit, out)
        if explicit is None:
            return None
    preset_values: dict[str, Any] = {}
    profile_layer: dict[str, Any] = {}
    profile = getattr(args, "vram_profile", None)
    if profile:
        from sidestep.config.profiles import profile_values

        try:
            values, note = profile_values(profile)
        except (ValueError, PresetError) as exc:
            out.error(f"--vram-profile: {exc}")
            return None
        if note:
            out.warn(note) if "not applied" in note else print(note, file=sys.stderr)
        profile_layer = values
    preset_name = getattr(args, "preset", None)
    if preset_name:
        try:
            preset = PresetStore().load(preset_name)
        except PresetError as exc:
            out.error(str(exc))
            return None
        preset_values = dict(preset.values)
        if preset.ignored:
            out.warn(f"preset '{preset.name}': ignored unknown fields: "
                     f"{', '.join(preset.ignored)}")
        _say_what_the_preset_overrules(out, profile, preset.name, profile_layer,
                                       preset_values, explicit)
    try:
        resolved = resolve(command, explicit, preset_values, profile=profile_layer,
                           require_paths=require_paths)
    except ConfigError as exc:
        for problem in exc.problems:
            out.error(str(problem))
        return None
    for warning in resolved.warnings:
        out.warn(str(warning))
    return resolved


def _say_what_the_preset_overrules(out: Out, profile: str | None, preset: str,
                                   profile_values: dict, preset_values: dict,
                                   explicit: dict) -> None:
    """--preset wins over --vram-profile (as the help says): name the profile's values it
    replaced, which may be the ones that make the run fit (quick_test over 8gb trained with
    plain AdamW, no encoder offload and whole songs, all without a word)."""
    replaced = [name for name, value in profile_values.items()
                if name in preset_values and name not in explicit
                and preset_values[name] != value and name in schema.BY_NAME]
    if not replaced:
        return
    flags = ", ".join(schema.BY_NAME[n].flags[-1] for n in replaced)
    out.warn(f"--preset {preset} overrides --vram-profile {profile} for {flags}: the run may "
             "not fit the memory the profile is for; give a setting as a flag to choose it")


def with_resumed_run(command: str, explicit: dict[str, Any], out: Out) -> dict[str, Any] | None:
    """The checkpoint's own settings under the flags given: ``--resume-from`` alone continues
    the run as it was. None (said why) for a checkpoint that cannot be read: it is the problem
    to name, before any setting it would have given."""
    from sidestep.config.resume import carried_settings, resume_refusal
    from sidestep.engine.checkpointing import CheckpointProblem, saved_config

    try:
        saved = saved_config(Path(explicit["resume_from"]).expanduser())
    except CheckpointProblem as exc:
        out.error(f"--resume-from: {exc}")
        return None
    # refused before anything else is said (a warning that a flag applies, then the refusal)
    refusal = resume_refusal(explicit["resume_from"], saved, explicit, command)
    if refusal:
        out.error(refusal)
        return None
    if saved.get("mode") in schema.TRAIN_MODES and saved["mode"] != command:
        out.warn(f"{explicit['resume_from']} is from a `{saved['mode']}` run; it continues as "
                 f"`{command}`")
    # the settings it changes are said with the summary, before the prompt (the pre-flight's)
    return {**carried_settings(command, saved), **explicit}


def _with_default_output(command: str, resolved) -> dict[str, Any]:
    """The resolved settings, with the file that estimate or build-dataset would write when
    no --output is given (it is worked out when they run, so the schema's default is None)."""
    shown = resolved.public_dict(command)
    if shown.get("output") is None and command in ("estimate", "build-dataset"):
        if command == "estimate":
            from sidestep.cli.estimate_cmd import default_output
        else:
            from sidestep.data.dataset_json import default_output
        source = resolved.config if command == "estimate" else resolved.config.input
        shown["output"] = str(default_output(source))
    return shown


def run_schema_command(command: str, args: argparse.Namespace, out: Out) -> int:
    resolved = resolve_from_args(command, args, out)
    if resolved is None:
        return EXIT_BAD_INPUT
    if getattr(args, "print_config", False):
        if getattr(resolved.config, "resume_from", None):  # (a readable checkpoint: resolved)
            from sidestep.engine.preflight import resume_notes

            for line in resume_notes(resolved.config):
                out.warn(line)
        out.json(_with_default_output(command, resolved))
        return EXIT_OK
    if command == "build-dataset":
        from sidestep.cli.data_cmds import run_build_dataset

        return run_build_dataset(resolved.config, out)
    if command == "preprocess":
        from sidestep.cli.data_cmds import run_preprocess

        return run_preprocess(resolved.config, out)
    if command in schema.TRAIN_MODES:
        from sidestep.cli.train_cmd import run_training

        return run_training(resolved, args, out)
    if command == "estimate":
        from sidestep.cli.estimate_cmd import run_estimate

        return run_estimate(resolved.config, out)
    if command == "compare-configs":
        from sidestep.cli.compare_cmd import run_compare_configs

        return run_compare_configs(resolved.config, args, out)
    raise AssertionError(f"no handler for the schema command {command!r}")
