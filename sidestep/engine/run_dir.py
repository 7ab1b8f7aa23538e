"""The run folder: ``run.json`` (config, versions, status), and reading runs back for history."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidestep.config.atomic import write_bytes, write_json

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "sidestep.log"
FINAL_ADAPTER = Path("final") / "adapter"
BEST_DIR = "best"  # best/adapter and best/best.json: the epoch with the best measure so far
BEST_ADAPTER = Path(BEST_DIR) / "adapter"
SAMPLES_DIR = "samples"  # samples/epoch-N.wav
MODULES_FILE = "module_config.json"  # selective: the modules this run trains (resume keeps it)
CONSOLE_LOG = "console.log"  # a detached run's own stdout and stderr (`--detach`)


class RunDirError(ValueError):
    pass


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    import importlib.metadata as md

    for name in ("sidestep", "torch", "peft", "lycoris-lora", "lightning-fabric", "transformers",
                 "diffusers", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def read_run(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_file_problem(run_dir: Path) -> str | None:
    """Why an existing run.json cannot be read (None when it reads, or is absent): a corrupt
    file is not the same as a folder that holds no run."""
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return f"{path}: unreadable (not UTF-8 text); the run's record is corrupt"
    except ValueError as exc:
        return f"{path}: unreadable (not valid JSON: {exc}); the run's record is corrupt"
    except OSError as exc:
        return f"{path}: unreadable ({exc.strerror or exc})"
    if not isinstance(data, dict):
        return f"{path}: corrupt (holds no JSON object); the run's record is lost"
    return None


def write_run(run_dir: Path, data: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RUN_FILE, data)


def resume_command(checkpoint: Path | str, mode: str | None = None) -> str:
    """The command that continues a run from ``checkpoint``, ready to paste: its mode (read
    from the run's run.json when not given; `fixed` when that cannot say), the path quoted,
    and the program as this process was started (``program``)."""
    if mode is None:
        config = (read_run(Path(checkpoint).parent) or {}).get("config")
        mode = config.get("mode") if isinstance(config, dict) else None
    from sidestep.config.schema import TRAIN_MODES

    if mode not in TRAIN_MODES:
        mode = "fixed"
    return f"{program()} {mode} --resume-from {shlex.quote(str(checkpoint))}"


def program() -> str:
    """`sidestep` as the shell that started this process can run it: "uv run sidestep" under
    uv; the script's full path when `sidestep` on PATH is not this install's (a venv that was
    not activated: `.venv/bin/sidestep fixed ...`); else plain `sidestep`."""
    if os.environ.get("UV_RUN_RECURSION_DEPTH"):
        return "uv run sidestep"
    ours = shutil.which("sidestep", path=os.path.dirname(sys.executable))
    on_path = shutil.which("sidestep")
    if ours is None or (on_path is not None and _same_file(ours, on_path)):
        return "sidestep"
    return shlex.quote(ours)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- who owns a folder ---------------------------------------------------------------------------
HEARTBEAT_SECONDS = 30.0
# A run on another host (or from a version without a pid) is judged by its heartbeat alone.
STALE_AFTER_SECONDS = 10 * HEARTBEAT_SECONDS


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _state(pid: int) -> str | None:
    """The process's state letter (Linux): R, S, D, Z (exited, not reaped), ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def has_exited(pid: int) -> bool:
    """Whether process ``pid`` (a child of this one, or not) has ended."""
    state = _state(pid)
    if state is not None:
        return state in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return not Path(f"/proc/{pid}").exists() if Path("/proc/self").exists() else False


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """What ``run.json`` records so that a later look can tell whether the run still lives
    (of this process, or of ``pid`` on this host)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "pid_started": _start_ticks(pid)}


def run_is_alive(info: dict[str, Any], run_dir: Path | None = None) -> bool:
    """Whether the process that wrote a ``running`` run.json is still at it."""
    pid, host = info.get("pid"), info.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process: it exists
        if _state(pid) == "Z":  # killed, not yet reaped (a container's init may never)
            return False
        started = info.get("pid_started")
        now_started = _start_ticks(pid)
        return started is None or now_started is None or started == now_started
    beats = [info.get("heartbeat_at")]
    if run_dir is not None:  # older run folders: the newest write stands in for a heartbeat
        for name in (RUN_FILE, EVENTS_FILE, LOG_FILE):
            try:
                beats.append((Path(run_dir) / name).stat().st_mtime)
            except OSError:
                pass
    newest = max((b for b in beats if isinstance(b, (int, float))), default=None)
    return newest is not None and time.time() - newest < STALE_AFTER_SECONDS


def live_status(run_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(status, run.json) judged by the process, not the recorded status alone: a run whose
    process is gone shows ``interrupted``. (None, None) when there is no readable run.json."""
    info = read_run(run_dir)
    if info is None:
        return None, None
    status = str(info.get("status") or "unknown")
    if status == "running" and not run_is_alive(info, run_dir):
        status = "interrupted"
    return status, info


def _has_steps(run_dir: Path) -> bool:
    try:
        with open(run_dir / EVENTS_FILE, encoding="utf-8", errors="replace") as fh:
            return any('"type": "step"' in line or '"type":"step"' in line for line in fh)
    except OSError:
        return False


def _left_by_failed_start(run_dir: Path, info: dict[str, Any] | None) -> bool:
    """A folder whose run (failed, or gone while running: the caller has ruled out a live one)
    never took a step nor saved anything: nothing there to protect."""
    if info is None or info.get("status") not in ("failed", "running"):
        return False
    return not (any(run_dir.glob("checkpoint-*")) or (run_dir / FINAL_ADAPTER).exists()
                or _has_steps(run_dir))


def check_output_dir(run_dir: Path, resume_from: str | None) -> None:
    """Refuse, before anything is written, a folder that holds another run's files, or any
    other files: a run mixed into a songs, tensors or checkpoint folder is hard to take out.

    A fresh run needs a new or empty folder (or one whose only run never took a step). A
    resumed run continues in its checkpoint's own run folder, or starts a new or empty one.
    """
    from sidestep.data.paths import output_dir_problem

    run_dir = Path(run_dir)

    problem = output_dir_problem(run_dir, "--output-dir")
    if problem:
        raise RunDirError(problem)
    existing = read_run(run_dir)
    live = bool(existing) and existing.get("status") == "running" and \
        run_is_alive(existing, run_dir)
    if live:
        who = f"pid {existing.get('pid')} on {existing.get('host')}" if existing.get("pid") \
            else "another process"
        raise RunDirError(f"{run_dir}: a run is in progress there ({who}); stop it first, or "
                          "choose another --output-dir")
    if _left_by_failed_start(run_dir, existing):
        return
    if resume_from:
        own = Path(resume_from).resolve().parent
        if run_dir.resolve() == own:
            _refuse_going_back(Path(resume_from), own)
            return
        if not run_dir.exists() or \
                not any(p.name != CONSOLE_LOG for p in run_dir.iterdir()):  # --detach made it
            return
        raise RunDirError(f"{run_dir}: holds other files, and --resume-from {resume_from} "
                          f"belongs to the run in {own}; resume into that folder, or choose a "
                          "new or empty --output-dir")
    has_run = existing is not None or (run_dir / EVENTS_FILE).exists() or \
        (run_dir / FINAL_ADAPTER).exists() or any(run_dir.glob("checkpoint-*"))
    if has_run:
        status = (existing or {}).get("status", "unknown")
        if status == "running":
            status = "interrupted"
        raise RunDirError(f"{run_dir}: already holds a run (status: {status}); choose a new "
                          "--output-dir, or continue it with --resume-from <its checkpoint>")
    others = _other_files(run_dir)
    if others:
        raise RunDirError(f"{run_dir}: is not empty (it holds {others}); a run writes its "
                          "checkpoints, logs and adapters into its own folder: choose a new or "
                          "empty --output-dir, e.g. a subfolder of this one")


def _refuse_going_back(checkpoint: Path, run_dir: Path) -> None:
    """Resuming in place from a checkpoint older than the run's newest would overwrite the
    later checkpoints and the best and final adapters as it retrains those steps: that is a
    branch, for a new folder."""
    from sidestep.engine.checkpointing import list_checkpoints, marked_step

    step = marked_step(checkpoint)
    newer = [c for c in list_checkpoints(run_dir) if marked_step(c) > step]
    if newer:
        names = ", ".join(c.name for c in newer[-3:])
        raise RunDirError(
            f"--resume-from {checkpoint}: the run in {run_dir} went on past it ({names}); "
            f"resuming in that folder would overwrite them and its best and final adapters. "
            f"Resume from {newer[-1].name} to continue the run, or give a new --output-dir to "
            "train on from this checkpoint there")


def _other_files(run_dir: Path) -> str:
    """What a folder holds besides what ``--detach`` writes before the run starts ("" when
    that is all, or the folder does not exist): a short list for an error message."""
    if not run_dir.is_dir():
        return ""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()
                   if p.name != CONSOLE_LOG)
    if not names:
        return ""
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class FolderTaken(ValueError):
    """Another process holds the run folder (a bad-input refusal: exit 2)."""


