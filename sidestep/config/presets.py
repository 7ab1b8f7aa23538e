"""Named presets of training settings (spec 000).

Three places, searched in order: local ``./presets`` (new saves go here), the global config
folder, and the built-ins shipped in the package (read-only). Unknown fields are ignored, missing
fields take the defaults, wrong types are refused with the field named.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sidestep.config import atomic, paths
from sidestep.config.schema import BY_PRESET_KEY, PRESET_FIELDS
from sidestep.config.values import check_json_value, to_json

MAX_IMPORT_BYTES = 1024 * 1024
SOURCES = ("local", "global", "builtin")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
             *(f"LPT{i}" for i in range(1, 10))}
_STRIP = re.compile(r'[/\\:*?"<>|]')


class PresetError(ValueError):
    """A preset problem the user can fix (bad name, bad file, missing preset)."""


class PresetExists(PresetError):
    """The file a preset would be written to exists (``overwrite`` replaces it): the app asks."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    values: Mapping[str, Any]  # schema field name -> typed value (only fields the file had)
    source: str = "local"
    path: Path | None = None
    ignored: tuple[str, ...] = ()  # unknown keys that were skipped

    def to_file_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for s in PRESET_FIELDS:
            if s.name in self.values:
                value = to_json(s, self.values[s.name])
                if s.file_key == "target_modules_str" and value is not None:
                    value = " ".join(value)  # spec 000 stores this one as a string
                out[s.file_key] = value
        return out


@dataclass(frozen=True)
class PresetInfo:
    name: str
    description: str
    source: str
    path: Path
    shadows: tuple[str, ...] = field(default_factory=tuple)  # lower-priority sources it hides


def sanitize_name(raw: str) -> str:
    """Make a preset name safe as a file name on every platform, or raise ``PresetError``."""
    if not isinstance(raw, str) or not raw.strip():
        raise PresetError("a preset name is required")
    name = raw.strip()
    if ".." in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise PresetError(f"preset name {raw!r} looks like a path; use a plain name")
    name = _STRIP.sub("", name.replace(" ", "_"))
    name = name.strip(". ")
    if not name:
        raise PresetError(f"preset name {raw!r} has no usable characters")
    if name.split(".")[0].upper() in _RESERVED:
        raise PresetError(f"preset name {raw!r} is a reserved device name on Windows; "
                          "pick another name")
    if len(name) > 120:
        raise PresetError("preset name is longer than 120 characters")
    return name


