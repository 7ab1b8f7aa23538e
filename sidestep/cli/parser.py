"""The argparse tree, generated from the settings schema.

Schema flags default to ``argparse.SUPPRESS`` so the namespace holds only what the user typed:
that is what lets explicit flags win over a preset, and a preset over the defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sidestep import __version__
from sidestep.config import schema
from sidestep.config.schema import Setting
from sidestep.config.values import parse_text
from sidestep.config.vram import PROFILE_WORDS

TRAINING_HELP = {
    "fixed": "Train an adapter: LoRA, DoRA, LoKR or LoHA (corrected: logit-normal timesteps, "
             "CFG dropout).",
    "vanilla": "Train the original way: discrete timesteps from the model's schedule "
               "(--num-inference-steps, --shift: turbo 8 and 3.0), no CFG dropout.",
    "selective": "Corrected training on the modules an estimate picked.",
}
OTHER_HELP = {
    "estimate": "Rank attention modules by gradient sensitivity on your dataset (no training).",
    "compare-configs": "Compare module config JSON files written by `estimate`.",
    "build-dataset": "Build dataset.json from a folder of audio and sidecar text files.",
    "preprocess": "Encode audio into the .pt tensors that training reads.",
}


class _Parser(argparse.ArgumentParser):
    """No prefix matching: `--epoch 3` must be an error, not a silent `--epochs 3`.
    Subparsers are made with ``type(parent)``, so this covers the whole tree."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """One line and the way to the full list, exit 2: argparse's default prints the whole
        usage first (58 lines for `fixed`), burying the one line that says what is wrong."""
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every "
                     "option)\n")

    def _check_value(self, action, value):
        # `sidestep fixd`: name the nearest choice rather than list all twenty commands
        if action.choices is not None and value not in action.choices:
            import difflib

            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices],
                                              n=1, cutoff=0.6)
            if close:
                what = (action.metavar or "command").lower() \
                    if isinstance(action, argparse._SubParsersAction) else "choice"
                raise argparse.ArgumentError(action, f"unknown {what} {value!r}; did you mean "
                                                     f"`{close[0]}`?")
        super()._check_value(action, value)

    def parse_args(self, args=None, namespace=None):
        # argparse reports a subcommand's unknown flags from the root parser, which would
        # name `sidestep --help` (no training flags there) and guess nothing
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._unrecognized(namespace, extras, sys.argv[1:] if args is None else args)
        return namespace

    def _unrecognized(self, namespace, extras: list[str], args) -> None:
        import difflib

        parser = self._chosen(namespace)
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        guesses, hints = [], []
        for token in extras:
            flag = token.split("=", 1)[0]
            if not flag.startswith("-") or _is_number(flag):
                continue
            if parser is not self and flag in self._option_string_actions:  # -y, --plain
                hints.append(f"{flag} goes before the command: `{self.prog} {flag} "
                             f"{parser.prog.split(' ', 1)[1]} ...`")
                continue
            elsewhere = self._commands_with(flag, parser)
            if elsewhere:  # a real flag, of other commands: no near spelling to guess
                names = [f"`{n}`" for n in elsewhere]
                names = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1
                                     else names)
                hints.append(f"{flag} is a setting of {names}, not of "
                             f"`{parser.prog.split(' ', 1)[-1]}`")
                continue
            guesses += difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        if guesses:
            hints.insert(0, f"did you mean {', '.join(guesses)}?")
        hints += _joined_list_hints(parser, args, extras) or _bare_list_hints(parser, namespace,
                                                                              extras)
        parser.error(f"unrecognized arguments: {' '.join(extras)}"
                     + "".join(f"; {h}" for h in hints))

    def _commands_with(self, flag: str, chosen: argparse.ArgumentParser) -> list[str]:
        """The training commands (siblings of ``chosen``) that take ``flag``: `selective
        --attention-type` was guessed to mean --attention-backend."""
        from sidestep.config.schema import TRAIN_MODES

        subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        if chosen is self or not subs:
            return []
        return [name for name, sub in subs[0].choices.items()
                if name in TRAIN_MODES and sub is not chosen
                and flag in sub._option_string_actions]

    def _chosen(self, namespace) -> argparse.ArgumentParser:
        """The deepest subcommand parser the arguments picked (``sidestep presets save``)."""
        parser = self
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            chosen = subs[0].choices.get(getattr(namespace, subs[0].dest, None)) if subs else None
            if chosen is None:
                return parser
            parser = chosen

    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "keeps_argv", False):  # the root: `--detach` restarts with these
            args = list(sys.argv[1:] if args is None else args)
            namespace = namespace if namespace is not None else argparse.Namespace()
            namespace.raw_argv = list(args)
        return super().parse_known_args(args, namespace)


def _joined_list_hints(parser: argparse.ArgumentParser, args, extras: list[str]) -> list[str]:
    """`--configs=a.json b.json`: argparse takes only a.json after '=' and calls b.json an
    unknown argument. Say how to give several."""
    hints = []
    for token in args or ():
        flag, eq, value = token.partition("=")
        action = parser._option_string_actions.get(flag) if eq else None
        if action is not None and action.nargs in ("+", "*") and any(
                not e.startswith("-") for e in extras):
            hints.append(f"{flag}= takes one value; for several write `{flag} {value} "
                         f"{' '.join(e for e in extras if not e.startswith('-'))}`")
    return hints


def _bare_list_hints(parser: argparse.ArgumentParser, namespace, extras: list[str]) -> list[str]:
    """`compare-configs a.json b.json`: files given without the option that takes them (the
    spec names it --configs). Say which option, when one list option is left unset."""
    bare = [e for e in extras if not e.startswith("-")]
    unset = [a for a in parser._actions if a.nargs == "+" and a.option_strings
             and not hasattr(namespace, a.dest)]
    if not bare or len(unset) != 1:
        return []
    flag = unset[0].option_strings[-1]
    return [f"give them with {flag}: `{parser.prog} {flag} {' '.join(bare)}`"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # defaults are written by hand below
        return action.help or ""


def _default_text(s: Setting, paths_required: bool = True, command: str | None = None) -> str:
    from sidestep.config.values import to_text

    if s.required and paths_required:
        unless = schema.BY_NAME.get(s.required_unless or "")
        if unless is not None and command in unless.commands:
            return f"required, except with {unless.flags[-1]}"
        return "required"
    parts = []
    if s.variant_defaults:
        parts.append(", ".join(f"{k}{'/sft' if k == 'base' else ''}: {to_text(s, v) or 'off'}"
                               for k, v in s.variant_defaults.items()))
    else:
        shown = to_text(s, s.default) if s.default not in (None, "") else "none"
        parts.append(f"default: {shown}")
    if s.windows_default is not None:
        parts.append(f"Windows: {to_text(s, s.windows_default)}")
    return "; ".join(parts)


def _value_type(s: Setting):
    """argparse ``type=`` callable for one value (list settings check each element)."""
    if s.is_list:
        def one(text: str) -> str:
            if s.choices is not None and text not in s.choices:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not one of: {', '.join(s.choices)}")
            return os.path.expanduser(text) if s.kind == "path_list" else text
        return one

    def convert(text: str) -> Any:
        if s.kind == "path" and not text.strip():
            # on the command line an empty path is an unset shell variable, not a wish to
            # leave the setting out (`--resume-from "$CKPT"` silently started a new run)
            raise argparse.ArgumentTypeError(
                "is empty; give a path, or leave the option out (an unset shell variable?)")
        try:
            return parse_text(s, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = s.kind
    return convert


def _whole(lo: int, hi: int):
    """argparse ``type=`` of a whole number in [lo, hi], worded as the settings' are."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {value}")
        return value
    return whole