class FolderLock:
    """One starting or running run per output folder, from its pre-flight on. run.json says
    "running" only once the model and data are loaded, seconds later: two starts into one new
    folder in that time both passed the check and trained over each other. The lock is an
    flock on a file in the cache named after the folder, so nothing is added to the folder
    before the run claims it, and a killed process lets go of it with its last breath."""

    def __init__(self, run_dir: Path):
        import hashlib

        from sidestep.config.paths import cache_dir

        self.run_dir = Path(os.path.abspath(run_dir))
        key = hashlib.sha1(str(self.run_dir).encode()).hexdigest()[:20]
        self.path = cache_dir() / "locks" / f"{key}.lock"
        self._fd: int | None = None

    def take(self) -> "FolderLock":
        """Hold the lock, or ``FolderTaken`` naming the process that does. A cache that
        cannot be written, or a filesystem without flock (some NFS), leaves the run unlocked
        as before rather than refusing it."""
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderTaken(f"--output-dir {self.run_dir}: another run is starting or running "
                              f"there (pid {holder}); wait for it to end, or give another "
                              "folder") from None
        except OSError:  # no locking here
            os.close(fd)
            return self
        try:  # the pid is only for the refusal's words
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing lets go of the flock
            self._fd = None


class FolderClaim:
    """What a starting run is about to add to folders that may already hold things, so that a
    start which fails before its first step or checkpoint can take all of it back."""

    def __init__(self, run_dir: Path, log_dir: Path):
        self.run_dir = Path(run_dir)
        self.roots = []  # topmost folders this run creates: removed whole on rollback
        for folder in (self.run_dir, Path(log_dir)):
            top = None
            probe = folder
            while not probe.exists() and probe.parent != probe:
                top = probe
                probe = probe.parent
            if top is not None and top not in self.roots:
                self.roots.append(top)
        self.run_file = _read_bytes(self.run_dir / RUN_FILE)
        self.sizes = {name: _size(self.run_dir / name) for name in (EVENTS_FILE, LOG_FILE)}
        self.log_dir = Path(log_dir)
        self.log_entries = set(self.log_dir.rglob("*")) if self.log_dir.is_dir() else set()

    def rollback(self) -> None:
        for top in self.roots:
            shutil.rmtree(top, ignore_errors=True)
        if not self.run_dir.is_dir():
            return
        run_file = self.run_dir / RUN_FILE
        if self.run_file is None:
            run_file.unlink(missing_ok=True)
        elif _read_bytes(run_file) != self.run_file:
            write_bytes(run_file, self.run_file)
        for name, size in self.sizes.items():
            path = self.run_dir / name
            if size is None:
                path.unlink(missing_ok=True)
            elif _size(path) not in (None, size):
                with open(path, "r+b") as fh:
                    fh.truncate(size)
        if self.log_dir.is_dir():
            for path in sorted(set(self.log_dir.rglob("*")) - self.log_entries, reverse=True):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


