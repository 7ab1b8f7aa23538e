"""The training form's state and rules, without Textual.

The form is a view over ``resolve(mode, explicit, preset, profile)``, the same function the CLI
uses: fields the user edited are explicit values, a loaded preset fills the rest, a VRAM profile
sits under the preset, and untouched fields show what resolution gives (so shift and CFG follow
the model variant). While the form is invalid, fields show ``layered_values``: the same
precedence, without the checks. Start is refused while any problem blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidestep.config import schema
from sidestep.config.plural import counted
from sidestep.config.resolve import ConfigError, Resolved, layered_values, resolve
from sidestep.config.values import parse_text
from sidestep.tui.wording import in_app_words

FORM_MODES = schema.TRAIN_MODES
TITLES = {"fixed": "Fixed training", "vanilla": "Vanilla training",
          "selective": "Selective training"}
PATH_CHECKS = ("checkpoint_dir", "dataset_dir", "output_dir", "resume_from", "module_config")
# Selective training's own fields are basic there: without a module config it cannot start.
SELECTIVE_BASIC = ("module_config", "auto_estimate")
# The estimate's settings matter only when the run estimates first (a module config file
# already holds its picks).
FORM_SHOWN_WHEN = {name: ("auto_estimate", (True,))
                   for name in ("estimate_batches", "top_k", "granularity")}


def form_settings(mode: str) -> list[schema.Setting]:
    """The mode's settings in schema order, except that selective training's own groups come
    right after the data (the module config is what this mode is about)."""
    settings = list(schema.settings_for(mode))
    own = [s for s in settings if s.group in ("Selective", "Estimation")]
    if not own:
        return settings
    rest = [s for s in settings if s not in own]
    after = max(i for i, s in enumerate(rest) if s.group in ("Model / Paths", "Data")) + 1
    return rest[:after] + own + rest[after:]


@dataclass(frozen=True)
class FieldView:
    """What one field shows. ``visible`` is the rules' answer; the screen may keep a focused
    field shown anyway."""

    visible: bool
    value: Any
    error: str | None
    note: str | None
    note_kind: str  # warning | info


class FormModel:
    def __init__(self, mode: str = "fixed", explicit: dict[str, Any] | None = None,
                 preset: str | None = None, advanced: bool | None = None):
        self.mode = mode
        self.settings = form_settings(mode)
        self.by_name = {s.name: s for s in self.settings}
        self.explicit: dict[str, Any] = {k: v for k, v in (explicit or {}).items()
                                         if k in self.by_name}
        self.preset_name = preset
        self.preset_values: dict[str, Any] = {}
        self.profile_values: dict[str, Any] = {}
        self.profile_note: str | None = None
        self.parse_errors: dict[str, str] = {}
        self.path_errors: dict[str, str] = {}
        self.path_notes: dict[str, str] = {}
        self.resolved: Resolved | None = None
        self.config_errors: list = []
        self.tried_start = False
        self.advanced = advanced
        self.gpus: list[dict] = []
        self.model_cfg: dict | None = None
        # the model's config is being read (a form with a checkpoint folder reads it at once):
        # meanwhile an estimate on the default model's sizes showed, then jumped (5.6 -> 0.7 GiB)
        self.model_cfg_pending = bool(self.explicit.get("checkpoint_dir"))

    # -- inputs --------------------------------------------------------------------------------
    def edit(self, name: str, raw: Any) -> None:
        """A typed value (text is parsed; a bad one is a blocking problem, not a value)."""
        s = self.by_name[name]
        try:
            value = parse_text(s, raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            self.parse_errors[name] = str(exc)
            self.explicit.pop(name, None)
        else:
            self.parse_errors.pop(name, None)
            self.explicit[name] = value

    def set_preset(self, name: str, values: dict[str, Any]) -> list[str]:
        """Load a preset; returns the fields it now decides (typed values there are dropped)."""
        self.preset_name = name
        self.preset_values = {k: v for k, v in values.items() if k in self.by_name}
        for key in self.preset_values:
            self.explicit.pop(key, None)
            self.parse_errors.pop(key, None)
        return list(self.preset_values)

    def set_profile(self, values: dict[str, Any], note: str | None, gpus: list[dict],
                    chosen: bool = False) -> list[str]:
        """A VRAM profile's values. ``chosen`` (picked in the form, after a preset was loaded):
        the later choice wins, so the fields both set are the profile's now (picking 8gb over
        the demo's preset changed nothing). Returns those fields."""
        self.gpus = gpus
        self.profile_values = {k: v for k, v in values.items() if k in self.by_name}
        self.profile_note = note
        taken = [k for k in self.profile_values if k in self.preset_values] if chosen else []
        for key in taken:
            del self.preset_values[key]
        return taken

    def set_path_check(self, name: str, error: str | None, note: str | None) -> None:
        for store, value in ((self.path_errors, error), (self.path_notes, note)):
            if value:
                store[name] = value
            else:
                store.pop(name, None)

    # -- resolution ----------------------------------------------------------------------------
    def layered(self) -> dict[str, Any]:
        """Every field's value by the one precedence ``resolve`` uses (also while the form is
        invalid): defaults < platform < model family < profile < preset < typed values."""
        return layered_values(self.mode, self.explicit, self.preset_values,
                              self.profile_values)[0]

    def value(self, name: str) -> Any:
        return self.layered().get(name)

    def visible_by_condition(self, s: schema.Setting, values: dict | None = None) -> bool:
        """``values``: the layered values when the caller has them (they cost a resolve)."""
        rule = s.shown_when or FORM_SHOWN_WHEN.get(s.name)
        if not rule:
            return True
        other, allowed = rule
        return (values if values is not None else self.layered()).get(other) in allowed

    def explicit_for_resolve(self) -> dict[str, Any]:
        """Typed values of fields their condition hides do not count."""
        return {k: v for k, v in self.explicit.items()
                if self.visible_by_condition(self.by_name[k])}

    # The epochs the checkpoint in resume_from trained (its path check reads them): Start
    # would be refused (the engine's check) unless Epochs goes above, so the form says so.
    epochs_done: int | None = None
    # Set when the form resumes a run: (its checkpoint, the run's recorded settings). What a
    # resume cannot change (config/resume.py's KEPT) is a field error while it resumes that.
    resumed: tuple[str, dict] | None = None

    def resolve(self) -> Resolved | None:
        try:
            self.resolved = resolve(self.mode, self.explicit_for_resolve(), self.preset_values,
                                    profile=self.profile_values)
            self.config_errors = []
        except ConfigError as exc:
            self.resolved = None
            self.config_errors = exc.problems
        done = self.epochs_done
        if self.resolved is not None and done is not None and self.value("resume_from") \
                and self.resolved.config.epochs <= done:
            self.resolved = None
            self.config_errors = [schema.FieldProblem(
                "epochs", f"the run has trained {counted(done, 'epoch')}; raise this above "
                f"{done} to train it further")]
        if self.resolved is not None and self.resumed is not None \
                and str(self.value("resume_from")) == self.resumed[0]:
            from sidestep.config.resume import kept_on_resume, shown

            kept = kept_on_resume(self.resumed[1], self.resolved.config.to_dict())
            if kept:
                self.resolved = None
                self.config_errors = [schema.FieldProblem(name, (
                    f"a resumed run keeps the run's {shown(theirs)}: set it back, or empty "
                    f"'{self.by_name['resume_from'].label}' to start a new run with this"))
                    for name, theirs in kept.items()]
        return self.resolved

    def resume_notes(self) -> list[str]:
        """What the form changes from the run it resumes (the review shows them before
        Start, as the CLI does before its prompt), in the app's words."""
        if self.resolved is None or self.resumed is None \
                or str(self.value("resume_from")) != self.resumed[0]:
            return []
        from sidestep.config.resume import resume_changes

        return [in_app_words(line) for line in
                resume_changes(self.mode, self.resumed[1], self.resolved.config.to_dict())]

    def current_values(self) -> dict[str, Any]:
        """Every field's current value (resolved where the form is valid)."""
        if self.resolved is not None:
            return self.resolved.config.to_dict()
        layered = self.layered()
        return {s.name: layered.get(s.name) for s in self.settings}

    def values_for_preset(self) -> dict[str, Any]:
        """What "Save preset" stores: the form's values, less those the model family decides
        (shift, inference steps, CFG ratio) unless typed or from the loaded preset; a preset
        saved on turbo then trains a base model with base's schedule, as the CLI's does."""
        chosen = set(self.explicit) | set(self.preset_values)
        return {k: v for k, v in self.current_values().items()
                if k not in self.by_name or not self.by_name[k].variant_defaults or k in chosen}

    def field_views(self, touched) -> dict[str, FieldView]:
        """What each field shows after ``resolve``; ``touched(name)``: the user set it."""
        layered = self.layered()
        shown = self.resolved.config.to_dict() if self.resolved else layered
        warnings = {w.field: w.message for w in (self.resolved.warnings if self.resolved
                                                  else ())}
        errors: dict[str, str] = {}
        for problem in self.config_errors:
            errors.setdefault(problem.field, problem.message)
        out = {}
        for s in self.settings:
            visible = self.visible_by_condition(s, layered) and (
                self.advanced or s.level == "basic" or s.name in SELECTIVE_BASIC
                or s.name in errors)
            message = self.parse_errors.get(s.name) or self.path_errors.get(s.name)
            # "is required" waits for a first edit or a start: a new form is not all red
            if message is None and s.name in errors and (touched(s.name) or self.tried_start
                                                         or errors[s.name] != "is required"):
                message = errors[s.name]
            note, kind = None, "info"
            if not message:
                if s.name in warnings:
                    note, kind = warnings[s.name], "warning"
                else:
                    note = self.path_notes.get(s.name)
            out[s.name] = FieldView(bool(visible), shown.get(s.name),
                                    in_app_words(message) if message else message,
                                    in_app_words(note) if note else note, kind)
        return out

    def blocking_problems(self) -> list[str]:
        """The problems in the order their fields appear on the form (the status line names
        the first: it named a typed one before a path one, wherever they were)."""
        found = [*self.parse_errors.items(), *self.path_errors.items()]
        found += [(p.field, p.message) for p in self.config_errors
                  if p.field not in self.parse_errors and p.field not in self.path_errors]
        order = {s.name: i for i, s in enumerate(self.settings)}
        found.sort(key=lambda item: order.get(item[0], len(order)))  # stable: others last
        out = []
        for name, msg in found:
            s = self.by_name.get(name)
            out.append(f"{s.label if s else name}: {in_app_words(msg)}")
        return out

    def status_line(self) -> tuple[str, bool]:
        """(the status line, whether it reports a problem)."""
        problems = self.blocking_problems()
        if problems:
            shown = problems[0] if len(problems) == 1 else \
                f"{len(problems)} fields need attention; first: {problems[0]}"
            return f"✗ {shown}", True
        cfg = self.resolved.config if self.resolved else None
        line = "✓ ready"
        if cfg is not None:
            line += f": {cfg.mode} {cfg.adapter_type}, {counted(cfg.epochs, 'epoch')}, " \
                    f"lr {cfg.learning_rate:g}, model {cfg.model_variant}"
        return line, False

    def estimate_line(self) -> tuple[str, str | None]:
        """(the VRAM estimate line, the verdict: fits, tight, will not fit, "" for none, or
        None when there is no estimate, and the line keeps its last colour)."""
        if self.resolved is None:
            return "VRAM estimate: — (fix the fields first)", None
        if self.model_cfg_pending:
            return "VRAM estimate: reading the model's config …", None
        from sidestep.config.vram import GIB_MIB, estimate

        try:
            est = estimate(self.resolved.config, self.model_cfg)
        except ValueError as exc:
            return f"VRAM estimate: {exc}", None
        text = f"VRAM estimate: {est.total_gib:.1f} GiB peak"
        c = self.resolved.config
        if str(c.devices) != "1" or c.num_nodes > 1:  # data parallel: say what a step takes
            from sidestep.engine.describe import batches_text

            text += " per device · " + batches_text(c).rsplit(",", 1)[0]
        free = self.gpus[0].get("free_mib") if self.gpus else None
        verdict = est.verdict(free) if free else None
        if verdict:
            text += f" — {verdict} ({free / GIB_MIB:.1f} GiB free on " \
                    f"{self.gpus[0].get('name') or 'GPU 0'})"
            if self.profile_note:
                text += f" · {self.profile_note}"
        else:
            text += " — no GPU detected" + (" (auto profile not applied)"
                                            if self.profile_note else "")
        return text, verdict or ""


