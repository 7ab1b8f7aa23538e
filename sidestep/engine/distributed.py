"""Data-parallel training on several devices with Lightning Fabric's DDP strategy.

The CLI and the TUI run the ``Trainer`` in their own process, and a TUI's process cannot become
N ranks. So a trainer asked for more than one device (or ``--strategy ddp``) launches its ranks
as child processes with Fabric's spawn launcher (``launch``): each child builds its own
``Trainer`` from the config and runs it as a rank (``_rank_main``). Rank 0 alone writes the run
folder, as a one-device run would, and sends its events back through a queue, so the caller's
sinks (the TUI's queue, the console, --notify-command) see one run. Commands from the caller's
``Control`` (stop, pause, resume, save now) go to rank 0, which decides for every rank: each
micro-batch the ranks take rank 0's word through ``World.command``.

Under ``torchrun`` (several boxes) the processes already exist: each one runs the CLI, and the
trainer joins the process group itself (``under_torchrun``) instead of launching.

Failure: a rank that fails exits with an error, torch's launcher ends the others and the caller
gets a failed result naming it; the process group has a timeout, so nothing waits forever.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GO, SAVE, PAUSE, STOP = 0, 1, 2, 3
PG_TIMEOUT = datetime.timedelta(minutes=10)  # a collective no peer joins fails after this
PAUSE_TICK = 1.0  # a paused rank 0 tells its peers every second, far below the timeout


RANK_OUTPUT_ENV = "SIDESTEP_RANK_OUTPUT"


def _rank_output_to_file() -> None:
    """In a launched rank, before Fabric sets up the group (this module is imported while the
    child unpickles its work): stdout and stderr go to a file, never to the terminal that the
    TUI or the console's progress display owns."""
    launcher, _, path = os.environ.get(RANK_OUTPUT_ENV, "").partition(":")
    if path and launcher != str(os.getpid()):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


_rank_output_to_file()


class DistributedError(ValueError):
    """A --devices/--num-nodes/--strategy problem found at start (exit code 2)."""


@dataclass(frozen=True)
class WorldPlan:
    kind: str      # accelerator: cpu, cuda or xpu
    devices: int   # per node
    num_nodes: int

    @property
    def size(self) -> int:
        return self.devices * self.num_nodes


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or \
        ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def torchrun_rank() -> int | None:
    """This process's global rank when torchrun started it, else None."""
    if not under_torchrun():
        return None
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return None


def plan(config, device_name: str, info) -> WorldPlan | None:
    """The data-parallel layout, or None for today's single-device run."""
    kind = device_name.split(":")[0]
    raw = str(config.devices)
    if raw == "auto":
        devices = {"cuda": info.cuda_count, "xpu": info.xpu_count}.get(kind, 1)
    else:
        devices = int(raw)
    if devices == 1 and config.num_nodes == 1 and config.strategy != "ddp":
        return None
    if kind == "mps":
        raise DistributedError("--devices: Apple MPS cannot run data parallel; use --devices 1")
    available = {"cuda": info.cuda_count, "xpu": info.xpu_count}.get(kind)
    if available is not None and devices > available:
        raise DistributedError(f"--devices {raw}: this machine has {available} "
                               f"{kind.upper()} device(s); use --devices {available} or auto")
    if kind == "cpu":
        # Each CPU rank is a whole process with its own copy of the model: more ranks than
        # usable cores only thrash (a typo like --devices 64 would fill the memory).
        from sidestep.cpu_threads import usable_cores

        cores = usable_cores()
        if devices > cores:
            raise DistributedError(f"--devices {raw}: on the CPU each device is a process; "
                                   f"this machine lets the run use {cores} cores, so use "
                                   f"--devices {cores} or fewer")
    if config.num_nodes > 1 and not under_torchrun():
        raise DistributedError(f"--num-nodes {config.num_nodes}: start the run with torchrun "
                               "on every machine (see the README), or use --num-nodes 1")
    return WorldPlan(kind=kind, devices=devices, num_nodes=config.num_nodes)


def make_fabric(world: WorldPlan, precision: str):
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    start = {} if under_torchrun() else {"start_method": "spawn"}
    return Fabric(accelerator=world.kind, devices=world.devices, num_nodes=world.num_nodes,
                  strategy=DDPStrategy(timeout=PG_TIMEOUT, **start), precision=precision)


