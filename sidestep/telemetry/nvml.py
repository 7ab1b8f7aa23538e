"""GPU readings through NVML (the `pynvml` module of the `nvidia-ml-py` package).

A machine without an NVIDIA driver is a normal case here, not an error: every entry point
returns an empty list instead of raising. `pynvml` (and torch, for the VRAM fallback) are
imported inside functions so that importing this module costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

_MIB = 1024.0 * 1024.0
_GIB_PER_MIB = 1.0 / 1024.0

# Idle sampling period when NVML reports no devices: a CPU-only machine should cost nothing.
IDLE_PERIOD_S = 30.0


class NvmlUnavailable(Exception):
    """NVML cannot be used here (library missing, no driver, or nvmlInit failed)."""


@dataclass(frozen=True)
class GpuReading:
    """One snapshot of one GPU. A field that could not be read is None, never 0, so that the
    UI can tell "not available" from a real zero."""

    index: int
    name: str | None
    util_percent: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    mem_free_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    other_processes_mib: float | None = None

    def summary(self) -> str:
        """One line, e.g. "GPU0 NVIDIA H200 · 37% · 12.3/139.8 GiB · 45°C · 210/700 W"."""
        head = f"GPU{self.index} {self.name}" if self.name else f"GPU{self.index}"
        util = "util N/A" if self.util_percent is None else f"{self.util_percent:.0f}%"
        mem = _pair(
            None if self.mem_used_mib is None else self.mem_used_mib * _GIB_PER_MIB,
            None if self.mem_total_mib is None else self.mem_total_mib * _GIB_PER_MIB,
            "{:.1f}", "GiB", "mem",
        )
        temp = "temp N/A" if self.temperature_c is None else f"{self.temperature_c:.0f}°C"
        power = _pair(self.power_w, self.power_limit_w, "{:.0f}", "W", "power")
        return " · ".join((head, util, mem, temp, power))


def _pair(value: float | None, limit: float | None, fmt: str, unit: str, label: str) -> str:
    if value is None and limit is None:
        return f"{label} N/A"
    a = "N/A" if value is None else fmt.format(value)
    b = "N/A" if limit is None else fmt.format(limit)
    return f"{a}/{b} {unit}"


# --- NVML initialisation ----------------------------------------------------------------------

_init_lock = threading.Lock()
# The module object nvmlInit succeeded on. Keyed by object (not a bool) so that tests injecting
# a fake module get their own init, while the real pynvml is initialised once per process.
_initialised: Any = None


def _default_nvml() -> Any:
    try:
        import pynvml  # noqa: PLC0415 - lazy on purpose
    except Exception as exc:  # ImportError, or a broken install
        raise NvmlUnavailable(f"pynvml not importable: {exc}") from exc
    return pynvml


def _ensure_init(nvml: Any) -> None:
    global _initialised
    with _init_lock:
        if _initialised is nvml:
            return
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...
            # Not remembered as a failure: a retry is cheap and the sampler backs off anyway.
            raise NvmlUnavailable(f"nvmlInit failed: {exc}") from exc
        _initialised = nvml


def _forget_init() -> None:
    """Make the next read call nvmlInit again (tests; or after nvmlShutdown elsewhere)."""
    global _initialised
    with _init_lock:
        _initialised = None


# --- Reading ----------------------------------------------------------------------------------


def _safe(what: str, fn: Callable[[], Any]) -> Any:
    # Any failure (NVMLError_NotSupported on consumer cards, a function missing from an older
    # binding, a lost GPU) blanks just this field; a monitor must never lose the whole reading.
    try:
        return fn()
    except Exception as exc:
        log.debug("NVML %s unavailable: %s", what, exc)
        return None


def _decode(name: Any) -> str | None:
    if name is None:
        return None
    if isinstance(name, bytes):
        return name.decode("utf-8", errors="replace")
    return str(name)


def _other_processes_mib(nvml: Any, handle: Any) -> float | None:
    """Memory held by processes other than this one, or None when NVML can't tell.

    NVML reports host PIDs: inside a container without the host PID namespace our own
    process won't match os.getpid() and is counted as "other"."""
    own = os.getpid()
    per_pid: dict[int, int | None] = {}
    answered = False
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nvml, getter, None)
        if fn is None:
            continue
        procs = _safe(getter, lambda fn=fn: fn(handle))
        if procs is None:
            continue
        answered = True
        for p in procs:
            pid = getattr(p, "pid", None)
            if pid is None or pid == own:
                continue
            used = getattr(p, "usedGpuMemory", None)
            # A process can be in both lists; its usage is the same figure, so keep one.
            prev = per_pid.get(pid, 0)
            per_pid[pid] = None if (used is None or prev is None) else max(prev, int(used))
    if not answered:
        return None
    if any(v is None for v in per_pid.values()):
        # Usage hidden (e.g. Windows WDDM): a partial sum would understate it.
        return None
    return sum(per_pid.values()) / _MIB  # type: ignore[arg-type]