@dataclass(frozen=True)
class RunSummary:
    path: Path
    status: str
    mode: str
    adapter_type: str
    model: str
    epochs_done: int
    epochs_total: int
    last_step: int
    best_loss: float | None
    adapter_path: str | None
    best_adapter: str | None    # best/adapter: what a run stopped before final/ exports
    started_at: float | None
    finished_at: float | None
    latest_checkpoint: Path | None

    @property
    def name(self) -> str:
        return self.path.name


def summarize(run_dir: Path) -> RunSummary | None:
    """History view of one run from ``run.json`` and ``events.jsonl`` (None if not a run)."""
    from sidestep.engine.checkpointing import list_checkpoints
    from sidestep.engine.events_digest import digest

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    events_path = run_dir / EVENTS_FILE
    if info is None and not events_path.is_file():
        return None
    info = info or {}
    seen = digest(events_path)  # only what was appended since the last look is read
    finished = seen.finished
    status = info.get("status") or (finished[-1].status if finished else "unknown")
    if status == "running" and not run_is_alive(info, run_dir):
        # Gone without rewriting run.json: the end it logged, if this process logged one (a
        # run resumed in this folder follows its predecessor's run_finished), else killed
        # hard: its newest complete checkpoint still resumes.
        ended = [e for e in finished if e.time >= (info.get("started_at") or 0)]
        status = ended[-1].status if ended else "interrupted"
    cfg = info.get("config") or {}
    adapter = info.get("adapter_path")
    if not adapter and (run_dir / FINAL_ADAPTER).is_dir():
        adapter = str(run_dir / FINAL_ADAPTER)
    ckpts = list_checkpoints(run_dir) if run_dir.is_dir() else []
    best = run_dir / BEST_ADAPTER
    return RunSummary(
        path=run_dir, status=status, mode=str(cfg.get("mode", "fixed")),
        adapter_type=str(cfg.get("adapter_type", "?")), model=str(cfg.get("model_variant", "?")),
        epochs_done=seen.epochs_done, epochs_total=int(cfg.get("epochs") or 0),
        last_step=seen.last_step, best_loss=seen.best_loss,
        adapter_path=adapter, best_adapter=str(best) if best.is_dir() else None,
        started_at=info.get("started_at"),
        finished_at=info.get("finished_at"), latest_checkpoint=ckpts[-1] if ckpts else None)