class World:
    """One rank's view of the others: the collectives the training loop needs."""

    def __init__(self, fabric):
        self.fabric = fabric
        self.rank = fabric.global_rank
        self.size = fabric.world_size
        self.device = fabric.device

    def _dist(self):
        import torch.distributed as dist

        return dist

    def command(self, control, waiting: bool) -> int:
        """Rank 0's decision for this micro-batch (GO, SAVE, PAUSE or STOP), for every rank.
        While paused (``waiting``) rank 0 sleeps up to ``PAUSE_TICK`` before deciding again."""
        code = GO
        if self.rank == 0:
            if waiting and control.paused and not control.stop_requested:
                control.wait_for_command(PAUSE_TICK)
            if control.stop_requested:
                code = STOP
            elif control.take_save_request():
                code = SAVE
            elif control.paused:
                code = PAUSE
        box = torch.tensor([code], dtype=torch.int64, device=self.device)
        self._dist().broadcast(box, src=0)
        return int(box.item())

    def all_true(self, flag: bool) -> bool:
        box = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        self._dist().all_reduce(box, op=self._dist().ReduceOp.MIN)
        return bool(box.item())

    def mean(self, value: float) -> float:
        box = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._dist().all_reduce(box)
        return float(box.item()) / self.size

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self._dist().all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._dist().barrier()

    def average_grads(self, params) -> None:
        """The group's gradient sync when its last backward was skipped (non-finite loss)."""
        for p in params:
            if p.grad is not None:
                self._dist().all_reduce(p.grad)
                p.grad.div_(self.size)


# -- the launching side ------------------------------------------------------------------------
class QueueSink:
    """Rank 0's events, to the launching process."""

    def __init__(self, queue):
        self.queue = queue

    def handle(self, event) -> None:
        self.queue.put(event)

    def close(self) -> None:
        pass


def launch(trainer, world: WorldPlan, precision: str):
    """Run ``world.size`` ranks as child processes. Their events reach ``trainer``'s sinks,
    its ``Control`` reaches rank 0. Returns the run's ``RunFinished``, for the caller to emit:
    rank 0's, or when another rank failed or rank 0 was killed, one naming that cause."""
    import multiprocessing

    import torch.multiprocessing as mp

    from sidestep.engine.events import LogLine, RunFinished, RunStarted, StepMetrics

    _start_resource_tracker()
    ctx = mp.get_context("spawn")
    events, commands = ctx.Queue(), ctx.Queue()
    relayed: list[RunFinished] = []
    started: list[RunStarted] = []
    reached = [0, 0]  # the last step and epoch rank 0 reported
    done = threading.Event()

    def relay() -> None:
        while True:
            event = events.get()
            if event is None:
                return
            if isinstance(event, RunStarted):
                started.append(event)
            elif isinstance(event, StepMetrics):
                reached[:] = [event.step, event.epoch]
            if isinstance(event, RunFinished):  # held back: ``launch`` decides the outcome
                relayed.append(event)
                if event.status == "failed":  # rank 0 gave up: peers must not wait on it
                    threading.Timer(30.0, _end_children, (before,)).start()
                continue
            trainer.emit(event)

    def forward() -> None:
        control, sent_stop, paused = trainer.control, False, False
        while not done.is_set():
            control.wait_for_command(0.2)
            if control.stop_requested and not sent_stop:
                commands.put(("stop", control.stop_reason))
                sent_stop = True
            if control.take_save_request():
                commands.put(("save", ""))
            if control.paused != paused:
                paused = control.paused
                commands.put(("pause" if paused else "resume", ""))

    before = {p.pid for p in multiprocessing.active_children()}
    import tempfile

    output = os.path.join(tempfile.gettempdir(), f"sidestep-ranks-{os.getpid()}.log")
    trainer.emit(LogLine(f"the training processes' own output goes to {output}"))
    os.environ[RANK_OUTPUT_ENV] = f"{os.getpid()}:{output}"
    fabric = make_fabric(world, precision)
    threads = [threading.Thread(target=relay, name="sidestep-ranks-events", daemon=True),
               threading.Thread(target=forward, name="sidestep-ranks-control", daemon=True)]
    for t in threads:
        t.start()
    failure: tuple[int | None, str] | None = None
    result = None
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    spawn_level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)  # its "Terminating process" lines: ours says it better
    try:
        # Plain dicts cross the process boundary: Fabric's launcher maps over its arguments
        # and result, and refuses frozen dataclasses.
        result = fabric.launch(_rank_main, trainer.config.to_dict(), events, commands,
                               trainer.write_files)
    except Exception as exc:  # a rank raised or was killed; torch ended the others
        failure = _rank_failure(exc, world.size)
    finally:
        spawn_log.setLevel(spawn_level)
        os.environ.pop(RANK_OUTPUT_ENV, None)
        done.set()
        events.put(None)
        threads[0].join()
    last = relayed[-1] if relayed else None
    if failure is None and isinstance(result, dict):
        return RunFinished(**result)
    if last is not None and last.status == "failed" and (failure is None or failure[0] == 0):
        return last  # rank 0 failed and said why
    # Another rank failed (rank 0 then only saw a broken connection), or rank 0 was killed:
    # name the cause, say where to resume, and record it in the run folder ourselves.
    run_dir = Path(started[0].run_dir) if started else None
    saved = _newest_checkpoint(run_dir)
    cause = failure[1] if failure else "a training process ended without a result"
    hint = (f"resume from its last checkpoint, {saved}" if saved
            else "no checkpoint had been saved yet")
    finished = RunFinished(status="failed", step=last.step if last else reached[0],
                           epoch=last.epoch if last else reached[1], checkpoint_path=saved,
                           error=f"{cause} (the processes' output: {output}); the other "
                                 f"processes were stopped; {hint}",
                           error_kind="runtime")
    if run_dir is not None and run_dir.is_dir():
        _record_failure(run_dir, finished, append_event=last is None)
    return finished


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker (started by the first queue or process) keeps
    ``sys.stderr``'s fd open in its own process; inside the app, Textual's stderr capture
    answers -1, which the spawn refuses ("bad value(s) in fds_to_keep"). So start it first
    with a real file there: devnull, so a line another thread writes meanwhile is dropped
    rather than drawn over the app."""
    from multiprocessing import resource_tracker

    stderr = sys.stderr
    try:
        if stderr is None or stderr.fileno() >= 0:
            return  # a real stream (or none): the tracker starts as usual
    except (AttributeError, OSError, ValueError):
        return  # no fileno at all: multiprocessing skips it by itself
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = stderr


def _rank_failure(exc: BaseException, size: int) -> tuple[int | None, str]:
    """(the failed rank or None, a sentence) from the exception torch's launcher raised."""
    index = getattr(exc, "error_index", None)
    who = f"training process {index} of {size}" if index is not None else "a training process"
    signal_name = getattr(exc, "signal_name", None)
    if signal_name:
        text = f"{who} was killed ({signal_name})"
        if signal_name == "SIGKILL":
            text += ", on Linux often by the out-of-memory killer (see dmesg)"
        return index, text
    if getattr(exc, "exit_code", None) is not None:
        return index, f"{who} exited with code {exc.exit_code}"
    line = re.sub(r"^RuntimeError: rank \d+: ", "", _last_line(str(exc)))
    return index, f"{who} failed: {line or type(exc).__name__}"