def _read_device(nvml: Any, index: int) -> GpuReading:
    handle = _safe("handle", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
    if handle is None:
        return GpuReading(index=index, name=None)
    name = _decode(_safe("name", lambda: nvml.nvmlDeviceGetName(handle)))
    util = _safe("utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    mem = _safe("memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    temp = _safe("temperature", lambda: nvml.nvmlDeviceGetTemperature(handle, sensor))
    power_mw = _safe("power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit_mw = _safe("power limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))

    def mem_field(attr: str) -> float | None:
        value = getattr(mem, attr, None) if mem is not None else None
        return None if value is None else value / _MIB

    return GpuReading(
        index=index,
        name=name,
        util_percent=None if util is None else _num(getattr(util, "gpu", None)),
        mem_used_mib=mem_field("used"),
        mem_total_mib=mem_field("total"),
        mem_free_mib=mem_field("free"),
        temperature_c=_num(temp),
        power_w=None if power_mw is None else power_mw / 1000.0,
        power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
        other_processes_mib=_other_processes_mib(nvml, handle),
    )


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def read_gpus(nvml: Any = None) -> list[GpuReading]:
    """Read every GPU NVML can see; [] when there is no NVML, no driver or no device.

    Indices are NVML's (physical order, ignoring CUDA_VISIBLE_DEVICES). `nvml` is a
    module-like object with the pynvml API; tests inject a fake, default is `pynvml`."""
    try:
        if nvml is None:
            nvml = _default_nvml()
        _ensure_init(nvml)
    except NvmlUnavailable as exc:
        log.debug("%s", exc)
        return []
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        # Possibly NVML was shut down by other code: init again on the next call.
        log.debug("NVML device count unavailable: %s", exc)
        _forget_init()
        return []
    return [_read_device(nvml, i) for i in range(count)]


def detect_vram(nvml: Any = None) -> list[dict]:
    """Per GPU: {"index", "name", "total_mib", "free_mib", "other_processes_mib"}.

    NVML first; failing that, torch (which creates a CUDA context, hence only as a fallback;
    its indices follow CUDA_VISIBLE_DEVICES). [] when neither finds a GPU."""
    readings = read_gpus(nvml)
    if readings:
        return [
            {
                "index": r.index,
                "name": r.name,
                "total_mib": r.mem_total_mib,
                "free_mib": r.mem_free_mib,
                "other_processes_mib": r.other_processes_mib,
            }
            for r in readings
        ]
    return _detect_vram_torch()


def _detect_vram_torch() -> list[dict]:
    try:
        import torch  # noqa: PLC0415 - lazy on purpose: heavy, and optional here

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free_b, _total_b = torch.cuda.mem_get_info(i)
            out.append(
                {
                    "index": i,
                    "name": getattr(props, "name", None),
                    "total_mib": props.total_memory / _MIB,
                    "free_mib": free_b / _MIB,
                    "other_processes_mib": None,
                }
            )
        return out
    except Exception as exc:
        log.debug("torch VRAM detection failed: %s", exc)
        return []


# --- Background sampling ----------------------------------------------------------------------


class GpuSampler:
    """Samples `reader()` on a daemon thread; `latest()` is safe from any thread.

    Timestamps are time.monotonic(), meant for staleness checks. When the reader returns no
    devices, sampling slows to once every `idle_period` seconds."""

    def __init__(
        self,
        period: float = 1.0,
        reader: Callable[[], list[GpuReading]] | None = None,
        idle_period: float = IDLE_PERIOD_S,
    ) -> None:
        self.period = float(period)
        self.idle_period = max(float(idle_period), self.period)
        self._reader = reader if reader is not None else read_gpus
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stamp: float | None = None
        self._readings: list[GpuReading] = []

    def start(self) -> "GpuSampler":
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def latest(self) -> tuple[float | None, list[GpuReading]]:
        """(timestamp, readings) of the last successful sample; (None, []) before the first."""
        with self._lock:
            return self._stamp, list(self._readings)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.period
            try:
                readings = list(self._reader())
            except Exception:
                # Keep the previous readings and retry at the normal pace: a transient
                # failure must not stop telemetry for the rest of the run.
                log.debug("GPU sampling failed", exc_info=True)
            else:
                with self._lock:
                    self._stamp = time.monotonic()
                    self._readings = readings
                if not readings:
                    wait = self.idle_period
            self._stop.wait(wait)

    def __enter__(self) -> "GpuSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