def run_folders(roots: list[Path], depth: int = 2) -> list[Path]:
    """Run folders under ``roots`` (a run is a folder with run.json or events.jsonl; a root may
    be a run itself), each once, without reading them."""
    seen: set[Path] = set()
    out: list[Path] = []

    def visit(folder: Path, level: int) -> None:
        try:
            resolved = folder.resolve()
        except OSError:
            return
        if resolved in seen or not folder.is_dir():
            return
        seen.add(resolved)
        if (folder / RUN_FILE).is_file() or (folder / EVENTS_FILE).is_file():
            out.append(folder)
            return
        if level >= depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir()
                              and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            visit(child, level + 1)

    for root in roots:
        visit(Path(root), 0)
    return out


def find_runs(roots: list[Path], depth: int = 2) -> list[RunSummary]:
    """Runs under ``roots``, summarised (reads each run's events), newest first."""
    out = [s for s in map(summarize, run_folders(roots, depth)) if s]
    out.sort(key=lambda s: s.started_at or 0.0, reverse=True)
    return out


def live_run_folders(roots: list[Path], depth: int = 2) -> list[Path]:
    """The run folders under ``roots`` whose process trains now (reads only run.json: cheap
    enough to look again every few seconds)."""
    return [f for f in run_folders(roots, depth) if live_status(f)[0] == "running"]


def now() -> float:
    return time.time()