def _newest_checkpoint(run_dir: Path | None) -> str | None:
    from sidestep.engine.checkpointing import list_checkpoints

    if run_dir is None or not run_dir.is_dir():
        return None
    saved = list_checkpoints(run_dir)
    return str(saved[-1]) if saved else None


def _record_failure(run_dir: Path, finished, append_event: bool) -> None:
    """run.json (and events.jsonl, unless rank 0 wrote its own end) say the run failed:
    rank 0, killed or ended by the launcher, could not."""
    from sidestep.engine.run_dir import EVENTS_FILE, now, read_run, write_run
    from sidestep.engine.sinks import JsonlSink

    try:
        if append_event:
            sink = JsonlSink(run_dir / EVENTS_FILE)
            sink.handle(finished)
            sink.close()
        info = read_run(run_dir)
        if info is not None:
            info.update(status="failed", finished_at=now(), error=finished.error,
                        checkpoint_path=finished.checkpoint_path, last_step=finished.step,
                        last_epoch=finished.epoch)
            write_run(run_dir, info)
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot record the failure in %s: %s", run_dir, exc)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _end_children(before: set[int]) -> None:
    import multiprocessing

    for p in multiprocessing.active_children():
        if p.pid not in before:
            p.terminate()


def _rank_main(fabric, config_data: dict, events, commands, write_files: bool) -> dict:
    """One rank, in its own process; returns its ``RunFinished`` as a dict."""
    import dataclasses

    from sidestep.config.resolve import training_config_from_dict
    from sidestep.engine.control import Control
    from sidestep.engine.trainer import Trainer

    # The terminal's ctrl+c and hang-up reach every process: the launcher decides for all.
    for name in ("SIGINT", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    config = training_config_from_dict(config_data)
    control = Control()
    rank0 = fabric.global_rank == 0
    if rank0:
        threading.Thread(target=_listen, args=(commands, control, os.getppid()),
                         name="sidestep-rank-control", daemon=True).start()
    trainer = Trainer(config, [QueueSink(events)] if rank0 else [], control,
                      write_files=write_files and rank0, fabric=fabric)
    try:
        result = trainer.run()
    finally:
        _leave_group()
    if result.status == "failed" and not rank0:
        raise RuntimeError(f"rank {fabric.global_rank}: {result.error}")
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _leave_group() -> None:
    """Take the process group down before the interpreter does: gloo's destructor at exit,
    with a peer already gone, can abort the process (SIGABRT) after the run has finished."""
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a group already broken by a failed peer: nothing to end
        pass


def _listen(commands, control, parent: int) -> None:
    """Rank 0: the launcher's commands; a launcher that died means stop and save."""
    import queue

    while True:
        try:
            what, reason = commands.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                control.request_stop("the launching process ended")
                return
            continue
        if what == "stop":
            control.request_stop(reason or "stop requested")
        elif what == "save":
            control.save_now()
        elif what == "pause":
            control.pause()
        elif what == "resume":
            control.resume()