def check_path(name: str, value: Any, resume: Any) -> tuple[str | None, str | None, Any]:
    """(error, note, what it read: the checkpoint folder's models, a checkpoint's trained
    epochs) for a path field; blocking I/O, for a worker thread."""
    if not value:
        return None, None, ([] if name == "checkpoint_dir" else None)
    path = Path(str(value)).expanduser()
    if name == "checkpoint_dir":
        from sidestep.model.checkpoints import DiscoveryError, list_models

        try:
            entries = list_models(path)
        except DiscoveryError as exc:
            return str(exc), None, []
        if not entries:
            return (f"{path}: no ACE-Step model folders here (acestep-v15-turbo/, ...)", None,
                    [])
        return None, f"{len(entries)} model(s): " + ", ".join(e.name for e in entries[:4]), \
            entries
    if name == "dataset_json":
        from sidestep.data.dataset_json import DatasetError, load_dataset_json

        try:
            _, samples = load_dataset_json(path)
        except DatasetError as exc:
            return str(exc), None, None
        return None, f"{len(samples)} songs", None
    if name == "dataset_dir":
        from sidestep.data.tensors import DataError, list_files, not_tensor_files

        try:
            files = list_files(path)
        except DataError as exc:
            return str(exc), None, None
        bad = not_tensor_files(files)
        if bad:  # the run would fail on them after loading the model
            names = ", ".join(f.name for f in bad[:3]) + (" ..." if len(bad) > 3 else "")
            return (f"{len(bad)} of the {len(files)} .pt files are not tensor files ({names}); "
                    "preprocess those songs again, or move the files away", None, None)
        return None, f"{len(files)} preprocessed songs", None
    if name == "output_dir":
        from sidestep.engine.run_dir import RunDirError, check_output_dir

        try:
            check_output_dir(path, resume)
        except RunDirError as exc:
            return str(exc), None, None
        return None, ("new folder" if not path.exists() else None), None
    if name == "resume_from":
        from sidestep.engine.checkpointing import (CheckpointProblem, quick_problem,
                                                   saved_epoch)

        problem = quick_problem(path)
        if problem:
            return problem, None, None
        try:  # the epochs it trained: Epochs must go above them (the engine refuses at Start)
            return None, None, saved_epoch(path)
        except (CheckpointProblem, OSError, RuntimeError, ValueError) as exc:
            return f"{path}: cannot read its training state ({exc})", None, None
    if name == "module_config":
        from sidestep.engine.module_config import ModuleConfigError, load_module_config

        try:
            cfg = load_module_config(path)
        except ModuleConfigError as exc:
            return str(exc), None, None
        unit = cfg.granularity + ("s" if len(cfg.modules) != 1 else "")
        return None, f"{len(cfg.modules)} {unit}" + (f", estimated on {cfg.model}"
                                                     if cfg.model else ""), None
    return None, None, None


def fresh_run_dir(root: Path | str, prefix: str = "run") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / f"{prefix}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = Path(root) / f"{prefix}-{stamp}-{n}"
    return str(candidate)
