"""``sidestep presets list | view | save | delete | import | export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidestep.cli import EXIT_BAD_INPUT, EXIT_OK
from sidestep.cli.output import Out
from sidestep.cli.parser import explicit_values
from sidestep.config import schema
from sidestep.config.presets import PresetError, PresetStore
from sidestep.config.resolve import alpha_warning
from sidestep.config.values import to_text


def run_presets(args: argparse.Namespace, out: Out, store: PresetStore | None = None) -> int:
    store = store or PresetStore()
    action = args.preset_action
    try:
        if action == "list":
            rows = []
            for info in store.list():
                where = info.source + (f" (hides {', '.join(info.shadows)})" if info.shadows
                                       else "")
                rows.append((info.name, where, info.description))
            out.table("Presets", ("name", "location", "description"), rows)
            out.info(f"local: {store.dirs['local']}\nglobal: {store.dirs['global']}\n"
                     f"built-in: {store.dirs['builtin']}")
        elif action == "view":
            preset = store.load(args.name)
            rows = []
            for s in schema.PRESET_FIELDS:
                flag = s.flags[-1]  # what the user types, not the file's key (target_modules_str)
                if s.name in preset.values:
                    rows.append((flag, to_text(s, preset.values[s.name]) or "(none)"))
                elif s.variant_defaults:  # turbo's shift 3 or base's CFG 0.15: not both
                    rows.append((flag, "(the model's default)"))
                else:
                    rows.append((flag, f"{to_text(s, s.default) or '(none)'} (default)"))
            title = f"{preset.name} [{preset.source}]" + (f" {preset.description}"
                                                          if preset.description else "")
            out.table(title, ("setting", "value"), rows)
        elif action == "save":
            values: dict = {}
            if args.from_preset:
                values.update(store.load(args.from_preset).values)
            else:
                values.update({s.name: s.default for s in schema.PRESET_FIELDS
                               if not s.variant_defaults})
            given = explicit_values(args, schema.PRESET_FIELDS)
            values.update(given)
            warning = alpha_warning(values, given)
            if warning:
                out.warn(warning)
            path = store.save(args.name, values, args.description, overwrite=args.force)
            named = f" (named '{path.stem}')" if path.stem != args.name else ""
            out.info(f"saved preset to {path}{named}")
            _say_hidden(store, path.stem, out)
        elif action == "delete":
            source, path = store.delete(args.name)
            out.info(f"deleted {source} preset {path}")
        elif action == "import":
            name, path = store.import_file(Path(args.file), overwrite=args.force)
            out.info(f"imported preset '{name}' to {path}")
            _say_hidden(store, path.stem, out)
        elif action == "export":
            path = store.export(args.name, Path(args.path), overwrite=args.force)
            out.info(f"exported preset '{args.name}' to {path}")
    except PresetError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    except OSError as exc:
        out.error(f"{exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _say_hidden(store: PresetStore, name: str, out: Out) -> None:
    """Local wins over global and built-in (spec 000): say so, or `--preset recommended`
    silently stops meaning the shipped preset."""
    hidden = store.hidden_by(name)
    if hidden:
        where = " and ".join("built-in" if h == "builtin" else h for h in hidden)
        out.warn(f"local preset '{name}' now hides the {where} preset of that "
                 f"name; `sidestep presets delete {name}` brings it back")
