"""Module config files (the JSON `sidestep estimate` writes): loading, checking, expanding layer
picks into module names, and comparing several files.

A file ranks decoder attention modules best first: ``modules`` holds the top K, ``all`` every
module. Rank is the position in the list (1-based), so a hand-written file must list its
entries best first; scores must agree with that order.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidestep.config.schema import PROJECTIONS

VERSION = 1
GRANULARITIES = ("module", "layer")
ATTENTION = ("self_attn", "cross_attn")

_INDEX = r"(0|[1-9][0-9]*)"  # no leading zeros: "layers.03" would not name a decoder module
_PATTERNS = {
    "module": re.compile(
        rf"layers\.{_INDEX}\.({'|'.join(ATTENTION)})\.({'|'.join(PROJECTIONS)})"),
    "layer": re.compile(rf"layers\.{_INDEX}"),
}
_EXAMPLES = {"module": "layers.3.self_attn.q_proj", "layer": "layers.3"}
_FIX = "write it again with `sidestep estimate`, or correct it by hand"


class ModuleConfigError(ValueError):
    """A module config file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ModuleConfig:
    path: str
    granularity: str
    top_k: int
    model: str | None
    dataset: str | None
    batches: int | None
    modules: list[tuple[str, float]]
    all: list[tuple[str, float]]
    seed: int | None = None

    @property
    def label(self) -> str:
        return Path(self.path).stem


