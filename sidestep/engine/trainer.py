"""The training loop. Plain Python, no UI: events out, ``Control`` commands in.

Read top to bottom: ``run`` prepares the run folder, ``setup`` builds everything (data checked
first, then the model, adapter, optimizer, resume), ``_train`` loops over epochs and
``_train_epoch`` over micro-batches, one optimizer step per accumulation group (``_step``). Off
the normal path: ``_obey_control`` (pause, stop, save-now) and ``_skip`` (the failure policy for
out-of-memory and non-finite micro-batches).

The random state is snapshotted at the start of every accumulation group and ``position`` only
moves at the group's optimizer step, so a stop, save-now or give-up at any micro-batch writes a
checkpoint of the group's start that resumes exactly. A new run stopped before its first
step has nothing worth keeping: it saves nothing and takes its files back, as a failed start
does (``run``).
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from sidestep import cpu_threads
from sidestep.engine import checkpointing as ckpt
from sidestep.engine.control import Control
from sidestep.engine.preflight import config_warnings, preflight, total_steps
from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, RunPaused, RunResumed, RunStarted,
                                    StepMetrics)
from sidestep.engine.live_runs import remember_run
from sidestep.engine.run_dir import (BEST_DIR, EVENTS_FILE, FINAL_ADAPTER, HEARTBEAT_SECONDS,
                                     LOG_FILE, MODULES_FILE, SAMPLES_DIR, FolderClaim,
                                     FolderLock, now,
                                     process_identity, versions, write_run)
from sidestep.engine.sinks import (EventBus, JsonlSink, LogToEvents, RecordSink, Sink,
                                   TensorBoardSink)

log = logging.getLogger("sidestep.engine")

MAX_NAN_STREAK = 5
MAX_OOM_STREAK = 3
OOM_REMEDY = ("lower --batch-size, --rank (or --lokr-linear-dim) or --chunk-duration, keep "
              "--gradient-checkpointing on, or pick a smaller VRAM preset (vram_12gb, vram_8gb)")
NAN_REMEDY = ("lower the learning rate, use --precision fp32 to rule out overflow, and check these "
              "files")
PRECISION_TO_FABRIC = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}
PRECISION_TO_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class _StoppedBeforeStart(Exception):
    """A stop request during set-up (preprocessing, --auto-estimate): the run ends
    ``stopped`` with nothing trained, not ``failed``."""


def _log_preprocess(e) -> None:
    log.info("preprocess %s %d/%d %s", e.phase, e.done, e.total, e.file or e.message)


def _own_process_group(_worker_id: int) -> None:
    """Data-loader workers leave the terminal's process group: a ctrl+c, a dropped SSH session
    or a SIGTERM to the group (`kill -- -PGID`, a job manager) killed them mid-batch, and the
    run with them, while the main process was stopping to save. They still end with the run
    (torch's workers watch their parent) and with a SIGTERM sent to them alone (its
    shutdown's)."""
    try:
        os.setpgid(0, 0)
    except (OSError, AttributeError):  # not here (Windows): at least the terminal's own signals pass them by
        for name in ("SIGINT", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, signal.SIG_IGN)


def _log_failure(exc: BaseException) -> None:
    """One line for the console and the app's log panel; the traceback for sidestep.log only
    (a user is shown what failed, not a stack)."""
    log.error("training failed: %s", exc)
    log.error("%s", traceback.format_exc().rstrip(), extra={"file_only": True})


class InputProblem(ValueError):
    """Bad input found while setting up (exit code 2)."""


def input_error_types() -> tuple[type[BaseException], ...]:
    from sidestep.config.device import DeviceError
    from sidestep.config.resolve import ConfigError
    from sidestep.data.audio import AudioError
    from sidestep.data.dataset_json import DatasetError
    from sidestep.data.preprocess import PreprocessError
    from sidestep.data.tensors import DataError
    from sidestep.engine.adapters import AdapterError
    from sidestep.engine.estimate import EstimateError
    from sidestep.engine.module_config import ModuleConfigError
    from sidestep.engine.run_dir import FolderTaken, RunDirError
    from sidestep.model.checkpoints import DiscoveryError
    from sidestep.model.loading import CheckpointError

    return (InputProblem, ConfigError, DeviceError, DataError, DatasetError, AudioError,
            PreprocessError, DiscoveryError, CheckpointError, AdapterError, EstimateError,
            ModuleConfigError, ckpt.CheckpointProblem, RunDirError, FolderTaken)


@dataclass
class _Progress:
    step: int = 0            # optimizer steps done
    epoch: int = 0           # 0-based index of the current epoch
    position: int = 0        # micro-batches done in the current epoch
    best_loss: float = math.inf
    samples: int = 0
    # the current epoch's step losses, checkpointed: a resume mid-epoch keeps them, so the
    # epoch's mean (which picks best/) counts the steps before the stop too
    epoch_losses: list[float] = field(default_factory=list)


@dataclass
class _Group:
    """One accumulation group: the micro-batches ``[progress.position, end)`` of this epoch."""
    end: int
    size: int
    snapshot: dict  # RNG state at the group's start: saves mid-group resume from here
    losses: list[float] = field(default_factory=list)
    weighted: list[float] = field(default_factory=list)
    valid: bool = True  # False after an OOM: the gradient is partial, so the step is skipped
    synced: bool = False  # data parallel: the last backward averaged gradients across ranks


class Trainer:
    def __init__(self, config, sinks: Iterable[Sink] = (), control: Control | None = None,
                 *, write_files: bool = True, fabric=None, with_app: bool = False):
        self.config = config
        self.with_app = with_app  # the app's UI shares this process: cpu_threads' policy
        self.control = control or Control()
        # absolute: run.json, events and checkpoints name their files so that History, attach
        # and a resume find them from any folder
        self.run_dir = Path(os.path.abspath(config.output_dir))
        from sidestep.engine.notify import notify_sinks

        # A data-parallel rank (``fabric`` from the launcher) leaves notifying to the launcher.
        notify = notify_sinks(config) if fabric is None else []
        self.bus = EventBus([*sinks, *notify])  # --notify-command, at the end
        self._rank_fabric = fabric
        self.world = None  # a ``distributed.World`` when this process is one of several ranks
        self.write_files = write_files
        self.progress = _Progress()
        self.adapted = None
        self.selected: list[str] | None = None  # selective: the module config's modules
        self._log_handlers: list[logging.Handler] = []
        self._setup_done = False
        self._started = 0.0
        self._claim: FolderClaim | None = None  # set once the run folder is ours to write
        self._folder_lock: FolderLock | None = None  # held from the pre-flight to the end
        self._saved_any = False
        # the newest save: (step, epoch, position), its event; a stop or "save now" at that
        # very place (the first micro-batch after an epoch's checkpoint) points at it instead
        # of writing checkpoint-step-N beside checkpoint-epoch-K with the same state
        self._last_save: tuple[tuple[int, int, int], CheckpointSaved] | None = None
        self._stepped = False
        self._run_info: dict[str, Any] = {}
        self._run_lock = threading.Lock()
        self._heartbeat_stop = threading.Event()
        self._threads_before: int | None = None  # torch's intra-op threads, for CPU runs
        self._early_log: logging.handlers.MemoryHandler | None = None
        self._old_root_level: int | None = None
        # Built by setup(); None until then, which run.json of a failed start records as such.
        self.device_name: str | None = None
        self.precision: str | None = None
        self.model_ref = None
        self.resumed_from: str | None = None
        # The training loop's own state.
        self._streaks = {"oom": 0, "nan": 0}  # skipped micro-batches in a row, by kind
        self._loop_t0 = 0.0  # when the loop started, and at which step: throughput and ETA
        self._paused_s = 0.0  # seconds paused since then
        self._loop_step0 = 0
        # Quality: EMA of the adapter, held-out validation, best adapter and early stop.
        self.ema = None
        self.validator = None
        self.tracker = None
        self.val_files: list[Path] = []
        self.best_path: Path | None = None
        self._sample_fallback: dict | None = None  # the first training song's condition
        self._sample_cache: dict = {}  # an encoded --sample-prompt, kept across epochs

    # -- public --------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.bus.emit(event)

    def _file_error(self, exc: OSError) -> str:
        """A file error as a user can act on it: the file, why, and where the run resumes."""
        where = f" {exc.filename}" if exc.filename else ""
        line = f"cannot read or write{where}: {exc.strerror or exc}"
        saved = self._newest_saved()
        if saved:  # (the command to resume follows the error, from the result's checkpoint)
            line += f"; fix that (free space, permissions), then resume from {saved}"
        return line

    def _newest_saved(self) -> Path | None:
        """The run's newest complete checkpoint, where a failed run resumes (None before its
        folder was ours, or when it cannot be read)."""
        if self._claim is None:
            return None
        try:
            saved = ckpt.list_checkpoints(self.run_dir)
        except OSError:
            return None
        return saved[-1] if saved else None

    def run(self) -> RunFinished:
        self._started = time.monotonic()
        if self._rank_fabric is None and not self._setup_done:
            launched = self._launch_ranks()
            if launched is not None:
                return launched
        result: RunFinished
        try:
            if not self._setup_done:
                self.setup()
            result = self._train()
        except _StoppedBeforeStart as exc:
            log.warning("%s", exc)
            result = self._finished("stopped")
        except input_error_types() as exc:
            log.error("%s", exc)
            self.emit(Problem(kind="input", message=str(exc), fatal=True))
            result = self._finished("failed", error=str(exc), error_kind="input")
        except OSError as exc:  # a disk that filled up, a folder made read-only, a dead mount
            _log_failure(exc)
            message = self._file_error(exc)
            self.emit(Problem(kind="error", message=message, fatal=True))
            result = self._finished("failed", error=message, error_kind="runtime",
                                    checkpoint=self._newest_saved())
        except Exception as exc:  # anything else is a bug or an environment failure
            _log_failure(exc)
            self.emit(Problem(kind="error", message=f"{type(exc).__name__}: {exc}",
                              fatal=True))
            result = self._finished("failed", error=f"{type(exc).__name__}: {exc}",
                                    error_kind="runtime", checkpoint=self._newest_saved())
        self.emit(result)
        self._heartbeat_stop.set()
        # A start that failed (or was stopped) before its first step or checkpoint leaves the
        # folders as it found them: no clutter in History, and the folder stays usable.
        undo = result.status in ("failed", "stopped") and not self._stepped \
            and not self._saved_any
        if not undo:
            self._write_run_json(result.status, result)
        self.bus.close()
        self._detach_logging()
        if undo and self._claim is not None:
            self._claim.rollback()
        if self._folder_lock is not None:
            self._folder_lock.release()
            self._folder_lock = None
        cpu_threads.restore(self._threads_before)
        self._threads_before = None
        return result

    def _first_rank(self) -> bool:
        """Rank 0 of a multi-process run (or the only process), known before the device is
        set up: the one that holds the run folder's lock (the other ranks joined its run)."""
        from sidestep.engine import distributed

        if self._rank_fabric is not None:
            return self._rank_fabric.global_rank == 0
        return distributed.torchrun_rank() in (None, 0)

    def _launch_ranks(self) -> RunFinished | None:
        """More than one device: run the ranks as child processes (``distributed.launch``) and
        return their result; None when this process trains itself (one device, or torchrun)."""
        from sidestep.engine import distributed

        cfg = self.config
        if (cfg.devices, cfg.num_nodes, cfg.strategy) == ("1", 1, "auto"):
            return None  # one device: today's path, nothing probed here
        try:
            world, device_name, precision = self._world_plan()
        except input_error_types() as exc:
            self.emit(Problem(kind="input", message=str(exc), fatal=True))
            result = self._finished("failed", error=str(exc), error_kind="input")
        else:
            if world is None or distributed.under_torchrun():
                return None
            self.emit(LogLine(f"launching {world.size} training processes on {device_name}"))
            result = distributed.launch(self, world, PRECISION_TO_FABRIC[precision])
        self.emit(result)
        self.bus.close()
        return result

    def _world_plan(self):
        from sidestep.config.device import probe, resolve_device, resolve_precision
        from sidestep.engine import distributed

        info = probe()
        device_name = resolve_device(self.config.device, info)
        precision, _note = resolve_precision(self.config.precision, device_name, info)
        try:
            world = distributed.plan(self.config, device_name, info)
        except distributed.DistributedError as exc:
            raise InputProblem(str(exc)) from None
        return world, device_name, precision

    def setup(self) -> None:
        """Everything before the first step. Separate so callers (and tests) can inspect or
        instrument the built model before ``run``."""
        cfg = self.config
        self._attach_logging()
        # Everything that can be checked is checked before the first file is written.
        preflight(cfg, output_dir=self.write_files)
        if self.write_files and self._first_rank() and sys.platform != "win32":
            self._folder_lock = FolderLock(self.run_dir).take()
        self._setup_device()
        self._setup_model_config()
        if cfg.preprocess:
            self._run_preprocess()
        self._setup_data()
        if self.write_files:
            self._claim_run_dir()
        if cfg.mode == "selective":
            self._select_modules()
        self._setup_model()
        self._setup_optimizer()
        self._setup_quality()
        if cfg.resume_from:
            self._resume(Path(cfg.resume_from))
        self._setup_done = True

    # -- setup ---------------------------------------------------------------------------------
    def _claim_run_dir(self) -> None:
        cfg = self.config
        log_dir = Path(cfg.log_dir or self.run_dir / "runs")
        self._claim = FolderClaim(self.run_dir, log_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the disk changed since the pre-flight made and removed it
            from sidestep.data.paths import cannot_create

            raise InputProblem(cannot_create(self.run_dir, "--output-dir", exc)) from None
        remember_run(self.run_dir)  # History finds it wherever it is
        ckpt.clean_partials(self.run_dir)
        self._log_to_file()
        from sidestep.engine.control_channel import ControlWatcher

        # `sidestep stop|pause|resume|save`: listening before run.json says "running", so no
        # command sent to this run is mistaken for one left from an earlier run here. The
        # bus closes it when the run ends.
        self.bus.add(ControlWatcher(self.run_dir, self.control).start())
        self._write_run_json("running")
        # events.jsonl only after run.json: a folder with events and no run.json read as a
        # run of status "unknown" to History and `sidestep runs` for that moment
        self.bus.add(JsonlSink(self.run_dir / EVENTS_FILE))
        self.bus.add(RecordSink(cfg.log_every, cfg.mode))
        try:
            self.bus.add(TensorBoardSink(log_dir, cfg.log_every))
        except Exception as exc:  # TensorBoard is optional for the run itself
            log.warning("TensorBoard logging is off: %s", exc)
        threading.Thread(target=self._heartbeat, name="sidestep-heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        """run.json's ``heartbeat_at``, so a run killed on another host shows as interrupted."""
        while not self._heartbeat_stop.wait(HEARTBEAT_SECONDS):
            with self._run_lock:
                if self._run_info.get("status") != "running":
                    return
                self._run_info["heartbeat_at"] = now()
                self._store_run_info()

    def _setup_device(self) -> None:
        from lightning_fabric import Fabric

        from sidestep.config.device import probe, resolve_device, resolve_precision

        info = probe()
        self.device_name = resolve_device(self.config.device, info)
        self.precision, note = resolve_precision(self.config.precision, self.device_name, info)
        if note:
            log.warning(note)
        kind = self.device_name.split(":")[0]
        devices: Any = [int(self.device_name.split(":")[1])] if ":" in self.device_name else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._rank_fabric is None and self._joins_torchrun():
                self._rank_fabric = self._torchrun_fabric()
                if self._rank_fabric.global_rank != 0:
                    # Every torchrun rank runs the CLI: rank 0 alone speaks (console,
                    # --notify-command), as for the ranks this trainer launches itself.
                    self.bus.close()
                    self.bus = EventBus([])
            if self._rank_fabric is not None:
                self._become_rank(self._rank_fabric, kind)
            else:
                self.fabric = Fabric(accelerator=kind, devices=devices,
                                     precision=PRECISION_TO_FABRIC[self.precision])
        self.device = self.fabric.device
        if kind == "cpu":
            from sidestep.cpu_malloc import keep_freed_memory

            keep_freed_memory()
            self._threads_before = cpu_threads.use_training_threads(self.with_app)
        log.info("device %s, precision %s", self.device_name, self.precision)

    def _joins_torchrun(self) -> bool:
        from sidestep.engine import distributed

        return distributed.under_torchrun() and self._world_plan()[0] is not None

    def _torchrun_fabric(self):
        """torchrun started this process as one rank: join the group, no launching."""
        from sidestep.engine import distributed

        world, _name, precision = self._world_plan()
        fabric = distributed.make_fabric(world, PRECISION_TO_FABRIC[precision])
        fabric.launch()
        return fabric

    def _become_rank(self, fabric, kind: str) -> None:
        from sidestep.engine.distributed import World

        self.fabric = fabric
        self.world = World(fabric)
        if kind != "cpu":
            self.device_name = str(fabric.device)
        self.write_files = self.write_files and fabric.global_rank == 0  # rank 0 writes
        log.info("rank %d of %d (%s backend)", self.world.rank, self.world.size,
                 "gloo" if kind == "cpu" else "nccl")

    @property
    def world_size(self) -> int:
        return self.world.size if self.world is not None else 1

    @property
    def _rank0(self) -> bool:
        return self.world is None or self.world.rank == 0

    def _barrier(self) -> None:
        if self.world is not None:
            self.world.barrier()

    def _setup_model_config(self) -> None:
        from sidestep.model.checkpoints import resolve_model
        from sidestep.model.loading import read_model_config

        cfg = self.config
        self.model_ref = resolve_model(cfg.checkpoint_dir, cfg.model_variant, cfg.base_model)
        self.model_config = read_model_config(self.model_ref.path)

    def _run_preprocess(self) -> None:
        from sidestep.data.dataset_json import samples_from
        from sidestep.data.preprocess import preprocess

        cfg = self.config
        notes: list[str] = []
        meta, samples = samples_from(cfg.audio_dir, cfg.dataset_json, notes)
        for note in notes:
            log.warning("%s", note)
        log.info("preprocessing %d songs into %s", len(samples), cfg.tensor_output)
        result = preprocess(samples, cfg.checkpoint_dir, cfg.model_variant, cfg.tensor_output,
                            device=self.device_name, precision=self.precision,
                            max_duration=cfg.max_duration, normalize=cfg.normalize,
                            dataset_meta=meta.__dict__, tag_position=meta.tag_position,
                            genre_ratio=meta.genre_ratio, progress=_log_preprocess,
                            cancel=lambda: self.control.stop_requested, warn=log.warning)
        if result.cancelled:  # finished songs are kept; the same command continues them
            raise _StoppedBeforeStart("stopped during preprocessing, before training began")
        for path, reason in result.failed:
            self.emit(Problem(kind="data", message=f"{path}: {reason}"))
        if not (result.written or result.reused):
            raise InputProblem("preprocessing produced no tensor files")

    def _setup_data(self) -> None:
        from sidestep.data.tensors import EpochBatches, TensorDataset, collate, list_files, \
            unfinished_note, validate

        from sidestep.engine.validation import SplitError, split_files

        cfg = self.config
        files = list_files(cfg.dataset_dir)
        note = unfinished_note(cfg.dataset_dir)
        if note:  # trains on the finished songs: a song that always fails must not block it
            log.warning("%s", note)
        log.info("checking %d tensor files in %s", len(files), cfg.dataset_dir)
        self.samples = validate(files, self.model_config.audio_acoustic_hidden_dim,
                                self.model_config.enc_hidden)
        try:
            files, self.val_files = split_files(files, cfg.val_split, cfg.seed)
        except SplitError as exc:
            raise InputProblem(str(exc)) from None
        if self.val_files:
            log.info("validation: %d of %d files held out (%s)", len(self.val_files),
                     len(files) + len(self.val_files),
                     ", ".join(f.name for f in self.val_files[:4])
                     + (", ..." if len(self.val_files) > 4 else ""))
        self.dataset = TensorDataset(files)
        self.batches = EpochBatches(len(files), cfg.batch_size, cfg.seed,
                                    *((self.world.rank, self.world.size) if self.world else ()))
        workers = min(cfg.num_workers, cpu_threads.usable_cores())
        if workers < cfg.num_workers:
            log.info("data-loader workers: %d instead of %d (this machine lets the run use %d "
                     "cores)", workers, cfg.num_workers, cpu_threads.usable_cores())
        kwargs: dict[str, Any] = {}
        if workers > 0:
            kwargs["worker_init_fn"] = _own_process_group
            kwargs["persistent_workers"] = bool(cfg.persistent_workers)
            if cfg.prefetch_factor > 0:
                kwargs["prefetch_factor"] = cfg.prefetch_factor
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.batches, collate_fn=collate, num_workers=workers,
            pin_memory=bool(cfg.pin_memory) and self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed), **kwargs)
        self.batches_per_epoch = self.batches.batches_per_epoch
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.gradient_accumulation)
        self.total_steps = total_steps(cfg, self.batches_per_epoch)
        for note in config_warnings(cfg, self.total_steps):
            log.warning("%s", note)
        self.chunk_frames = None
        if cfg.chunk_duration:
            from sidestep.data.audio import LATENT_RATE

            self.chunk_frames = int(cfg.chunk_duration * LATENT_RATE)

    def _select_modules(self) -> None:
        """``selective``: the modules named by the module config (a resumed run keeps the copy
        in its folder; --auto-estimate runs the estimate first and writes that copy)."""
        from sidestep.engine.module_config import load_module_config, selected_modules

        cfg = self.config
        recorded = self.run_dir / MODULES_FILE
        if cfg.resume_from and recorded.is_file():
            source = recorded
        elif cfg.module_config:
            source = Path(cfg.module_config)
        else:
            source = self._auto_estimate(recorded)
        chosen = load_module_config(source)
        self.selected, notes = selected_modules(chosen, source, cfg,
                                                self.model_config.num_hidden_layers,
                                                self.model_ref.entry.name
                                                if source != recorded else None)
        for note in notes:  # (the pre-flight's words: the CLI said them before its prompt)
            log.warning("%s", note)
        if self.write_files and source != recorded:
            from sidestep.config import atomic

            atomic.write_text(recorded, Path(source).read_text(encoding="utf-8"))
        log.info("selective: %d modules from %s (%s granularity, top %d)", len(self.selected),
                 source, chosen.granularity, len(chosen.modules))

    def _auto_estimate(self, target: Path) -> Path:
        from sidestep.engine.estimate import estimate, write_result

        log.info("--auto-estimate: ranking modules by gradient sensitivity first")
        result = estimate(self.config, with_app=self.with_app,
                          cancel=lambda: self.control.stop_requested,
                          progress=lambda e: log.info("estimate %s %d/%d", e.phase, e.done,
                                                      e.total))
        if result.cancelled:
            raise _StoppedBeforeStart("stopped during --auto-estimate, before training began")
        if not self.write_files:
            import tempfile

            target = Path(tempfile.mkdtemp(prefix="sidestep-estimate-")) / MODULES_FILE
        return write_result(result, target)

    def _setup_model(self) -> None:
        from sidestep.engine.adapters import AdapterSpec, attach
        from sidestep.model import load_acestep

        cfg = self.config
        dtype = PRECISION_TO_DTYPE[self.precision]
        log.info("loading %s (%s)", self.model_ref.entry.name, self.model_ref.family)
        # Only the decoder and the null condition: the condition encoder, audio tokenizer and
        # detokenizer never reach the training device (preprocessed tensors hold their work).
        model = load_acestep(self.model_ref.path, device=self.device, dtype=dtype,
                             parts=("decoder", "null_condition_emb"))
        decoder = model.decoder
        decoder.gradient_checkpointing = bool(cfg.gradient_checkpointing)
        torch.manual_seed(cfg.seed)  # adapter initialisation is part of the run's seed
        spec = AdapterSpec.from_config(cfg, self.model_config.num_hidden_layers,
                                       names=self.selected)
        adapted = attach(decoder, model.null_condition_emb, spec)
        self.adapted = adapted
        self.trainable = sum(p.numel() for p in adapted.adapter_parameters())
        log.info("%s adapter on %d modules: %s trainable parameters", spec.kind.upper(),
                 len(spec.names), f"{self.trainable:,}")

    def _setup_optimizer(self) -> None:
        from sidestep.engine import objective
        from sidestep.engine.optim import build_optimizer, build_scheduler

        cfg = self.config
        optimizer = build_optimizer(cfg.optimizer_type, self.adapted.adapter_parameters(),
                                    cfg.learning_rate, cfg.weight_decay, self.device.type)
        self.module, self.optimizer = self.fabric.setup(self.adapted, optimizer)
        self.module.train()
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler_type, cfg.warmup_steps,
                                         self.total_steps)
        self.timestep_mu = self.model_config.timestep_mu
        self.timestep_sigma = self.model_config.timestep_sigma
        self.schedule = objective.shifted_schedule(cfg.num_inference_steps, cfg.shift)

    def _setup_quality(self) -> None:
        from sidestep.engine.ema import AdapterEMA, shadow_device
        from sidestep.engine.validation import BestTracker, Validator

        cfg = self.config
        if cfg.ema_decay > 0:
            named = [(n, p) for n, p in self.adapted.named_parameters() if p.requires_grad]
            where = shadow_device([p for _, p in named], self.device)
            self.ema = AdapterEMA(named, cfg.ema_decay, where)
            log.info("EMA of the adapter (decay %g) kept on %s", cfg.ema_decay, where)
        if self.val_files:
            self.validator = Validator(self.val_files, seed=cfg.seed, mode=cfg.mode,
                                       schedule=self.schedule, mu=self.timestep_mu,
                                       sigma=self.timestep_sigma,
                                       chunk_frames=self.chunk_frames)
        self.tracker = BestTracker(start=cfg.save_best_after, patience=cfg.early_stop_patience)

    def _resume(self, folder: Path) -> None:
        from sidestep.config.resume import resume_changes
        from sidestep.engine.adapters import read_adapter_dir
        from sidestep.engine.optim import continue_schedule

        state = ckpt.read_state(folder)
        if state["adapter_type"] != self.config.adapter_type:
            raise ckpt.CheckpointProblem(
                f"{folder}: holds a {state['adapter_type'].upper()} adapter but this run is set "
                f"to --adapter-type {self.config.adapter_type}")
        kind, weights, _ = read_adapter_dir(folder / ckpt.ADAPTER_DIR)
        if kind != self.config.adapter_type:
            raise ckpt.CheckpointProblem(f"{folder}: adapter files are {kind}, expected "
                                         f"{self.config.adapter_type}")
        self.adapted.load_adapter_state({k: v.to(self.device) for k, v in weights.items()},
                                        str(folder))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            continue_schedule(self.scheduler, self.optimizer, self.config.learning_rate)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ckpt.CheckpointProblem(
                f"{folder}: optimizer state does not fit this run ({exc}); resume with the same "
                "--optimizer-type and adapter settings") from None
        saved_world = int(state.get("world_size", 1))
        ranks = state.get("rng_ranks")
        if ranks and self.world is not None and saved_world == self.world.size:
            ckpt.restore_rng(ranks[self.world.rank])
        else:
            ckpt.restore_rng(state["rng"])
        if saved_world != self.world_size:
            log.warning("resuming on %d processes (the checkpoint was made on %d): the data "
                        "order and random draws will differ from the original run",
                        self.world_size, saved_world)
        self._resume_quality(state, folder)
        # the pre-flight's words (the CLI said them before its prompt: not said twice)
        for line in resume_changes(self.config.mode, state.get("config") or {},
                                   self.config.to_dict()):
            log.warning("%s", line)
        p = self.progress
        p.step, p.epoch, p.position = int(state["step"]), int(state["epoch"]), \
            int(state["position"])
        if p.position >= self.batches_per_epoch:
            p.epoch, p.position = p.epoch + 1, 0
        elif p.position:  # older checkpoints lack them: the mean then counts from here
            p.epoch_losses = [float(x) for x in state.get("epoch_losses") or ()]
        p.best_loss = float(state.get("best_loss", math.inf))
        done = ckpt.trained_out(folder, p.epoch, self.config.epochs)
        if done:  # nothing left: a start would only rewrite its files (the preflight saw most)
            raise ckpt.CheckpointProblem(done)
        self.resumed_from = str(folder)
        self._last_save = ((p.step, p.epoch, p.position),
                           CheckpointSaved(path=str(folder), step=p.step, epoch=p.epoch,
                                           kind="step"))
        log.info("resumed from %s at epoch %d, step %d", folder, p.epoch + 1, p.step)

    def _resume_quality(self, state: dict, folder: Path) -> None:
        """The EMA and best-so-far the checkpoint kept (a changed --ema-decay is one of the
        resume's notes)."""
        from sidestep.engine.ema import EmaError

        if self.ema is not None and state.get("ema") is not None:
            try:
                self.ema.load_state_dict(state["ema"], str(folder))
            except EmaError as exc:
                raise ckpt.CheckpointProblem(str(exc)) from None
        elif self.ema is not None:  # made before the adapter was loaded: from its weights now
            self.ema.restart()
        if state.get("best"):
            self.tracker.load_state_dict(state["best"])

    # -- training ------------------------------------------------------------------------------
    def _train(self) -> RunFinished:
        cfg = self.config
        p = self.progress
        self.emit(RunStarted(
            run_dir=str(self.run_dir), config=cfg.to_record(), device=self.device_name,
            precision=self.precision, model=self.model_ref.entry.name,
            adapter_type=cfg.adapter_type, trainable_params=self.trainable,
            dataset_size=len(self.dataset), steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps, total_epochs=cfg.epochs, start_step=p.step,
            start_epoch=p.epoch, resumed_from=self.resumed_from, world_size=self.world_size))
        if self.world is not None:
            log.info("effective batch %d = %d per device x %d processes x %d accumulation",
                     cfg.batch_size * self.world_size * cfg.gradient_accumulation,
                     cfg.batch_size, self.world_size, cfg.gradient_accumulation)
        # time paused is not training time: rates, the ETA and epoch times leave it out
        self._loop_t0, self._loop_step0, self._paused_s = time.monotonic(), p.step, 0.0

        while p.epoch < cfg.epochs:
            epoch_t0, paused0 = time.monotonic(), self._paused_s
            ended = self._train_epoch(p.epoch_losses)
            if ended is not None:  # stopped, or gave up
                return ended
            p.epoch += 1
            p.position = 0
            reason = self._end_epoch(p.epoch_losses, time.monotonic() - epoch_t0
                                     - (self._paused_s - paused0))
            p.epoch_losses = []
            if reason is not None:
                return self._complete(reason)

        # whatever --save-every says: a finished run goes on from here with more epochs (it
        # went on from its last periodic checkpoint, retraining the epochs after it)
        self._save(f"checkpoint-epoch-{cfg.epochs}", ckpt.rng_snapshot(), "epoch")
        return self._complete()

    def _end_epoch(self, epoch_losses: list[float], seconds: float) -> str | None:
        """After each epoch: validation, best adapter, the epoch event, the periodic checkpoint
        and the audio sample. Returns why the run ends early (early stop), else None."""
        cfg = self.config
        p = self.progress
        mean = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
        val = self._validate() if self.validator is not None else None
        measure, improved = self.tracker.observe(p.epoch, mean, val)
        if improved:
            self._save_best(measure, "val_loss" if val is not None else "train_loss_mean5")
        self.emit(EpochEnded(epoch=p.epoch, step=p.step, mean_loss=mean, seconds=seconds,
                             val_loss=val, best=improved, measure=measure))
        stop_early = self.tracker.should_stop and p.epoch < cfg.epochs
        if (p.epoch % cfg.save_every == 0 or stop_early) and p.epoch < cfg.epochs:
            self._save(f"checkpoint-epoch-{p.epoch}", ckpt.rng_snapshot(), "epoch")
        if cfg.sample_every_n_epochs and p.epoch % cfg.sample_every_n_epochs == 0:
            self._sample()  # rank 0 (it writes files); the others wait for it
            self._barrier()
        if not stop_early:
            return None
        what = "validation loss" if val is not None else \
            f"mean training loss of the last {min(len(self.tracker.train_means), 5)} epochs"
        return (f"early stop: the {what} has not improved for {self.tracker.since} epochs "
                f"(best {self.tracker.best:.4f} at epoch {self.tracker.best_epoch})")

    def _complete(self, reason: str | None = None) -> RunFinished:
        p = self.progress
        if reason:  # the UIs show it with the run's end (RunFinished.reason)
            log.info("%s", reason)
        final = self.run_dir / FINAL_ADAPTER
        if self._rank0:
            with self._averaged():  # the EMA's weights when it is on
                self.adapted.save(final)
        self._barrier()
        self.emit(CheckpointSaved(path=str(final), step=p.step, epoch=p.epoch, kind="final"))
        last = Path(self._last_save[1].path) if self._last_save else None  # where it goes on
        return self._finished("completed", adapter=str(final), checkpoint=last, reason=reason)

    def _averaged(self):
        from contextlib import nullcontext

        return self.ema.applied() if self.ema is not None else nullcontext()

    def _validate(self) -> float:
        """The validation loss, with the EMA's weights when it is on, in eval mode."""
        t0 = time.monotonic()
        self.module.eval()
        try:
            with self._averaged():
                value = self.validator.loss(self.module, self.device)
        finally:
            self.module.train()
        log.debug("validation loss %.5f (%.1f s)", value, time.monotonic() - t0)
        return value

    def _save_best(self, measure: float, metric: str) -> None:
        p = self.progress
        self.best_path = self.run_dir / BEST_DIR / ckpt.ADAPTER_DIR
        if self._rank0:
            with self._averaged():
                self.best_path = ckpt.save_best(self.run_dir / BEST_DIR, self.adapted, {
                    "epoch": p.epoch, "step": p.step, "metric": metric, "value": measure,
                    "ema": self.ema is not None})
        self._barrier()
        self.emit(CheckpointSaved(path=str(self.best_path), step=p.step, epoch=p.epoch,
                                  kind="best"))

    def _sample(self) -> None:
        """Render ``samples/epoch-N.wav`` with the adapter as it is now (the EMA's weights when
        on). The text encoder, condition encoder and VAE are loaded for the render and released;
        the global RNG is untouched, so a resumed run trains exactly as before. A render that
        fails is reported and the run goes on."""
        from sidestep.engine import sampler

        cfg = self.config
        p = self.progress
        if not self.write_files:
            return
        out = self.run_dir / SAMPLES_DIR / f"epoch-{p.epoch}.wav"
        try:
            if self._sample_fallback is None:
                self._sample_fallback = sampler.fallback_condition(self.dataset.files[0])
            request = sampler.SampleRequest.from_config(cfg, self.model_ref.family)
            with self._averaged():
                result = sampler.render_sample(
                    self.module, self.adapted.null_condition_emb, self.model_ref.path, request,
                    out, device=self.device, dtype=PRECISION_TO_DTYPE[self.precision],
                    fallback=self._sample_fallback, checkpoint_root=self.model_ref.root,
                    cache=self._sample_cache)
        except Exception as exc:  # a sample is a preview: it never ends the run
            if isinstance(exc, torch.OutOfMemoryError):
                self._free_memory()
            self.emit(Problem(kind="sample", message=f"audio sample for epoch {p.epoch} failed: "
                              f"{type(exc).__name__}: {exc}",
                              remedy="lower --sample-duration, or set --sample-every-n-epochs 0"))
            return
        self.emit(sampler.sample_event(result, p.epoch, p.step))
        log.info("sample for epoch %d: %s (%.1f s to render)", p.epoch, out, result.seconds)

    def _train_epoch(self, epoch_losses: list[float]) -> RunFinished | None:
        """The rest of this epoch, from ``progress.position``; returns a result only when the
        run ends early."""
        p = self.progress
        self.batches.set_epoch(p.epoch, p.position)
        batches = iter(self.loader)
        group = self._start_group()
        for index in range(p.position, self.batches_per_epoch):
            if self._obey_control(group):
                if self._nothing_trained():
                    return self._finished("stopped")  # nothing trained yet: nothing to keep
                return self._finished("stopped", checkpoint=self._save_from_snapshot(group))
            batch = next(batches)
            gave_up = self._micro_batch(batch, group, index)
            if gave_up is not None:
                return gave_up
            if index + 1 < group.end:
                continue  # still accumulating
            self._step(group, epoch_losses)
            group = self._start_group()
        return None

    def _start_group(self) -> _Group:
        p = self.progress
        end = min(p.position + self.config.gradient_accumulation, self.batches_per_epoch)
        return _Group(end=end, size=end - p.position, snapshot=ckpt.rng_snapshot())

    def _micro_batch(self, batch: dict, group: _Group, index: int) -> RunFinished | None:
        """Forward and backward one micro-batch into ``group``; a result if the run gives up."""
        self.progress.samples += len(batch["files"])  # throughput counts skipped ones too
        try:
            loss, weighted = self._micro_step(batch, group, index)
        except torch.OutOfMemoryError:
            if self.world is not None:  # a rank cannot skip a batch its peers trained on
                raise RuntimeError(f"out of memory on rank {self.world.rank}; {OOM_REMEDY}") \
                    from None
            self._free_memory()
            group.valid = False
            return self._skip("oom", batch, group)
        self._streaks["oom"] = 0
        if not math.isfinite(loss):
            return self._skip("nan", batch, group)
        self._streaks["nan"] = 0
        group.losses.append(loss)
        group.weighted.append(weighted)
        return None

    def _step(self, group: _Group, epoch_losses: list[float]) -> None:
        """End of an accumulation group: one optimizer step (skipped if the group has no usable
        gradient), then its metrics."""
        cfg = self.config
        p = self.progress
        if self.world is not None and group.losses and not group.synced:
            self.world.average_grads(self.adapted.adapter_parameters())
        metrics = self._optimizer_step(group.valid and bool(group.losses))
        p.step += 1
        self._stepped = True
        p.position = group.end
        if metrics is None:
            return
        loss = sum(group.losses) / len(group.losses)
        if self.world is not None:  # the loss shown is the mean over ranks
            loss = self.world.mean(loss)
        epoch_losses.append(loss)
        p.best_loss = min(p.best_loss, loss)
        done = p.step - self._loop_step0
        elapsed = time.monotonic() - self._loop_t0 - self._paused_s
        self.emit(StepMetrics(
            step=p.step, epoch=p.epoch + 1, loss=loss,
            lr=self.optimizer.param_groups[0]["lr"] if metrics.get("lr") is None
            else metrics["lr"], grad_norm=metrics.get("grad_norm"),
            samples_per_sec=p.samples * self.world_size / elapsed if elapsed > 0 else None,
            eta_seconds=(self.total_steps - p.step) * elapsed / max(done, 1),
            epoch_progress=p.position / self.batches_per_epoch,
            weighted_loss=(self._rank_mean(sum(group.weighted) / len(group.weighted))
                           if cfg.loss_weighting == "min_snr" else None),
            layer_grad_norms=metrics.get("layers")))

    def _rank_mean(self, value: float) -> float:
        return self.world.mean(value) if self.world is not None else value

    def _obey_control(self, group: _Group) -> bool:
        """Pause, save-now and stop, checked before every micro-batch; True means stop (the
        caller saves). Every save is of the group's start, see ``_save_from_snapshot``."""
        if self.world is not None:
            return self._obey_rank0(group)
        control = self.control
        if control.paused:
            # the typed event drives the UIs; the log line keeps the pause in the run's log
            self.emit(RunPaused(step=self.progress.step))
            self.emit(LogLine("paused"))
            # "save now" while paused saves at once, as it would at this micro-batch
            t0 = time.monotonic()
            control.wait_while_paused(on_save=lambda: self._save_from_snapshot(group))
            self._paused_s += time.monotonic() - t0
            if not control.stop_requested:
                self.emit(RunResumed(step=self.progress.step))
                self.emit(LogLine("resumed"))
        if control.stop_requested:
            log.info("%s: %s", control.stop_reason, self._stop_note())  # asked for: no warning
            return True
        if control.take_save_request():
            self._save_from_snapshot(group)
        return False

    def _nothing_trained(self) -> bool:
        p = self.progress
        return p.step == 0 and p.position == 0 and self.resumed_from is None

    def _stop_note(self) -> str:
        if self._nothing_trained():
            return "stopping before the first step (nothing trained, nothing to save)"
        return "stopping and saving a checkpoint"

    def _obey_rank0(self, group: _Group) -> bool:
        """``_obey_control`` for data-parallel ranks: rank 0 decides, every rank follows at the
        same micro-batch (a save is collective)."""
        from sidestep.engine.distributed import PAUSE, SAVE, STOP

        paused = False
        t0 = time.monotonic()
        while True:
            code = self.world.command(self.control, waiting=paused)
            if code == PAUSE and not paused:
                paused, t0 = True, time.monotonic()
                self.emit(RunPaused(step=self.progress.step))
                self.emit(LogLine("paused"))
            elif code == SAVE:
                self._save_from_snapshot(group)
            elif code != PAUSE:
                break
        if paused:
            self._paused_s += time.monotonic() - t0
        if paused and code != STOP:
            self.emit(RunResumed(step=self.progress.step))
            self.emit(LogLine("resumed"))
        if code == STOP:
            log.info("%s: %s", self.control.stop_reason or "stop requested", self._stop_note())
        return code == STOP

    def _skip(self, kind: str, batch: dict, group: _Group) -> RunFinished | None:
        """The failure policy: a micro-batch that ran out of memory (``oom``) or gave a
        non-finite loss (``nan``) is skipped; too many in a row and the run gives up, saving the
        group's start so a resume after the remedy redoes it. Returns the failed result then."""
        files = tuple(batch["files"])
        names = ", ".join(Path(f).name for f in files)
        self._streaks[kind] += 1
        streak = self._streaks[kind]
        if kind == "oom":
            self.emit(Problem(kind="oom", message=f"out of memory on batch {names}; batch "
                              "skipped", remedy=OOM_REMEDY, files=files))
            limit, msg, remedy = (MAX_OOM_STREAK, f"out of memory {streak} times in a row",
                                  OOM_REMEDY)
        else:
            self.emit(Problem(kind="nan", message=f"non-finite loss on {names}; micro-batch "
                              "skipped", files=files))
            limit, msg, remedy = (MAX_NAN_STREAK, f"{streak} non-finite losses in a row (last "
                                  f"batch: {names})", NAN_REMEDY)
        if streak < limit:
            return None
        self.emit(Problem(kind=kind, message=msg, remedy=remedy, fatal=True, files=files))
        path = self._save_from_snapshot(group)
        return self._finished("failed", error=f"{msg}; {remedy}", error_kind="runtime",
                              checkpoint=path)

    def _micro_step(self, batch: dict, group: _Group, index: int) -> tuple[float, float]:
        """Forward and backward one micro-batch; returns (mse, weighted loss)."""
        from contextlib import nullcontext

        from sidestep.data.tensors import random_window
        from sidestep.engine import objective

        cfg = self.config
        gens = None
        if self.world is not None:  # per-song draws: the same whichever rank takes the song
            gens = objective.sample_generators(cfg.seed, self.progress.epoch,
                                               self.batches.positions(self.progress.epoch)[index])
        if self.chunk_frames:
            batch = random_window(batch, self.chunk_frames, gens)
        mse, weighted = objective.batch_loss(
            self.module, self.adapted.null_condition_emb, batch, mode=cfg.mode,
            cfg_ratio=cfg.cfg_ratio, loss_weighting=cfg.loss_weighting,
            snr_gamma=cfg.snr_gamma, schedule=self.schedule, mu=self.timestep_mu,
            sigma=self.timestep_sigma, device=self.device,
            **({"generators": gens} if gens is not None else {}))
        value = float(mse.detach())
        finite = math.isfinite(value) and math.isfinite(float(weighted.detach()))
        if self.world is not None:
            finite = self.world.all_true(finite)  # one rank's NaN skips the batch on all
        if not finite:
            return float("nan"), float("nan")
        # Gradients are averaged across ranks only on the group's last micro-batch.
        last = index + 1 == group.end
        sync = self.fabric.no_backward_sync(self.module, enabled=not last) \
            if self.world is not None else nullcontext()
        with sync:
            # Scale so the group's gradient is the mean over its micro-batches.
            self.fabric.backward(weighted / group.size)
        group.synced = last
        return value, float(weighted.detach())

    def _optimizer_step(self, valid: bool) -> dict | None:
        cfg = self.config
        metrics: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"]}
        if not valid:
            self.optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.scheduler.step()
            return None
        params = self.adapted.adapter_parameters()
        heavy = cfg.log_heavy_every and (self.progress.step + 1) % cfg.log_heavy_every == 0
        if heavy:
            metrics["layers"] = self._layer_grad_norms()
        if cfg.max_grad_norm > 0:
            norm = self.fabric.clip_gradients(self.module, self.optimizer,
                                              max_norm=cfg.max_grad_norm,
                                              error_if_nonfinite=False)
        else:
            norm = torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g.grad.float()) for g in params
                 if g.grad is not None]))
        norm_value = float(norm) if norm is not None else None
        if norm_value is not None and not math.isfinite(norm_value) and self.precision != "fp16":
            self.optimizer.zero_grad(set_to_none=True)
            self.emit(Problem(kind="nan", message="non-finite gradient; optimizer step "
                                                  "skipped"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.scheduler.step()
            return None
        metrics["grad_norm"] = norm_value
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return metrics

    def _layer_grad_norms(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for name, param in self.adapted.named_parameters():
            if param.grad is None:
                continue
            m = re.search(r"layers[._](\d+)[._]", name)
            key = f"layer_{int(m.group(1)):02d}" if m else "other"
            sums[key] = sums.get(key, 0.0) + float(param.grad.float().pow(2).sum())
        return {k: math.sqrt(v) for k, v in sorted(sums.items())}

    def _free_memory(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- saving --------------------------------------------------------------------------------
    def _save_from_snapshot(self, group: _Group) -> Path:
        """Checkpoint at the start of the current accumulation group: ``progress.position``,
        the weights and the optimizer only move at the group's optimizer step, and the group's
        RNG snapshot makes the redo identical."""
        p = self.progress
        if self._last_save is not None and self._last_save[0] == (p.step, p.epoch, p.position):
            saved = self._last_save[1]
            # what a stop or "save now" waits for, saying that no new files were needed
            self.emit(dataclasses.replace(saved, again=True, time=time.time()))
            return Path(saved.path)
        return self._save(f"checkpoint-step-{p.step}", group.snapshot, "step")

    def _save(self, name: str, rng: dict, kind: str) -> Path:
        p = self.progress
        extra = {"ema": self.ema.state_dict() if self.ema is not None else None,
                 "best": self.tracker.state_dict() if self.tracker else None,
                 "epoch_losses": list(p.epoch_losses), "best_loss": p.best_loss}
        if self.world is not None:  # every rank's RNG, so each resumes its own draws
            extra.update(world_size=self.world.size, rng_ranks=self.world.gather(rng))
        path = self.run_dir / name
        if self._rank0:
            path = ckpt.save(self.run_dir, name, self.adapted, self.optimizer, self.scheduler,
                             step=p.step, epoch=p.epoch, position=p.position, rng=rng,
                             config=self.config.to_record(), extra=extra)
        self._barrier()  # no rank moves on (or reads it) before it is complete
        self._saved_any = True
        event = CheckpointSaved(path=str(path), step=p.step, epoch=p.epoch, kind=kind)
        self._last_save = ((p.step, p.epoch, p.position), event)
        self.emit(event)
        log.debug("saved %s", path)
        return path

    def _finished(self, status: str, *, adapter: str | None = None,
                  checkpoint: Path | None = None, error: str | None = None,
                  error_kind: str | None = None, reason: str | None = None) -> RunFinished:
        p = self.progress
        return RunFinished(status=status, step=p.step, epoch=p.epoch, adapter_path=adapter,
                           checkpoint_path=str(checkpoint) if checkpoint else None, error=error,
                           error_kind=error_kind,
                           best_loss=p.best_loss if math.isfinite(p.best_loss) else None,
                           seconds=time.monotonic() - self._started, reason=reason)

    # -- files and logging ---------------------------------------------------------------------
    def _write_run_json(self, status: str, result: RunFinished | None = None) -> None:
        if not self.write_files or self._claim is None:
            return  # the folder is not ours (a refused or failed start writes nothing)
        with self._run_lock:
            info = self._run_info
            if not info:
                info.update(started_at=now(), **process_identity())
            info.update({
                "status": status,
                "mode": self.config.mode,
                "config": self.config.to_record(),
                "versions": info.get("versions") or versions(),
                "device": self.device_name,
                "precision": self.precision,
                "world_size": self.world_size,
                # absolute, as the config's paths: export and check-adapter read it from anywhere
                "model_path": os.path.abspath(self.model_ref.path)
                if self.model_ref is not None else None,
                "resumed_from": self.config.to_record()["resume_from"],
                "heartbeat_at": now(),
            })
            if result is not None:
                info.update(finished_at=now(), adapter_path=result.adapter_path,
                            checkpoint_path=result.checkpoint_path, error=result.error,
                            best_loss=result.best_loss, last_step=result.step,
                            last_epoch=result.epoch, reason=result.reason)
            if self.best_path is not None:
                info.update(best_adapter=str(self.best_path),
                            best_epoch=self.tracker.best_epoch)
            self._store_run_info()

    def _store_run_info(self) -> None:
        try:
            write_run(self.run_dir, self._run_info)
        except OSError as exc:
            log.warning("cannot write run.json: %s", exc)

    def _attach_logging(self) -> None:
        if self._log_handlers:
            return
        handler = LogToEvents(self.bus, logging.INFO)
        root = logging.getLogger()
        root.addHandler(handler)
        self._log_handlers.append(handler)
        logging.captureWarnings(True)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            self._old_root_level = root.level
            root.setLevel(logging.INFO)
        if self.write_files:  # held until the run folder is claimed, then written to the log
            self._early_log = logging.handlers.MemoryHandler(capacity=100_000,
                                                             flushLevel=logging.CRITICAL + 1)
            self._early_log.setLevel(logging.DEBUG)
            root.addHandler(self._early_log)
            self._log_handlers.append(self._early_log)

    def _log_to_file(self) -> None:
        fh = logging.FileHandler(self.run_dir / LOG_FILE, encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(fh)
        self._log_handlers.append(fh)
        early = self._early_log
        if early is not None:
            root.removeHandler(early)
            self._log_handlers.remove(early)
            early.setTarget(fh)
            early.close()  # flushes the buffered records into the file

    def _detach_logging(self) -> None:
        root = logging.getLogger()
        for handler in self._log_handlers:
            root.removeHandler(handler)
            handler.close()
        self._log_handlers.clear()
        logging.captureWarnings(False)
        if self._old_root_level is not None:
            root.setLevel(self._old_root_level)