def user_path(text: str) -> str:
    """argparse ``type=`` of a path that is not a setting: ``~`` is the home folder here too
    (quoted, or after ``=``, the shell leaves it; `presets export x ~/x.json` wrote ./~)."""
    return os.path.expanduser(text)


def add_setting(parser: argparse._ActionsContainer, s: Setting,
                paths_required: bool = True, listed: bool = True,
                command: str | None = None) -> None:
    """``listed=False``: taken, but left out of --help. ``command``: whose --help it is."""
    # argparse %-formats help strings: a literal % (e.g. "10% to 100%") must be doubled.
    text = s.help_for(command)
    if "Default:" not in text:  # one that words its default itself: not a second "(default: none)"
        text = f"{text} ({_default_text(s, paths_required, command)})"
    help_text = text.replace("%", "%%") if listed else argparse.SUPPRESS
    kw: dict[str, Any] = {"dest": s.name, "default": argparse.SUPPRESS, "help": help_text}
    if s.kind == "bool":
        parser.add_argument(*s.flags, action=argparse.BooleanOptionalAction, **kw)
        return
    if s.metavar:
        kw["metavar"] = s.metavar
    elif s.choices and not s.is_list:
        kw["metavar"] = "{" + ",".join(str(c) for c in s.choices) + "}"
    if s.is_list:
        kw["nargs"] = "+"
    parser.add_argument(*s.flags, type=_value_type(s), **kw)


