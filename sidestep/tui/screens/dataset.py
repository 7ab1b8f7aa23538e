"""The dataset browser (``P``): a folder's audio and ``.pt`` files with what the check found,
and the way on from there: build dataset.json, preprocess, train on the tensors.

The scan runs in a worker and fills the table as it goes: the file list first (one directory
walk), then each file's measurements as it is decoded, so a folder of 500 songs is browsable
at once.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static
from textual.widgets.data_table import CellDoesNotExist

from sidestep.config.plural import counted
from sidestep.tui.messages import DatasetBuilt, FileScanned, FolderListed, ScanFinished
from sidestep.tui.widgets.text_input import TextInput

# (header, width): updated cells do not widen a column, so widths are set up front
COLUMNS = (("file", 0), ("length", 6), ("rate", 6), ("ch", 2), ("peak", 6), ("LUFS", 6),
           ("text", 4), ("check", 26))
# the preprocess dialog's fields (and what is kept for the folder's next preprocess)
PREPROCESS_FIELDS = ("checkpoint_dir", "model_variant", "dataset_json", "tensor_output",
                     "normalize", "max_duration")
_SEVERITY_MARK = {"error": "✗", "warning": "!", "info": "·"}


class PathSuggester(Suggester):
    """Completes the last part of a folder path from what is on disk (→ accepts)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        head, part = os.path.split(os.path.expanduser(value))
        # off the event loop: a slow or network folder must not freeze typing
        names = await asyncio.to_thread(_subfolders, head or ".", part)
        if not names:
            return None
        return value + names[0][len(part):] + "/"  # a whole name: just the slash


def _subfolders(folder: str, prefix: str) -> list[str]:
    """Folders in ``folder`` starting with ``prefix`` (hidden ones only when asked for)."""
    try:
        return sorted(e.name for e in os.scandir(folder)
                      if e.is_dir() and e.name.startswith(prefix)
                      and (prefix.startswith(".") or not e.name.startswith(".")))
    except OSError:
        return []


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def fmt_db(value: float | None) -> str:
    if value is None:
        return "-"
    return "-inf" if value == -math.inf else f"{value:.1f}"


def audio_row(facts, problems) -> tuple[str, ...]:
    text = ("C" if facts.caption else "-") + ("L" if facts.lyrics else "-")
    return (facts.path.name, fmt_seconds(facts.duration) if facts.sample_rate else "?",
            f"{facts.sample_rate / 1000:g}k" if facts.sample_rate else "?",
            str(facts.channels or "?"), fmt_db(facts.peak_dbfs), fmt_db(facts.lufs), text,
            check_cell(problems))


def tensor_row(facts, problems) -> tuple[str, ...]:
    length = fmt_seconds(facts.seconds) if facts.frames else "?"
    return (facts.path.name, length, f"{facts.frames} fr", "", "", "", "",
            check_cell(problems) if problems else ("ok" if facts.ok else "invalid"))


