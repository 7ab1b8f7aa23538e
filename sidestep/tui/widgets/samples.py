"""The audio samples a run rendered (``samples/epoch-N.wav``): a list, and for the selected one
its mel spectrogram, loudness, peak, prompt and seed, and the ``scp`` line that copies it off
the box.

``SamplesPanel`` takes ``SampleWritten`` events (a live run's, or an old run's read back with
``sidestep.tui.state.samples_of_run``) or bare paths, so the monitor and History can both
mount it. The panel is not focusable; the screen that mounts it binds the keys (``BINDINGS``
and ``SampleKeys`` below). Files are read and analysed in a thread worker (torch, soundfile),
one result per file cached for the session; a file that cannot be read shows a line saying so.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from sidestep.engine.events import SampleWritten
from sidestep.tui.messages import SampleAnalysed, SamplesListed
from sidestep.tui.redraw import TextLine
from sidestep.tui.state import sample_from_path, samples_of_run
from sidestep.tui.widgets.log_tail import fit
from sidestep.tui.widgets.spectrogram import Spectrogram

log = logging.getLogger("sidestep.tui")

# What data.spectrum computes per file: finer than any panel draws, so the picture is pooled
# down (never stretched) on all but very large terminals.
MEL_BANDS = 48
MEL_FRAMES = 160
COMPACT_BELOW = 11     # panel rows under which the list and the prompt line give way

# Keys for a screen that mounts the panel (``SampleKeys`` has their actions). None is taken on
# the monitor or History, nor by the App (F V D P E H S ? Q).
BINDINGS = [
    Binding("left_square_bracket", "sample(-1)", "Previous sample", show=False),
    Binding("right_square_bracket", "sample(1)", "Next sample", show=False),
    Binding("y,Y", "copy_sample", "Copy scp line", key_display="Y", show=False),
]
KEYS_HINT = "[ ] sample · y copy scp"


class SampleKeys:
    """Actions for ``BINDINGS`` on a screen with one ``SamplesPanel`` (mix into the screen,
    and add ``*samples.BINDINGS`` to its own BINDINGS)."""

    def _samples_panel(self) -> "SamplesPanel | None":
        panels = self.query(SamplesPanel)  # type: ignore[attr-defined]
        panel = panels.first() if panels else None
        return panel if panel is not None and panel.display else None

    def action_sample(self, delta: int) -> None:
        panel = self._samples_panel()
        if panel is not None:
            panel.move(delta)

    def action_copy_sample(self) -> None:
        panel = self._samples_panel()
        if panel is not None:
            panel.copy_scp()


# -- helpers (no widgets) -----------------------------------------------------------------------
def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no USER variable and no passwd entry (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def _host() -> str:
    import socket

    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"


def scp_line(path: str | Path) -> str:
    """The command that copies ``path`` from this machine to the current folder of another."""
    return f"scp {_user()}@{_host()}:{shlex.quote(os.path.abspath(path))} ."


def locate(path: str | Path, run_dir: str | Path | None) -> Path:
    """Where the sample is now: its recorded path, else (a run folder moved or copied from
    another box) the file of that name in ``run_dir/samples``. Touches the disk."""
    p = Path(path)
    if run_dir and not p.is_file():
        for candidate in (Path(run_dir) / p, Path(run_dir) / "samples" / p.name):
            if candidate.is_file():
                return candidate
    return p


_cache: OrderedDict = OrderedDict()   # (path, mtime_ns, size) -> AudioSummary, newest last
_cache_lock = threading.Lock()
CACHE_SIZE = 64


def analyse(path: str | Path, run_dir: str | Path | None = None):
    """(path found, AudioSummary or None, error text or None); never raises. Blocking (reads
    and analyses the file): call it from a worker."""
    from sidestep.data.audio import AudioError
    from sidestep.data.spectrum import describe_audio

    found = locate(path, run_dir)
    try:
        st = found.stat()
    except OSError as exc:
        return found, None, f"cannot read {found.name}: {exc.strerror or exc}"
    key = (str(found), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return found, _cache[key], None
    try:
        import warnings

        with warnings.catch_warnings():  # torchaudio's filter-bank notes would hit stderr
            warnings.simplefilter("ignore")
            summary = describe_audio(found, width=MEL_FRAMES, n_mels=MEL_BANDS)
    except AudioError as exc:
        return found, None, str(exc)
    except Exception as exc:  # a bug or the environment: the log keeps the traceback
        log.error("analysing %s failed", found, exc_info=exc)
        return found, None, f"cannot analyse {found.name}: {type(exc).__name__}: {exc}"
    with _cache_lock:
        _cache[key] = summary
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found, summary, None


def fmt_lufs(summary) -> str:
    if summary.silent:
        return "silent"
    return f"{summary.lufs:.1f} LUFS" if summary.lufs is not None else "LUFS n/a"


def fmt_peak(summary) -> str:
    return "peak -inf dBFS" if summary.peak_dbfs is None else f"peak {summary.peak_dbfs:.1f} dBFS"


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class _Entry:
    event: SampleWritten
    key: tuple               # (recorded path, event time): a re-rendered file is a new entry
    path: Path | None = None     # where it was found, once analysed
    summary: object = None       # data.spectrum.AudioSummary
    error: str | None = None
    pending: bool = False

    @property
    def done(self) -> bool:
        return self.summary is not None or self.error is not None


class SampleList(Widget):
    """One row per sample (epoch, length, loudness), the selected one marked; a click selects.
    Shows a window around the selection when there are more samples than rows."""

    DEFAULT_CSS = """
    SampleList {
        height: auto;
        max-height: 4;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[_Entry] = []
        self.selected = 0
        self._first = 0

    def show(self, entries: list[_Entry], selected: int) -> None:
        self.entries, self.selected = entries, selected
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self.entries), 1)

    def _row(self, entry: _Entry) -> str:
        e = entry.event
        s = entry.summary
        length = s.duration if s is not None else e.duration
        loud = fmt_lufs(s) if s is not None else ("unreadable" if entry.error else "…")
        return f"epoch {e.epoch:>3}  {length:5.1f} s  {loud}"

    def render(self) -> Text:
        rows = self.content_size.height or 1
        width = self.content_size.width
        n = len(self.entries)
        if not n:
            return Text("")
        self._first = min(max(self.selected - rows // 2, 0), max(n - rows, 0))
        text = Text(no_wrap=True, overflow="ellipsis")
        for i in range(self._first, min(self._first + rows, n)):
            mark = "▸ " if i == self.selected else "  "
            line = fit(mark + self._row(self.entries[i]), width)
            if i > self._first:
                text.append("\n")
            text.append(line, style="bold reverse" if i == self.selected else "")
        return text

    def on_click(self, event: events.Click) -> None:
        index = self._first + event.y
        if 0 <= index < len(self.entries):
            panel = next((a for a in self.ancestors if isinstance(a, SamplesPanel)), None)
            if panel is not None:
                panel.select(index)


class ScpLine(TextLine):
    """The copy command on one line (cut to the panel when it is narrow); a click copies all
    of it to the clipboard (OSC 52, which reaches the local terminal over SSH)."""

    def on_click(self) -> None:
        panel = next((a for a in self.ancestors if isinstance(a, SamplesPanel)), None)
        if panel is not None:
            panel.copy_scp()


class SamplesPanel(Vertical):
    DEFAULT_CSS = """
    SamplesPanel {
        border: round $panel;
        border-title-color: $text;
        padding: 0 1;
    }
    SamplesPanel TextLine {
        height: 1;
        width: 1fr;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    SamplesPanel #sample-scp {
        color: $text-accent;
    }
    SamplesPanel.-compact SampleList, SamplesPanel.-compact #sample-prompt {
        display: none;
    }
    """

    def __init__(self, samples: Iterable[SampleWritten | str | Path] = (),
                 run_dir: str | Path | None = None, note: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[_Entry] = []
        self.selected = -1
        self.run_dir = run_dir
        self.note = note
        self._initial = (list(samples), run_dir, note)
        self._listing: Path | None = None

    def compose(self) -> ComposeResult:
        yield SampleList(id="sample-list")
        yield Spectrogram(id="sample-spectrogram")
        yield TextLine("", id="sample-facts")
        yield TextLine("", id="sample-prompt")
        yield ScpLine("", id="sample-scp")

    def on_mount(self) -> None:
        samples, run_dir, note = self._initial
        self.set_samples(samples, run_dir, note)

    def on_resize(self) -> None:
        self.set_class(self.size.height < COMPACT_BELOW, "-compact")

    # -- the samples ---------------------------------------------------------------------------
    def set_samples(self, samples: Sequence[SampleWritten | str | Path],
                    run_dir: str | Path | None = None, note: str = "") -> None:
        """Show these samples (oldest first); ``note`` is what to say while there are none
        (e.g. when the first one will come). Keeps what was analysed and the selection; follows
        the newest sample while it was selected."""
        events_ = [s if isinstance(s, SampleWritten) else sample_from_path(s) for s in samples]
        known = {e.key: e for e in self.entries}
        was_newest = self.selected == len(self.entries) - 1
        old_key = self.entries[self.selected].key if 0 <= self.selected < len(self.entries) \
            else None
        self.entries = [known.get((e.path, e.time)) or _Entry(e, (e.path, e.time))
                        for e in events_]
        self.run_dir = run_dir if run_dir is not None else self.run_dir
        self.note = note
        keys = [e.key for e in self.entries]
        if not self.entries:
            self.selected = -1
        elif was_newest or old_key not in keys:
            self.selected = len(self.entries) - 1
        else:
            self.selected = keys.index(old_key)
        self._request()
        self._show()

    @property
    def listing(self) -> Path | None:
        """The run folder whose samples ``load_run`` shows (None when given them directly)."""
        return self._listing

    def load_run(self, run_dir: str | Path) -> None:
        """Show an old run's samples (its events.jsonl and samples/ folder, read in a worker):
        what History calls when a run is highlighted."""
        self._listing = Path(run_dir)
        self.set_samples([], self._listing, note="reading the run's samples…")
        self._list_run(self._listing)

    @work(thread=True, group="sample-list", exit_on_error=False)
    def _list_run(self, run_dir: Path) -> None:
        try:
            found = samples_of_run(run_dir)
        except Exception as exc:  # samples_of_run reads what it can; this is for a bug in it
            log.error("listing the samples of %s failed", run_dir, exc_info=exc)
            found = []
        self.post_message(SamplesListed(run_dir, found))

    def on_samples_listed(self, message: SamplesListed) -> None:
        if message.run_dir == self._listing:  # not a run highlighted before the current one
            self.set_samples(message.samples, message.run_dir)

    @property
    def current(self) -> _Entry | None:
        return self.entries[self.selected] if 0 <= self.selected < len(self.entries) else None

    def select(self, index: int) -> None:
        if self.entries:
            index = min(max(index, 0), len(self.entries) - 1)
            if index != self.selected:
                self.selected = index
                self._request()
                self._show()

    def move(self, delta: int) -> None:
        self.select(self.selected + delta)

    def scp_text(self) -> str:
        entry = self.current
        if entry is None:
            return ""
        return scp_line(entry.path if entry.path is not None else entry.event.path)

    def copy_scp(self) -> None:
        text = self.scp_text()
        if text:
            self.app.copy_to_clipboard(text)
            self.app.notify(text, title="Copied to the clipboard", timeout=4)

    # -- analysis (thread worker) --------------------------------------------------------------
    def _request(self) -> None:
        """Analyse what is not yet: the selected sample first, then the rest (for the list's
        loudness column)."""
        order = ([self.current] if self.current is not None else []) + self.entries[::-1]
        jobs = []
        for entry in order:
            if entry is not None and not entry.done and not entry.pending:
                entry.pending = True
                jobs.append((entry.key, entry.event.path))
        if jobs:
            self._analyse(jobs, self.run_dir)

    @work(thread=True, group="sample-audio", exit_on_error=False)
    def _analyse(self, jobs: list[tuple[tuple, str]], run_dir) -> None:
        for key, path in jobs:
            try:
                found, summary, error = analyse(path, run_dir)
            except Exception as exc:  # analyse never raises; this is for a bug in it
                found, summary, error = Path(path), None, f"{type(exc).__name__}: {exc}"
            self.post_message(SampleAnalysed(key, found, summary, error))

    def on_sample_analysed(self, message: SampleAnalysed) -> None:
        for entry in self.entries:
            if entry.key == message.key:
                entry.pending = False
                entry.path, entry.summary, entry.error = message.path, message.summary, \
                    message.error
        self._show()

    # -- drawing -------------------------------------------------------------------------------
    def _text(self, selector: str, text: str) -> None:
        self.query_one(selector, TextLine).set_text(text)

    def _show(self) -> None:
        if not self.is_mounted:
            return
        n = len(self.entries)
        self.border_title = f"samples {self.selected + 1}/{n}" if n else "samples"
        self.border_subtitle = KEYS_HINT if n > 1 else ("y copy scp" if n else "")
        self.query_one(SampleList).show(self.entries, self.selected)
        picture = self.query_one(Spectrogram)
        entry = self.current
        if entry is None:
            picture.show_note(self.note or "no audio samples in this run")
            for name in ("facts", "prompt", "scp"):
                self._text(f"#sample-{name}", "")
            return
        e = entry.event
        s = entry.summary
        name = Path(e.path).name
        if s is not None:
            picture.show(s.mel_db, s.sample_rate, s.duration)
            channels = {1: "mono", 2: "stereo"}.get(s.channels, f"{s.channels} ch")
            facts = (f"epoch {e.epoch} · {s.duration:.1f} s · {fmt_lufs(s)} · {fmt_peak(s)}"
                     f" · {s.sample_rate / 1000:g} kHz {channels}")
            if s.silent:
                facts = f"epoch {e.epoch} · {s.duration:.1f} s · digital silence (no signal)"
        elif entry.error:
            picture.show_note(f"cannot show {name}: {entry.error}")
            facts = f"epoch {e.epoch} · {name} is unreadable"
        else:
            picture.show_note(f"analysing {name}…")
            facts = f"epoch {e.epoch} · {e.duration:.1f} s" if e.duration else f"epoch {e.epoch}"
        self._text("#sample-facts", facts)
        self._text("#sample-prompt", self._prompt(e))
        self._text("#sample-scp", self.scp_text())

    @staticmethod
    def _prompt(e: SampleWritten) -> str:
        parts = [f"seed {e.seed}"] if e.seed >= 0 else []
        if not e.time:  # a bare file knows none of this
            return " · ".join(parts)
        prompt = " ".join(e.prompt.split())
        parts.append(f'prompt "{prompt}"' if prompt else "prompt from the first training song")
        parts.append(f"{e.steps} steps, cfg {e.cfg:g}")
        if e.seconds:
            parts.append(f"rendered in {e.seconds:.1f} s")
        return " · ".join(parts)