def add_settings(parser: argparse.ArgumentParser, settings: tuple[Setting, ...],
                 paths_required: bool = True, command: str | None = None) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in settings:
        if s.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group)
        add_setting(groups[s.group], s, paths_required, command=command)


# What the memory estimate reads nothing of: its help listed --detach, --notify-command and the
# sample settings beside the ones that change the figure (they are still taken, unlisted, so
# a training command line can be estimated as it is).
NOT_FOR_VRAM = ("Logging / TensorBoard", "Preprocessing", "Run control", "Samples",
                "Checkpointing", "Validation / EMA")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidestep",
        description="Side-Step: fine-tune ACE-Step 1.5 with LoRA or DoRA (PEFT), LoKR or LoHA "
                    "(LyCORIS). "
                    "Run `sidestep-tui` for the terminal app.",
    )
    parser.add_argument("--plain", action="store_true",
                        help="plain text output, no colours or live panels (automatic when "
                             "stdout is not a terminal)")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="skip the confirmation prompt before training")
    parser.add_argument("--version", action="version", version=f"sidestep {__version__}")
    parser.keeps_argv = True
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for mode in schema.TRAIN_MODES:
        p = sub.add_parser(mode, help=TRAINING_HELP[mode], description=TRAINING_HELP[mode],
                           formatter_class=_Formatter)
        p.add_argument("--preset", metavar="NAME",
                       help="start from a preset; flags given here win over it")
        p.add_argument("--vram-profile", metavar="PROFILE",
                       help=f"start from a VRAM tier preset: {PROFILE_WORDS}; --preset and "
                            "flags win over it")
        p.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration as JSON and exit")
        add_settings(p, schema.settings_for(mode), command=mode)

    for cmd in ("estimate", "preprocess", "build-dataset", "compare-configs"):
        p = sub.add_parser(cmd, help=OTHER_HELP[cmd], description=OTHER_HELP[cmd],
                           formatter_class=_Formatter)
        p.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration as JSON and exit")
        if cmd == "compare-configs":
            p.add_argument("--json", action="store_true",
                           help="print JSON: files, every module's ranks and scores, pairs")
        add_settings(p, schema.settings_for(cmd), command=cmd)

    _add_presets_parser(sub)

    gpu = sub.add_parser("gpu", help="Show detected GPUs and the suggested VRAM profile.")
    gpu.add_argument("--json", action="store_true", help="print JSON")

    vram = sub.add_parser("vram-estimate", formatter_class=_Formatter,
                          help="Estimate peak training memory for a configuration.",
                          description="Estimate peak training memory from the configuration "
                                      "and the model's config.json (no weights are loaded).")
    vram.add_argument("--json", action="store_true", help="print JSON with a peak_mib key")
    vram.add_argument("--preset", metavar="NAME", help="start from a preset")
    vram.add_argument("--vram-profile", metavar="PROFILE",
                      help=f"start from a VRAM tier preset: {PROFILE_WORDS}")
    vram.add_argument("--mode", choices=schema.TRAIN_MODES, default="fixed",
                      help="training mode (default: fixed)")
    # paths are optional there: without --checkpoint-dir it estimates the 2B model
    add_settings(vram, tuple(s for s in schema.settings_for("fixed")
                             if s.group not in NOT_FOR_VRAM), paths_required=False)
    fixed = {s.name for s in schema.settings_for("fixed")}
    # a training command's flags, as given (selective's too): taken, unlisted
    taken = {s.name: s for m in schema.TRAIN_MODES for s in schema.settings_for(m)}
    for s in taken.values():
        if s.group in NOT_FOR_VRAM or s.name not in fixed:
            add_setting(vram, s, listed=False)

    check = sub.add_parser("check-dataset", formatter_class=_Formatter,
                           help="Find problems in a dataset folder before training on it.",
                           description="Check a folder of audio (with sidecars and dataset.json) "
                                       "and/or preprocessed .pt files: unreadable, empty, silent, "
                                       "clipped, short or duplicate audio, bad sidecars, lyrics "
                                       "on instrumentals, tensors made for another model. Exit 0 "
                                       "when the dataset is usable, 2 when a problem blocks "
                                       "training.")
    check.add_argument("folder", metavar="FOLDER", type=user_path, help="the dataset folder")
    check.add_argument("--json", action="store_true",
                       help="print JSON with a 'problems' list (file, kind, severity, message)")
    add_setting(check, schema.BY_NAME["chunk_duration"], command="check-dataset")
    # Optional here (training requires them): with them, .pt files are checked against the
    # model's widths instead of against each other.
    for name, why in (("checkpoint_dir", "checkpoints root, to check .pt files against the "
                                         "model (optional)"),
                      ("model_variant", "the model under --checkpoint-dir (default: turbo)")):
        s = schema.BY_NAME[name]
        check.add_argument(*s.flags, dest=name, default=argparse.SUPPRESS, metavar=s.metavar,
                           type=user_path if s.kind == "path" else None, help=why)

    demo = sub.add_parser("make-demo", help="Write the tiny demo checkpoint root and dataset.",
                          description="Write a tiny but complete ACE-Step checkpoint root "
                                      "(turbo and base DiT, VAE, text encoder) plus synthetic "
                                      "audio and preprocessed tensors, for tests and --demo.")
    demo.add_argument("dir", metavar="DIR", type=user_path, help="folder to create")
    demo.add_argument("--seed", type=_whole(0, 2**32 - 1), default=0,
                      help="seed for weights and audio")
    demo.add_argument("--force", action="store_true", help="write into a non-empty folder")
    # bounded: 100000 clips wrote 12 GB before it was stopped
    demo.add_argument("--clips", type=_whole(1, 500), default=12,
                      help="number of audio clips, 1 to 500 (default 12)")

    _add_adapter_parsers(sub)
    from sidestep.cli.runs_cmd import add_run_parsers

    add_run_parsers(sub, _Formatter)  # runs, attach, stop, pause, resume, save
    return parser