def parse_preset_dict(data: Any, origin: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Typed values from a preset document. Unknown keys are returned separately (ignored)."""
    if not isinstance(data, dict):
        raise PresetError(f"{origin}: a preset must be a JSON object, got {type(data).__name__}")
    values: dict[str, Any] = {}
    ignored = []
    for key, raw in data.items():
        if key in ("name", "description"):
            continue
        setting = BY_PRESET_KEY.get(key)
        if setting is None:
            ignored.append(key)
            continue
        try:
            values[setting.name] = check_json_value(setting, raw)
        except ValueError as exc:
            raise PresetError(f"{origin}: field '{key}' {exc}") from None
    for key in ("name", "description"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise PresetError(f"{origin}: field '{key}' must be a string")
    return values, tuple(ignored)


def _read_json(path: Path, limit: int | None = None) -> Any:
    try:
        if limit is not None and path.stat().st_size > limit:
            raise PresetError(f"{path}: file is {path.stat().st_size} bytes; presets must be "
                              f"under {limit // 1024} KB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise PresetError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PresetError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


class PresetStore:
    """Presets across the three locations. Directories are read fresh on every call."""

    def __init__(self, local_dir: Path | None = None, global_dir: Path | None = None,
                 builtin_dir: Path | None = None):
        self.dirs: dict[str, Path] = {
            "local": Path(local_dir) if local_dir else paths.local_presets_dir(),
            "global": Path(global_dir) if global_dir else paths.global_presets_dir(),
            "builtin": Path(builtin_dir) if builtin_dir else paths.builtin_presets_dir(),
        }

    # -- reading ---------------------------------------------------------------------------------
    def _files(self, source: str) -> dict[str, Path]:
        folder = self.dirs[source]
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.json")) if p.is_file()}

    def list(self) -> list[PresetInfo]:
        """Every preset name once, from the highest-priority place that has it."""
        seen: dict[str, PresetInfo] = {}
        for source in SOURCES:
            for name, path in self._files(source).items():
                if name in seen:
                    prev = seen[name]
                    seen[name] = PresetInfo(prev.name, prev.description, prev.source, prev.path,
                                            prev.shadows + (source,))
                    continue
                try:
                    desc = _read_json(path).get("description", "") or ""
                except (PresetError, AttributeError):
                    desc = "(unreadable)"
                seen[name] = PresetInfo(name, str(desc), source, path)
        return sorted(seen.values(), key=lambda i: (SOURCES.index(i.source), i.name))

    def find(self, name: str) -> tuple[str, Path]:
        """By name as given, else as ``save`` stores it ("my preset" is my_preset.json)."""
        try:
            names = dict.fromkeys((name, sanitize_name(name)))
        except PresetError:
            names = {name: None}
        for source in SOURCES:
            for candidate in names:
                path = self._files(source).get(candidate)
                if path:
                    return source, path
        available = ", ".join(sorted({i.name for i in self.list()})) or "none"
        raise PresetError(f"no preset named '{name}' (available: {available})")

    def load(self, name: str) -> Preset:
        source, path = self.find(name)
        data = _read_json(path, MAX_IMPORT_BYTES)
        values, ignored = parse_preset_dict(data, f"preset '{name}' ({path})")
        desc = data.get("description") or ""
        return Preset(name=path.stem, description=desc, values=values, source=source,
                      path=path, ignored=ignored)

    # -- writing ---------------------------------------------------------------------------------
    def save(self, name: str, values: Mapping[str, Any], description: str = "",
             *, overwrite: bool = True) -> Path:
        """Write a local preset with the preset fields of ``values`` (schema names)."""
        clean = sanitize_name(name)
        target = self.dirs["local"] / f"{clean}.json"
        if self._is_builtin_dir(target.parent):
            raise PresetError("built-in presets are read-only")
        if target.exists() and not overwrite:
            raise PresetExists(f"a local preset named '{clean}' already exists ({target}); "
                              "choose another name or allow overwriting (--force)", target)
        kept = {s.name: values[s.name] for s in PRESET_FIELDS if s.name in values}
        # Validate through the same path a load takes, so a saved preset always loads.
        preset = Preset(clean, description, kept)
        parse_preset_dict(preset.to_file_dict(), f"preset '{clean}'")
        try:
            atomic.write_json(target, preset.to_file_dict())
        except OSError as exc:
            raise PresetError(f"{target}: cannot write it ({exc.strerror or exc}); local "
                              "presets go to ./presets, so run this from a folder you can "
                              "write to") from None
        return target

    def hidden_by(self, name: str) -> list[str]:
        """The global or built-in presets a local preset called ``name`` hides."""
        return [source for source in SOURCES[1:] if name in self._files(source)]

    def delete(self, name: str) -> tuple[str, Path]:
        source, path = self.find(name)
        if source == "builtin":
            raise PresetError(f"'{name}' is a built-in preset and cannot be deleted")
        path.unlink()
        return source, path

    def import_file(self, file: Path, *, overwrite: bool = False) -> tuple[str, Path]:
        file = Path(file)
        if file.is_dir():
            found = sorted(p.name for p in file.glob("*.json"))[:3]
            raise PresetError(f"{file}: is a folder; give one preset file in it"
                              + (f" ({', '.join(found)}, ...)" if found else ""))
        data = _read_json(file, MAX_IMPORT_BYTES)
        if not isinstance(data, dict):
            raise PresetError(f"{file}: a preset must be a JSON object")
        named = isinstance(data.get("name"), str) and bool(data.get("name"))
        raw_name = data["name"] if named else file.stem
        name = sanitize_name(raw_name)
        values, _ignored = parse_preset_dict(data, str(file))
        if not values:  # another JSON file (a dataset.json): no preset to make of it
            raise PresetError(f"{file}: holds no preset settings (such as learning_rate or "
                              "rank); import a file that `sidestep presets export` wrote")
        description = data.get("description") or ""
        try:
            path = self.save(name, values, description, overwrite=overwrite)
        except PresetExists as exc:  # the name is the file's: no other name to choose here
            where = "the \"name\" field" if named else "the file's name"
            raise PresetExists(f"a local preset named '{name}' already exists ({exc.path}); "
                               f"pass --force to replace it, or change {where} in {file} to "
                               "import it beside it", exc.path) from None
        return name, path

    def export(self, name: str, dest: Path, *, overwrite: bool = False) -> Path:
        preset = self.load(name)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"{preset.name}.json"
        if dest.exists() and not overwrite:
            raise PresetExists(f"{dest} already exists; choose another path or allow "
                               "overwriting (--force)", dest)
        if not dest.parent.exists():  # a typo must not make folders: only the file is written
            raise PresetError(f"{dest}: the folder {dest.parent} does not exist; create it "
                              "first, or fix the path")
        try:
            atomic.write_json(dest, preset.to_file_dict())
        except OSError as exc:
            raise PresetError(f"{dest}: cannot write it ({exc.strerror or exc}); choose a "
                              "path in a folder you can write to") from None
        return dest

    def _is_builtin_dir(self, folder: Path) -> bool:
        try:
            return folder.resolve() == self.dirs["builtin"].resolve()
        except OSError:
            return False