def load_module_config(path: str | Path) -> ModuleConfig:
    """Read and check one module config file. Raises ``ModuleConfigError``."""
    where = str(path)
    p = Path(path)
    if not p.exists():
        raise ModuleConfigError(f"{where}: file not found; give the path of a JSON file "
                                "written by `sidestep estimate`")
    if p.is_dir():
        raise ModuleConfigError(f"{where}: is a folder; give the JSON file inside it")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModuleConfigError(f"{where}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModuleConfigError(f"{where}: not valid JSON (line {exc.lineno}, column "
                                f"{exc.colno}: {exc.msg}); {_FIX}") from None
    if not isinstance(data, dict):
        raise ModuleConfigError(f"{where}: must be a JSON object with 'version', "
                                f"'granularity' and 'modules', got {type(data).__name__}")

    version = data.get("version")
    if "version" not in data and "modules" not in data:  # another JSON file (a dataset.json)
        raise ModuleConfigError(f"{where}: not a module config (no 'modules' list); "
                                "`sidestep estimate` writes one")
    if "version" not in data:
        raise ModuleConfigError(f"{where}: 'version' is missing; add \"version\": {VERSION}")
    if isinstance(version, bool) or version != VERSION:
        raise ModuleConfigError(f"{where}: version {version!r} is not supported (this Side-Step "
                                f"reads version {VERSION}); {_FIX}")

    granularity = data.get("granularity")
    if granularity not in GRANULARITIES:
        raise ModuleConfigError(f"{where}: 'granularity' must be \"module\" or \"layer\", "
                                f"got {granularity!r}")

    if "modules" not in data:
        raise ModuleConfigError(f"{where}: 'modules' is missing; list the chosen modules as "
                                '[{"name": ..., "score": ...}, ...], best first')
    modules = _entries(where, "modules", data["modules"], granularity)
    # hand-written files may give only their pick: it is then the whole ranking too
    everything = (_entries(where, "all", data["all"], granularity) if "all" in data
                  else list(modules))
    known = {name for name, _ in everything}
    missing = [name for name, _ in modules if name not in known]
    if missing:
        raise ModuleConfigError(f"{where}: {missing[0]!r} is in 'modules' but not in 'all'; "
                                "'all' must rank every module, the chosen ones included")

    top_k = data.get("top_k", len(modules))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ModuleConfigError(f"{where}: 'top_k' must be a whole number of at least 1, "
                                f"got {top_k!r}")
    return ModuleConfig(
        path=where, granularity=granularity, top_k=top_k,
        model=_optional(where, data, "model", str), dataset=_optional(where, data, "dataset", str),
        batches=_optional(where, data, "batches", int), modules=modules, all=everything,
        seed=_optional(where, data, "seed", int))


def _optional(where: str, data: dict, key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        word = "a string" if kind is str else "a whole number"
        raise ModuleConfigError(f"{where}: '{key}' must be {word}, got {value!r}")
    return value


def _entries(where: str, key: str, value: Any, granularity: str) -> list[tuple[str, float]]:
    shape = '[{"name": ..., "score": ...}, ...]'
    if not isinstance(value, list):
        raise ModuleConfigError(f"{where}: '{key}' must be a list like {shape}, "
                                f"got {type(value).__name__}")
    if not value:
        raise ModuleConfigError(f"{where}: '{key}' is empty; it must name at least one module")
    pattern = _PATTERNS[granularity]
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        at = f"{where}: '{key}' entry {i + 1}"
        if not isinstance(item, dict) or "name" not in item or "score" not in item:
            raise ModuleConfigError(f"{at} must be an object like {{\"name\": ..., \"score\": "
                                    f"...}}, got {item!r}")
        name, score = item["name"], item["score"]
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise ModuleConfigError(f"{at}: {name!r} is not a {granularity} name of the "
                                    f"decoder (like {_EXAMPLES[granularity]!r})")
        if (isinstance(score, bool) or not isinstance(score, (int, float))
                or not math.isfinite(score)):
            raise ModuleConfigError(f"{at} ({name}): score must be a finite number, "
                                    f"got {score!r}")
        if name in seen:
            raise ModuleConfigError(f"{at}: {name!r} is listed twice; keep one entry per name")
        if out and score > out[-1][1]:
            raise ModuleConfigError(f"{at} ({name}): score {score} is higher than the entry "
                                    f"before it; list '{key}' best first (scores descending)")
        seen.add(name)
        out.append((name, float(score)))
    return out


def layer_of(name: str) -> int:
    """``layers.3.self_attn.q_proj`` or ``layers.3`` -> 3."""
    return int(name.split(".")[1])


def module_names(cfg: ModuleConfig, num_layers: int | None = None) -> list[str]:
    """The modules an adapter goes into: the top K as listed, or for layer granularity every
    attention projection of the listed layers, in layer order. Checks layer indices against
    ``num_layers`` when given (a config made for a bigger model)."""
    if num_layers is not None:
        for name, _ in cfg.modules:
            if layer_of(name) >= num_layers:
                raise ModuleConfigError(
                    f"{cfg.path}: {name!r} is past the model's last layer (it has {num_layers} "
                    "layers, numbered from 0); run `sidestep estimate` on this model")
    if cfg.granularity == "module":
        return [name for name, _ in cfg.modules]
    layers = sorted(layer_of(name) for name, _ in cfg.modules)
    return [f"layers.{n}.{attn}.{proj}" for n in layers for attn in ATTENTION
            for proj in PROJECTIONS]


def selected_modules(chosen: ModuleConfig, source: str | Path, config, num_layers: int | None,
                     model_name: str | None) -> tuple[list[str], list[str]]:
    """The modules a selective run trains from ``chosen`` (read from ``source``): those inside
    --attention-type and the target projections (spec: selective takes every flag of fixed; at
    their defaults that is all of them), and the notes on that choice. The pre-flight says the
    notes before a start is confirmed; the trainer logs them. ``model_name``: the model the run
    trains, to compare with the one the file ranked (None: the run's own copy, said before)."""
    from sidestep.engine.adapters import target_names

    notes = []
    if model_name and chosen.model and Path(chosen.model).name != model_name:
        notes.append(f"{source} ranks the modules of {chosen.model}; this run trains "
                     f"{model_name}, whose ranking can differ (`sidestep estimate` on it gives "
                     "its own)")
    names = module_names(chosen, num_layers)
    allowed = set(target_names(num_layers, config.attention_type, config.target_modules,
                               config.self_target_modules, config.cross_target_modules)) \
        if num_layers else None  # (a model config without its layer count: all of them)
    kept = [n for n in names if allowed is None or n in allowed]
    if not kept:
        raise ModuleConfigError(
            f"{source}: none of its {len(names)} modules is among the targets "
            f"(--attention-type {config.attention_type}, --target-modules "
            f"{' '.join(config.target_modules)}); leave those out to train the modules it lists")
    if len(kept) < len(names):
        notes.append(f"selective: {len(kept)} of the {len(names)} modules in {source} are "
                     f"within --attention-type {config.attention_type} and the target "
                     "projections; training those")
    return kept, notes


def _natural(name: str) -> tuple:
    # layers.2 before layers.10
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def spearman(a: list[str], b: list[str]) -> tuple[float | None, int]:
    """Spearman rank correlation of two rankings (best first) over the names both hold, and
    how many that is. Rankings have no ties, so 1 - 6*sum(d^2)/(n(n^2-1)) is exact."""
    in_b = set(b)
    common = [name for name in a if name in in_b]
    n = len(common)
    if n < 2:
        return None, n
    shared = set(common)
    rank_b = {name: i for i, name in enumerate(x for x in b if x in shared)}
    d2 = sum((i - rank_b[name]) ** 2 for i, name in enumerate(common))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1)), n


