"""What a resumed run keeps of the run it continues.

Resuming is exact only with the run's own settings, so they are the starting point (the CLI's
``--resume-from`` and History's Resume alike): anything given again overrides them, and the CLI
says which. Not carried: where this attempt writes and how it is started.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from sidestep.config import schema
from sidestep.config.values import check_json_value

# This attempt's own: its folder and checkpoint, whether it detaches, and preprocessing with
# its settings (a resumed run trains on the tensors the first attempt made: carried, they read
# as flags given without --preprocess).
NOT_CARRIED = ("output_dir", "resume_from", "log_dir", "detach") + tuple(
    s.name for s in schema.SETTINGS if s.group == "Preprocessing")
# Settings the learning-rate schedule is computed from.
SCHEDULE = ("epochs", "warmup_steps", "scheduler_type", "learning_rate")
# Settings a resume cannot change: the checkpoint's weights and optimizer state have the
# adapter's shape and scale (every setting of the adapter's groups but its dropout, and the
# module config that picks a selective run's modules), and its step, epoch and place in the
# epoch count batches of the run's size.
ADAPTER_GROUPS = ("Adapter", "LoRA", "LoKR", "LoHA")
KEPT = tuple(s.name for s in schema.SETTINGS
             if s.group in ADAPTER_GROUPS and s.name != "dropout") \
    + ("module_config", "batch_size", "gradient_accumulation", "optimizer_type")


def carried_settings(command: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``command`` that a run saved (``saved``: its recorded config), checked
    as a preset's are. Left to the defaults: values that no longer parse, and settings that
    did not apply to the run (a LoKR factor in a LoRA run)."""
    out: dict[str, Any] = {}
    for s in schema.settings_for(command):
        value = saved.get(s.name)
        if s.name in NOT_CARRIED or value is None:
            continue
        if s.shown_when and saved.get(s.shown_when[0]) not in s.shown_when[1]:
            continue
        try:
            out[s.name] = check_json_value(s, value)
        except ValueError:
            continue
    return out


def resume_refusal(checkpoint: Any, saved: Mapping[str, Any], values: Mapping[str, Any],
                   mode: str | None) -> str | None:
    """Why a resume from ``checkpoint`` (its run's recorded config: ``saved``) with ``values``
    under ``mode`` cannot go on, or None: the mode first (no flag to leave out then), else
    each setting of ``kept_on_resume``."""
    wrong_mode = mode_refused(saved.get("mode"), mode)
    if wrong_mode:
        return f"{checkpoint}: {wrong_mode}"
    refused = refused_on_resume(saved, values)
    if not refused:
        return None
    return (f"{checkpoint}: a resumed run keeps its checkpoint's adapter shape, batch size, "
            f"gradient accumulation and optimizer, but this one sets {'; '.join(refused)}. "
            "Leave these out to continue the run as it was, or start a new run (without "
            "--resume-from) to train with them")


def refused_on_resume(saved: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """Each setting of ``kept_on_resume``, with its flag and both values."""
    lines = []
    for name, theirs in kept_on_resume(saved, values).items():
        s = schema.BY_NAME[name]
        lines.append(f"{s.flags[-1]} {shown(values[name])} (the run used {shown(theirs)})")
    return lines


def mode_refused(saved_mode: Any, mode: str | None) -> str | None:
    """A selective run trains the modules its module config chose, the others every attention
    projection: a checkpoint of one does not fit the other (fixed and vanilla share one)."""
    if mode is None or saved_mode not in schema.TRAIN_MODES or saved_mode == mode:
        return None
    if "selective" not in (saved_mode, mode):
        return None
    return (f"the checkpoint is from a `{saved_mode}` run, whose adapter is on other modules "
            f"than a `{mode}` run's: resume it with `sidestep {saved_mode}`, or start a new "
            f"`{mode}` run")


def kept_on_resume(saved: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in ``KEPT`` that ``values`` (the resumed run's) sets otherwise than the
    checkpoint's run did (``saved``: its recorded config), with the run's values. Settings that
    did not apply to that run, and values an older record lacks, are not compared; module
    lists compare in any order, paths wherever they are written from."""
    out: dict[str, Any] = {}
    for name in KEPT:
        s = schema.BY_NAME[name]
        if name not in saved or name not in values:
            continue
        if s.shown_when and saved.get(s.shown_when[0]) not in s.shown_when[1]:
            continue
        try:
            theirs = check_json_value(s, saved[name])
        except ValueError:
            continue
        if _comparable(s, values[name]) != _comparable(s, theirs):
            out[name] = theirs
    return out


def _comparable(s: schema.Setting, value: Any) -> Any:
    if value is None:
        return None
    if s.kind == "path":
        return os.path.abspath(os.path.expanduser(str(value)))
    if s.is_list:
        return tuple(sorted(value))
    return value


def changed_on_resume(carried: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """One line per setting given with a value other than the run's, with what that changes
    for the run."""
    lines = []
    for name, value in given.items():
        if name not in carried or _same(name, carried[name], value):
            continue
        line = f"resuming with {schema.BY_NAME[name].flags[-1]} {shown(value)} " \
               f"(the run used {shown(carried[name])})"
        consequence = _consequence(name, carried[name], value)
        lines.append(f"{line}: {consequence}" if consequence else line)
    return lines


def resume_changes(command: str, saved: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """``changed_on_resume`` for a resumed run's whole config (``values``) against its
    checkpoint's recorded one (``saved``): what the pre-flight says before a start is
    confirmed, and the trainer logs when it resumes."""
    carried = carried_settings(command, saved)
    return changed_on_resume(carried, {k: v for k, v in values.items() if k in carried})


def _consequence(name: str, theirs: Any, ours: Any) -> str | None:
    """What a changed setting does to a resumed run, where it is more than the new value."""
    if name in SCHEDULE:
        return "the learning-rate schedule is recomputed, so the run no longer follows its " \
               "first course"
    if name == "seed":
        return "the data order and random draws will differ from the original run"
    if name == "val_split":
        return "other files are held out, so the data order and the validation loss will " \
               "differ from the original run"
    if name == "ema_decay":
        if not theirs:
            return "the EMA starts from the resumed weights"
        if not ours:
            return "this run keeps no EMA, so final/ and best/ come from the trained weights"
        return "the run's EMA goes on with the new decay"
    return None


def _same(name: str, carried: Any, given: Any) -> bool:
    """Equal values; lists in any order; for a path, the same folder however it is written
    (./tensors beside the absolute path the run recorded read as a changed --dataset-dir)."""
    s = schema.BY_NAME[name]
    if carried == given or (s.is_list and _comparable(s, carried) == _comparable(s, given)):
        return True  # (a list against the schema's tuple, or in another order)
    from sidestep.config.paths import same_place

    return s.kind == "path" and bool(carried) and bool(given) and same_place(carried, given)


def shown(value: Any) -> str:
    """A setting's value in words: lists spaced, switches on/off, unset "none"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
