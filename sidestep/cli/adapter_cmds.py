"""``export`` and ``check-adapter``."""

from __future__ import annotations

import argparse

from sidestep.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sidestep.cli.output import Out


def run_adapter_command(args: argparse.Namespace, out: Out) -> int:
    from sidestep.engine.adapters import AdapterError

    try:
        decoder = _decoder(args)
        if args.command == "export":
            return _export(args, out, decoder)
        return _check(args, out, decoder)
    except AdapterError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT


def _decoder(args):
    """The decoder named by --checkpoint-dir, else None (the adapter's run decides)."""
    from sidestep.engine.adapters import AdapterError

    variant = getattr(args, "model_variant", None)
    if not getattr(args, "checkpoint_dir", None):
        if variant is not None:  # it names a folder under --checkpoint-dir: alone it is moot
            raise AdapterError(f"--model-variant {variant}: picks a model under "
                               "--checkpoint-dir; pass --checkpoint-dir too (without it the "
                               "adapter's run decides the model)")
        return None
    from sidestep.config.resolve import CHECKPOINT_DIR_FIX, not_a_folder
    from sidestep.engine.adapter_keys import Decoder
    from sidestep.model.checkpoints import DiscoveryError, resolve_model

    problem = not_a_folder(args.checkpoint_dir, CHECKPOINT_DIR_FIX)
    if problem:
        raise AdapterError(f"--checkpoint-dir: {problem}")
    try:
        model = resolve_model(args.checkpoint_dir, variant or "turbo")
    except DiscoveryError as exc:
        raise AdapterError(f"--checkpoint-dir: {exc}") from None
    return Decoder.from_model_dir(model.path)


def _export(args, out: Out, decoder) -> int:
    from sidestep.engine.export import export_adapter

    result = export_adapter(args.adapter, args.fmt, args.output,
                            normalize_alpha=args.normalize_alpha, force=args.force,
                            decoder=decoder)
    for note in result.notes:
        out.warn(note)
    alpha = "alpha = rank, scale folded in" if args.normalize_alpha else "alpha per module"
    out.info(f"wrote {result.output}: {result.kind.upper()}, {result.modules} modules, "
             f"{result.fmt} ({alpha})")
    return EXIT_OK


def _check(args, out: Out, decoder) -> int:
    from sidestep.engine.adapter_check import TITLES, check_adapter

    report = check_adapter(args.path, decoder=decoder)
    if args.json:
        out.json(report.to_json())
        return EXIT_FAILED if report.problems else EXIT_OK
    # no parentheses around it: the model's origin ends in "(N decoder Linears)" itself
    out.info(f"{report.file}: {report.kind.upper()}, {report.modules} decoder modules; "
             f"checked against {report.decoder}")
    rows = []
    dora = any(v.dora for v in report.runtimes)  # a column only for weight decomposition
    for v in report.runtimes:
        rows.append((TITLES[v.runtime], "yes" if v.loads else "NO", v.modules, len(v.dropped),
                     _strength(v.strength), *((v.dora or "-",) if dora else ()), v.note))
    out.table("", ("runtime", "loads", "modules", "dropped keys", "strength vs training",
                   *(("DoRA",) if dora else ()), "note"), rows)
    for v in report.runtimes:
        if v.dropped:
            shown = ", ".join(v.dropped[:5]) + (", ..." if len(v.dropped) > 5 else "")
            out.info(f"{TITLES[v.runtime]} drops {len(v.dropped)} keys: {shown}")
    for note in report.notes:
        out.info(f"note: {note}")
    for p in report.problems:
        out.info(f"problem: [{p.kind}] {p.message}")
    if not report.problems:
        caveats = _caveats(report.runtimes, TITLES)
        out.info("no problems in the file, but " + "; ".join(caveats) if caveats else
                 "no problems found: every runtime loads it whole at training strength")
    return EXIT_FAILED if report.problems else EXIT_OK


def _caveats(runtimes, titles) -> list[str]:
    """What the runtime rows say goes wrong, for the last line: exit 0 means the file is
    sound, not that every runtime plays it as trained."""
    def names(items) -> str:
        return ", ".join(items)

    out = []
    no_load = [titles[v.runtime] for v in runtimes if not v.loads]
    if no_load:
        out.append(f"{names(no_load)} will not load it")
    loaded = [v for v in runtimes if v.loads]
    drops = [f"{titles[v.runtime]} ({len(v.dropped)})" for v in loaded if v.dropped]
    if drops:
        out.append(f"keys dropped by {names(drops)}")
    off = [f"{titles[v.runtime]} ({_strength(v.strength)})" for v in loaded
           if v.strength is not None and v.strength != 1.0]
    if off:
        out.append(f"not at training strength in {names(off)}")
    dora = [f"{titles[v.runtime]} ({v.dora})" for v in loaded if v.dora in ("dropped", "differs")]
    if dora:
        out.append(f"DoRA not as trained in {names(dora)}")
    return out


def _strength(strength) -> str:
    if strength is None:
        return "-"
    if isinstance(strength, float):
        return f"{strength:g}x"
    return f"{strength[0]:g}x..{strength[1]:g}x"