def _fit(name: str, width: int = 40) -> str:
    """Long nested names keep their end (the file name), not their start."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def check_cell(problems) -> str:
    if not problems:
        return "ok"
    worst = min(problems, key=lambda p: ("error", "warning", "info").index(p.severity))
    more = f" +{len(problems) - 1}" if len(problems) > 1 else ""
    return f"{_SEVERITY_MARK[worst.severity]} {worst.kind}{more}"


class DatasetScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("b,B", "build", "Build dataset.json", key_display="B"),
        Binding("p,P", "preprocess", "Preprocess", key_display="P"),
        Binding("t,T", "train", "Train on these", key_display="T"),
        Binding("ctrl+r", "scan", "Rescan"),
    ]

    def __init__(self, folder: Path | str | None = None, *, pick: bool = False):
        """``pick``: the folder is a place to type on from (Settings → Dataset root), not the
        dataset itself, so the cursor starts in the Folder field, where the letters typed are
        a path (on the table they were B/P/T)."""
        super().__init__()
        self.folder: Path | None = Path(folder) if folder else None
        self.pick = pick
        self.report = None          # data.check.CheckReport once a scan has finished
        self.rows: dict[str, object] = {}   # row key (path) -> facts
        self.problems: dict[str, list] = {}  # path -> problems on that file

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="dataset-path-row"):
            yield Label("Folder ", id="dataset-path-label")
            yield TextInput(str(self.folder or ""), id="dataset-path", suggester=PathSuggester(),
                            placeholder="a folder of audio (with sidecars) or of .pt files",
                            select_on_focus=not self.pick)  # from a root: type on after it
            yield Button("Scan", id="dataset-scan", compact=True, action="screen.scan")
        yield Static("", id="dataset-summary", markup=False)
        yield DataTable(id="dataset-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="dataset-detail", markup=False)
        with Horizontal(id="dataset-actions"):
            yield Button("Build dataset.json (B)", id="dataset-build", compact=True,
                         action="screen.build")
            yield Button("Preprocess (P)", id="dataset-preprocess", variant="primary",
                         compact=True, action="screen.preprocess")
            yield Button("Train on these (T)", id="dataset-train", variant="success",
                         compact=True, action="screen.train", disabled=True)
            yield Button("Back", id="dataset-back", compact=True, action="screen.back")
        yield Footer()

    def on_mount(self) -> None:
        self.action_scan()
        if self.pick:
            field = self.query_one("#dataset-path", Input)
            field.focus()
            field.cursor_position = len(field.value)
        elif self.folder is not None:
            self.query_one("#dataset-table", DataTable).focus()

    # -- scanning ------------------------------------------------------------------------------
    @on(Input.Submitted, "#dataset-path")
    def path_submitted(self) -> None:
        self.action_scan()  # focus stays in the field: typing on must not press b/p/t

    def _typed_folder(self) -> Path | None:
        text = self.query_one("#dataset-path", Input).value.strip()
        return Path(os.path.expanduser(text)) if text else None

    @on(Input.Blurred, "#dataset-path")
    def path_left(self) -> None:
        """Tab out of a changed Folder scans it: the buttons act on the folder shown."""
        if self._typed_folder() != self.folder:
            self.action_scan()

    @on(Input.Changed, "#dataset-path")
    def path_typed(self) -> None:
        """Keys typed straight after P land in the field before the table takes focus: the
        field keeps it, so Enter scans and the letters that follow are not B/P/T."""
        field = self.query_one("#dataset-path", Input)
        if not field.has_focus and self._typed_folder() != self.folder:
            field.focus()

    def action_scan(self) -> None:
        field = self.query_one("#dataset-path", Input)
        self.folder = self._typed_folder()
        self.report = None
        self.rows.clear()
        self.problems.clear()
        self.query_one("#dataset-table", DataTable).clear(columns=True)
        self.query_one("#dataset-detail", Static).update("")
        self._update_buttons()
        if self.folder is None:  # nothing given yet: ask, rather than scan wherever we are
            self.query_one("#dataset-summary", Static).update(
                "Type the folder of your songs (audio with sidecars) or of preprocessed .pt "
                "files, then Enter; → completes a folder name. (Settings → Dataset root sets "
                "where this starts.)")
            field.focus()
            return
        self.query_one("#dataset-summary", Static).update(f"scanning {self.folder} ...")
        self.scan(self.folder)

    @work(thread=True, exclusive=True, group="dataset-scan")
    def scan(self, folder: Path) -> None:
        from textual.worker import get_current_worker

        from sidestep.data.check import check_dataset
        from sidestep.data.scan import list_folder

        worker = get_current_worker()
        listing = list_folder(folder)
        self.post_message(FolderListed(folder, listing))
        widths = self.app.model_widths() if listing.tensors else {}
        report = check_dataset(folder, listing=listing, **widths,
                               on_file=lambda facts, done, total: self.post_message(
                                   FileScanned(folder, facts, done, total)),
                               cancel=lambda: worker.is_cancelled)
        if not report.cancelled:
            self.post_message(ScanFinished(folder, report))

    def on_folder_listed(self, message: FolderListed) -> None:
        if message.folder != self.folder:
            return
        table = self.query_one("#dataset-table", DataTable)
        listing = message.listing
        paths = [*listing.audio, *listing.tensors]
        names = [_fit(str(p.relative_to(message.folder)) if p.is_relative_to(message.folder)
                      else p.name) for p in paths]
        table.clear(columns=True)
        # a .pt file has latent frames where audio has a sample rate
        third = ("rate" if not listing.tensors else "frames" if not listing.audio
                 else "rate/fr")
        for header, width in COLUMNS:
            if header == "rate":
                header, width = third, max(width, len(third))
            table.add_column(header, width=width or min(40, max([len(n) for n in names] + [8])))
        for path, name in zip(paths, names):
            table.add_row(name, *("" for _ in COLUMNS[1:-1]), "...", key=str(path))
        self.query_one("#dataset-summary", Static).update(
            f"{self.folder}: {len(listing.audio)} audio files, {len(listing.tensors)} .pt "
            "files; reading them ...")

    def on_file_scanned(self, message: FileScanned) -> None:
        from sidestep.data.check import audio_problems
        from sidestep.data.scan import AudioFacts

        if message.folder != self.folder:
            return
        facts = message.facts
        key = str(facts.path)
        self.rows[key] = facts
        problems = audio_problems(facts) if isinstance(facts, AudioFacts) else []
        self._show_row(key, problems)
        self.query_one("#dataset-summary", Static).update(
            f"{self.folder}: reading {message.done}/{message.total} ...")

    def _show_row(self, key: str, problems: list) -> None:
        from sidestep.data.scan import AudioFacts

        facts = self.rows[key]
        self.problems[key] = problems
        cells = audio_row(facts, problems) if isinstance(facts, AudioFacts) else \
            tensor_row(facts, problems)
        table = self.query_one("#dataset-table", DataTable)
        try:
            for column, value in zip(list(table.columns)[1:], cells[1:]):
                table.update_cell(key, column, value)
        except CellDoesNotExist:  # the row went away with a rescan
            return

    def on_scan_finished(self, message: ScanFinished) -> None:
        if message.folder != self.folder:
            return
        self.report = message.report
        by_file: dict[str, list] = {}
        for p in self.report.problems:
            by_file.setdefault(p.file, []).append(p)
        for key in self.rows:
            self._show_row(key, by_file.get(key, []))
        self.query_one("#dataset-summary", Static).update(self.summary())
        self._update_buttons()
        self._detail()

    def summary(self) -> str:
        r = self.report
        seconds = sum(a.duration for a in r.audio)
        errors = sum(p.severity == "error" for p in r.problems)
        warnings = sum(p.severity == "warning" for p in r.problems)
        verdict = "usable" if r.usable else "not usable until the errors are fixed"
        parts = [f"{len(r.audio)} audio files ({fmt_seconds(seconds)})" if r.audio else "",
                 f"{len(r.tensors)} .pt files" if r.tensors else ""]
        what = ", ".join(p for p in parts if p) or "nothing to train on"
        return (f"{self.folder}: {what}; {counted(errors, 'error')}, "
                f"{counted(warnings, 'warning')}: {verdict}")

    def _update_buttons(self) -> None:
        r = self.report
        self.query_one("#dataset-train", Button).disabled = not (
            r and any(t.ok for t in r.tensors))
        has_audio = bool(r and any(a.ok for a in r.audio))
        self.query_one("#dataset-build", Button).disabled = not has_audio
        self.query_one("#dataset-preprocess", Button).disabled = not has_audio

    @on(DataTable.RowHighlighted, "#dataset-table")
    def _detail(self) -> None:
        """The selected file's problems, under the folder's own (a missing folder, a broken
        dataset.json or manifest, mixed sample rates): those belong to no row, so they always
        show."""
        table = self.query_one("#dataset-table", DataTable)
        folder_wide = [p for p in (self.report.problems if self.report else ())
                       if p.file not in self.rows]
        problems = []
        if table.row_count and table.cursor_row is not None:
            try:
                key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
                problems = self.problems.get(key or "", [])
            except CellDoesNotExist:
                pass
        lines = [f"{p.severity}: {p.message}" for p in [*folder_wide, *problems]]
        if not lines and table.row_count and self.report is not None:  # (not while checking)
            lines = ["no problems found in this file"]
        self.query_one("#dataset-detail", Static).update("\n".join(lines))

    # -- the way on ----------------------------------------------------------------------------
    def _unscanned(self) -> bool:
        """The Folder field names a folder not scanned yet (typed, then B/P/T): scan it, and
        act on nothing; the old folder's results must not stand for the new one."""
        if self._typed_folder() == self.folder:
            return False
        self.action_scan()
        if self.folder is not None:
            self.notify(f"scanning {self.folder} first (the Folder field names it)",
                        severity="warning")
        return True

    def _blocked(self, what: str) -> bool:
        if self._unscanned():
            return True
        if self.folder is None:
            self.notify("type a folder of songs first", severity="warning")
            return True
        if self.report is None:
            self.notify("the scan has not finished yet", severity="warning")
            return True
        if not any(a.ok for a in self.report.audio):
            self.notify(f"no usable audio files here to {what}", severity="warning")
            return True
        return False

    BUILD_FIELDS = ("tag", "tag_position", "genre_ratio", "name", "output")

    def action_build(self, values: dict | None = None) -> None:
        from sidestep.tui.screens.settings_dialog import SettingsDialog

        if self._blocked("build a dataset from"):
            return
        folder = self.folder
        dialog = SettingsDialog("build-dataset", "Build dataset.json", self.BUILD_FIELDS,
                                values=values, fixed={"input": str(folder)},
                                note=f"writes {folder / 'dataset.json'} (or the Output file "
                                     "given) from the audio files and their sidecars",
                                ok_label="Build")
        self.app.push_screen(dialog, self._build)

    def _build(self, config) -> None:
        from sidestep.tui.screens.dialogs import ConfirmScreen

        if config is None:
            return
        target = Path(config.output or Path(config.input) / "dataset.json")
        if not target.exists():
            self.build(config)
            return

        def answer(choice: str | None) -> None:
            if choice == "replace":
                self.build(config)
            else:  # Keep it: back to the build dialog as typed (another Output file, say)
                self.action_build({k: getattr(config, k) for k in self.BUILD_FIELDS})

        self.app.push_screen(
            ConfirmScreen("Replace dataset.json?", f"{target} exists (captions you edited in it "
                          "would be lost). Replace it, or keep it and go back to the build "
                          "settings (Output file can name another file)?",
                          [("replace", "Replace", "error"), ("cancel", "Keep it", "primary")]),
            answer)

    @work(thread=True, exclusive=True, group="dataset-build")
    def build(self, config) -> None:
        from sidestep.data.dataset_json import DatasetError, build_dataset

        try:
            path, doc, warnings = build_dataset(config.input, tag=config.tag,
                                                tag_position=config.tag_position,
                                                genre_ratio=config.genre_ratio,
                                                name=config.name, output=config.output,
                                                replace=True)  # asked first (_build)
        except DatasetError as exc:
            self.post_message(DatasetBuilt(None, 0, [], str(exc)))
            return
        self.post_message(DatasetBuilt(path, len(doc["samples"]), warnings, None))

    def on_dataset_built(self, message: DatasetBuilt) -> None:
        if message.error:
            self.app.show_error("Build dataset.json", message.error)
            return
        self.notify(f"wrote {message.path}: {counted(message.songs, 'song')}"
                    + (f" ({counted(len(message.warnings), 'note')})" if message.warnings
                       else ""))
        for warning in message.warnings[:3]:
            self.notify(warning, severity="warning")
        self.action_scan()

    def action_preprocess(self) -> None:
        from sidestep.tui.screens.settings_dialog import SettingsDialog

        if self._blocked("preprocess"):
            return
        folder = self.folder
        source = {"audio_dir": str(folder)}
        own = folder / "dataset.json"
        values = {"checkpoint_dir": str(self.app.checkpoint_root()),
                  "dataset_json": str(own) if own.is_file() else None,
                  "tensor_output": str(folder.parent / f"{folder.name}_tensors"),
                  **self.app.preprocess_choices.get(str(folder), {})}  # as typed last time
        dialog = SettingsDialog(
            "preprocess", "Preprocess", PREPROCESS_FIELDS, values=values, fixed=source,
            ok_label="Start",
            note="encodes the songs of Dataset JSON (captions, lyrics) when given, else the "
                 "folder's audio with its sidecars; finished files are kept, so a rerun does "
                 "only what is missing")
        self.app.push_screen(dialog, self._preprocess)

    def _preprocess(self, config) -> None:
        if config is not None:
            from sidestep.tui.screens.preprocess import PreprocessScreen

            self.app.preprocess_choices[str(self.folder)] = {
                k: getattr(config, k) for k in PREPROCESS_FIELDS}

            self.app.push_screen(PreprocessScreen(config))

    def action_train(self) -> None:
        if self._unscanned():
            return
        if not (self.report and any(t.ok for t in self.report.tensors)):
            self.notify("no valid .pt files here: preprocess the audio first (P)",
                        severity="warning")
            return
        self.app.action_new_training("fixed", {"dataset_dir": str(self.folder)})

    def action_back(self) -> None:
        self.app.action_dashboard()