def _add_adapter_parsers(sub) -> None:
    exp = sub.add_parser("export", formatter_class=_Formatter,
                         help="Write an adapter for ComfyUI, acestep.cpp or PEFT.",
                         description="Export a trained adapter so another runtime plays it at "
                                     "the strength it was trained at: one .safetensors file "
                                     "for ComfyUI or acestep.cpp (LoRA with a per-module "
                                     ".alpha; LoKR with LyCORIS keys), or a PEFT folder. "
                                     "Exit 2 when the source is not an adapter, its "
                                     "adapter_config.json is malformed or disagrees with its "
                                     "weights, or the output is refused (nothing is written "
                                     "then).")
    exp.add_argument("adapter", metavar="ADAPTER", type=user_path,
                     help="an adapter folder, a checkpoint folder or a run folder (its final "
                          "adapter)")
    exp.add_argument("--format", dest="fmt", required=True,
                     choices=("comfyui", "acestep-cpp", "peft"), help="the target runtime")
    exp.add_argument("--output", required=True, metavar="PATH", type=user_path,
                     help="the .safetensors file to write (a folder for --format peft)")
    exp.add_argument("--normalize-alpha", action="store_true",
                     help="fold each module's scale into its up factor and set alpha = rank, "
                          "for runtimes that ignore alpha")
    exp.add_argument("--force", action="store_true", help="replace an existing output")
    exp.add_argument("--checkpoint-dir", metavar="DIR", type=user_path,
                     help="checkpoint root, to check names and shapes against that model "
                          "(default: the run's model, else the standard ACE-Step 1.5 names)")
    exp.add_argument("--model-variant", metavar="NAME", default=None,
                     help="model folder or alias under --checkpoint-dir (default: turbo)")

    chk = sub.add_parser("check-adapter", formatter_class=_Formatter,
                         help="Show whether ACE-Step, PEFT, ComfyUI and acestep.cpp load an "
                              "adapter.",
                         description="For each runtime (ACE-Step 1.5's loader, PEFT/diffusers, "
                                     "ComfyUI, acestep.cpp): whether it loads the adapter, how "
                                     "many decoder modules it patches, the keys it drops and "
                                     "the strength it applies relative to training. Also flags "
                                     "foreign keys, missing alpha and rank mismatches. Exit 0 "
                                     "when no problem is found in the file, 1 when one is, 2 "
                                     "when the path is not an adapter or its "
                                     "adapter_config.json is malformed.")
    chk.add_argument("path", metavar="FILE_OR_FOLDER", type=user_path,
                     help="a .safetensors file, or an adapter, checkpoint or run folder")
    chk.add_argument("--json", action="store_true",
                     help="print JSON: problems, and per runtime loads/modules/dropped/strength")
    chk.add_argument("--checkpoint-dir", metavar="DIR", type=user_path,
                     help="checkpoint root, to check names and shapes against that model "
                          "(default: the run's model, else the standard ACE-Step 1.5 names)")
    chk.add_argument("--model-variant", metavar="NAME", default=None,
                     help="model folder or alias under --checkpoint-dir (default: turbo)")


