"""What screen workers post back to their screen (harlequin's pattern): a worker thread never
touches widgets; it posts one of these and the screen's ``on_...`` handler, on the UI thread,
shows it. A message posted to a screen that has closed is dropped, so a late result is
harmless."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message


class _Result(Message, bubble=False):
    """A worker's result for the screen that started it (no one above it wants it; each
    subclass says bubble=False again, as Textual resets it per class)."""


@dataclass
class RunsFound(_Result, bubble=False):
    roots: list[Path]
    runs: list[Any]               # engine.run_dir.RunSummary
    live: list[dict] = field(default_factory=list)  # engine.live_runs.run_rows, live ones
    elsewhere: int = 0            # of them, runs outside the roots


@dataclass
class LiveRunsFound(_Result, bubble=False):
    rows: list[dict]              # engine.live_runs.run_rows of the runs live now


@dataclass
class ModelsFound(_Result, bubble=False):
    root: Path
    entries: list[Any]            # model.checkpoints entries
    error: str | None


@dataclass
class PresetsListed(_Result, bubble=False):
    store: Any                    # config.presets.PresetStore
    infos: list[Any]


@dataclass
class ProfileApplied(_Result, bubble=False):
    name: str
    values: dict[str, Any]
    note: str | None
    gpus: list[dict]
    chosen: bool  # picked in the form (not the profile it opened with)


@dataclass
class PathChecked(_Result, bubble=False):
    checked: tuple  # (value, resume_from) it checked: a result for older text is dropped
    name: str
    error: str | None
    note: str | None
    # what the check read: the checkpoint folder's models (checkpoint_dir), the epochs a
    # checkpoint trained (resume_from)
    found: Any


@dataclass
class DialogPathsChecked(_Result, bubble=False):
    config: Any                   # the dialog's resolved config
    errors: dict[str, str]        # setting name -> why its path cannot be used


@dataclass
class ModelConfigLoaded(_Result, bubble=False):
    config: dict | None


# -- the dataset browser and preprocessing ------------------------------------------------------
@dataclass
class FolderListed(_Result, bubble=False):
    folder: Path
    listing: Any                  # data.scan.FolderListing


@dataclass
class FileScanned(_Result, bubble=False):
    folder: Path
    facts: Any                    # data.scan.AudioFacts | TensorFacts
    done: int
    total: int


@dataclass
class ScanFinished(_Result, bubble=False):
    folder: Path
    report: Any                   # data.check.CheckReport


@dataclass
class DatasetBuilt(_Result, bubble=False):
    path: Path | None
    songs: int
    warnings: list[str]
    error: str | None


@dataclass
class PreprocessProgress(_Result, bubble=False):
    event: Any                    # data.preprocess.PreprocessEvent


@dataclass
class PreprocessNote(_Result, bubble=False):
    text: str


@dataclass
class PreprocessFinished(_Result, bubble=False):
    result: Any                   # data.preprocess.PreprocessResult, None on error
    error: str | None


# -- the estimate screen ------------------------------------------------------------------------
@dataclass
class EstimateProgress(_Result, bubble=False):
    event: Any                    # engine.estimate.EstimateEvent


@dataclass
class EstimateFinished(_Result, bubble=False):
    result: Any                   # engine.estimate.EstimateResult, None on error
    error: str | None


# -- audio samples (widgets.samples) ------------------------------------------------------------
@dataclass
class SampleAnalysed(_Result, bubble=False):
    key: tuple                    # the sample entry it is for (path, event time)
    path: Path                    # where the file was found (a moved run folder: its samples/)
    summary: Any                  # data.spectrum.AudioSummary, None when unreadable
    error: str | None


# -- history: export a run's adapter --------------------------------------------------------------
@dataclass
class AdapterExported(_Result, bubble=False):
    result: Any                   # engine.export.ExportResult, None on error
    error: str | None


@dataclass
class SamplesListed(_Result, bubble=False):
    run_dir: Path
    samples: list[Any]            # engine.events.SampleWritten, oldest first