def labels(configs: list[ModuleConfig]) -> list[str]:
    """Short names for the files: the stem, or the path where two stems clash."""
    stems = [c.label for c in configs]
    return [s if stems.count(s) == 1 else c.path for s, c in zip(stems, configs)]


def compare(configs: list[ModuleConfig]) -> dict:
    """Ranks and scores of every module any file ranks, and for each pair of files the
    overlap of their picks (count, Jaccard) and the Spearman correlation of their rankings."""
    if len(configs) < 2:
        raise ModuleConfigError("give at least two module config files to compare")
    kinds = {c.granularity for c in configs}
    if len(kinds) > 1:
        listing = ", ".join(f"{c.path} ({c.granularity})" for c in configs)
        raise ModuleConfigError(f"cannot compare layer and module rankings: {listing}; "
                                "estimate them all with the same --granularity")
    names = labels(configs)
    ranks = [{name: i + 1 for i, (name, _) in enumerate(c.all)} for c in configs]
    scores = [dict(c.all) for c in configs]
    union = {name for r in ranks for name in r}

    def order(name: str) -> tuple:
        return (min(r[name] for r in ranks if name in r), _natural(name))

    rows = [{"name": name, "ranks": [r.get(name) for r in ranks],
             "scores": [s.get(name) for s in scores]} for name in sorted(union, key=order)]
    pairs = []
    for i in range(len(configs)):
        for j in range(i + 1, len(configs)):
            a, b = configs[i], configs[j]
            top_a = {n for n, _ in a.modules}
            top_b = {n for n, _ in b.modules}
            rho, common = spearman([n for n, _ in a.all], [n for n, _ in b.all])
            pairs.append({
                "a": names[i], "b": names[j],
                "top_k_a": len(top_a), "top_k_b": len(top_b),
                "overlap": len(top_a & top_b),
                "jaccard": len(top_a & top_b) / len(top_a | top_b),
                "spearman": rho, "common": common,
            })
    return {
        "granularity": configs[0].granularity,
        "files": [{"name": n, "path": c.path, "model": c.model, "dataset": c.dataset,
                   "top_k": len(c.modules), "batches": c.batches, "seed": c.seed}
                  for n, c in zip(names, configs)],
        "modules": rows,
        "pairs": pairs,
    }


def correlation_text(rho: float) -> str:
    """Two decimals, more where rounding would print a near-perfect correlation as 1.00 (0.996
    read as the same ranking); never ±1 unless exact."""
    for digits in (2, 3, 4):
        text = f"{rho:.{digits}f}"
        if abs(rho) == 1 or abs(float(text)) < 1:
            return text
    return f"{math.copysign(0.9999, rho):.4f}"


def pair_line(pair: dict, granularity: str = "module") -> str:
    """One pair in words: ``A vs B: top-16 overlap 12/16 (Jaccard 0.60), Spearman 0.83 over
    64 modules``."""
    ka, kb = pair["top_k_a"], pair["top_k_b"]
    rho = "n/a" if pair["spearman"] is None else correlation_text(pair["spearman"])
    unit = granularity if pair["common"] == 1 else f"{granularity}s"
    if ka == kb:
        overlap = f"top-{ka} overlap {pair['overlap']}/{ka}"
    else:  # "overlap 8/8" read as agreement between a top 8 and a top 32
        (small, k), (big, kk) = sorted(((pair["a"], ka), (pair["b"], kb)), key=lambda t: t[1])
        overlap = f"{pair['overlap']} of {small}'s top {k} in {big}'s top {kk}"
    return (f"{pair['a']} vs {pair['b']}: {overlap} (Jaccard {pair['jaccard']:.2f}), "
            f"Spearman {rho} over {pair['common']} {unit}")
