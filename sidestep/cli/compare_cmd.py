"""`sidestep compare-configs`: how far module configs written by `estimate` agree."""

from __future__ import annotations

import argparse
from typing import Any

from sidestep.cli import EXIT_BAD_INPUT, EXIT_OK
from sidestep.cli.output import Out
from sidestep.engine.module_config import (
    ModuleConfigError, compare, load_module_config, pair_line,
)


def run_compare_configs(config: Any, args: argparse.Namespace, out: Out) -> int:
    paths = list(config.configs or ())
    if len(paths) < 2:
        out.error("--configs: give at least two module config files to compare")
        return EXIT_BAD_INPUT
    try:
        result = compare([load_module_config(p) for p in paths])
    except ModuleConfigError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    if getattr(args, "json", False):
        out.json(result)
        return EXIT_OK
    names = [f["name"] for f in result["files"]]
    rows = [[row["name"], *(_cell(r, s) for r, s in zip(row["ranks"], row["scores"]))]
            for row in result["modules"]]
    out.table("rank/score in each file, best rank first", [result["granularity"], *names], rows)
    for pair in result["pairs"]:
        out.info(pair_line(pair, result["granularity"]))
    return EXIT_OK


def _cell(rank: int | None, score: float | None) -> str:
    return "-" if rank is None else f"{rank}/{score:.3f}"