def _add_presets_parser(sub) -> None:
    p = sub.add_parser("presets", help="List, view, save, delete, import and export presets.",
                       description="Presets are searched in ./presets (local), then the global "
                                   "config folder, then the built-ins.")
    ps = p.add_subparsers(dest="preset_action", metavar="ACTION", required=True)
    ps.add_parser("list", help="list presets from every location")
    v = ps.add_parser("view", help="show a preset's values")
    v.add_argument("name")
    s = ps.add_parser("save", help="save the given flags as a local preset",
                      formatter_class=_Formatter)
    s.add_argument("name")
    s.add_argument("--description", default="", help="one-line description")
    s.add_argument("--from", dest="from_preset", metavar="PRESET",
                   help="start from an existing preset instead of the defaults")
    s.add_argument("--force", action="store_true", help="overwrite a local preset of that name")
    add_settings(s, schema.PRESET_FIELDS)
    d = ps.add_parser("delete", help="delete a local or global preset")
    d.add_argument("name")
    i = ps.add_parser("import", help="copy a preset JSON file into ./presets")
    i.add_argument("file", type=user_path)
    i.add_argument("--force", action="store_true", help="overwrite a local preset of that name")
    e = ps.add_parser("export", help="write a preset (any location) to a file")
    e.add_argument("name")
    e.add_argument("path", type=user_path)
    e.add_argument("--force", action="store_true", help="overwrite an existing file")


def explicit_values(ns: argparse.Namespace, settings: tuple[Setting, ...]) -> dict[str, Any]:
    """The schema values the user typed, keyed by setting name (lists become tuples)."""
    out: dict[str, Any] = {}
    for s in settings:
        if hasattr(ns, s.name):
            value = getattr(ns, s.name)
            out[s.name] = tuple(value) if s.is_list and value is not None else value
    return out
