"""GPU telemetry through NVML, with a fake NVML module: no GPU or driver needed."""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from sidestep.telemetry import nvml as tel
from sidestep.telemetry.nvml import GpuReading, GpuSampler, detect_vram, read_gpus

MIB = 1024 * 1024
GIB = 1024 * MIB


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Two devices with the pynvml API; `fail` names methods that raise FakeNVMLError."""

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail=(), init_fails=False):
        self.fail = set(fail)
        self.init_fails = init_fails
        self.init_calls = 0
        self.devices = [
            dict(name=b"NVIDIA H200", util=37, used=12 * GIB, total=140 * GIB, temp=45,
                 power=210_500, limit=700_000,
                 compute=[(os.getpid(), 10 * GIB), (4242, 2 * GIB)],
                 graphics=[(4242, 2 * GIB), (5151, 512 * MIB)]),
            dict(name="NVIDIA L4", util=0, used=0, total=24 * GIB, temp=30,
                 power=16_000, limit=72_000, compute=[], graphics=[]),
        ]

    def _check(self, what):
        if what in self.fail:
            raise FakeNVMLError(what)

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_fails:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self):
        self._check("count")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        self._check("handle")
        return self.devices[i]

    def nvmlDeviceGetName(self, h):
        self._check("name")
        return h["name"]

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("util")
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check("mem")
        return SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"])

    def nvmlDeviceGetTemperature(self, h, sensor):
        self._check("temp")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return h["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("power")
        return h["power"]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        self._check("limit")
        return h["limit"]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self._check("compute")
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in h["compute"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        self._check("graphics")
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in h["graphics"]]


@pytest.fixture(autouse=True)
def _fresh_init():
    tel._forget_init()
    yield
    tel._forget_init()


def test_reads_two_devices_with_unit_conversions():
    fake = FakeNvml()
    a, b = read_gpus(fake)
    assert (a.index, a.name, b.index, b.name) == (0, "NVIDIA H200", 1, "NVIDIA L4")
    assert a.util_percent == 37.0
    assert a.mem_used_mib == 12 * 1024 and a.mem_total_mib == 140 * 1024
    assert a.mem_free_mib == 128 * 1024
    assert a.temperature_c == 45.0
    assert a.power_w == pytest.approx(210.5) and a.power_limit_w == 700.0
    # Our own 10 GiB excluded; pid 4242 counted once although it is in both lists.
    assert a.other_processes_mib == 2 * 1024 + 512
    # Real zeros stay zeros.
    assert b.util_percent == 0.0 and b.mem_used_mib == 0.0 and b.other_processes_mib == 0.0


def test_init_once_per_module():
    fake = FakeNvml()
    read_gpus(fake)
    read_gpus(fake)
    assert fake.init_calls == 1


def test_one_failing_call_blanks_only_that_field():
    (a, _b) = read_gpus(FakeNvml(fail={"temp"}))
    assert a.temperature_c is None
    assert a.name == "NVIDIA H200" and a.util_percent == 37.0 and a.power_w is not None
    assert a.mem_total_mib == 140 * 1024


def test_process_lists():
    # One list failing still gives the other's answer.
    (a, _b) = read_gpus(FakeNvml(fail={"graphics"}))
    assert a.other_processes_mib == 2 * 1024
    tel._forget_init()
    (a, _b) = read_gpus(FakeNvml(fail={"compute", "graphics"}))
    assert a.other_processes_mib is None
    tel._forget_init()
    fake = FakeNvml()
    fake.devices[0]["compute"] = [(4242, None)]  # usage hidden, as under Windows WDDM
    (a, _b) = read_gpus(fake)
    assert a.other_processes_mib is None


def test_handle_failure_keeps_index_with_all_fields_missing():
    readings = read_gpus(FakeNvml(fail={"handle"}))
    assert [r.index for r in readings] == [0, 1]
    assert readings[0] == GpuReading(index=0, name=None)


def _stub_torch(monkeypatch, **cuda):
    """A stand-in `torch` with just `torch.cuda`: importing the real one takes seconds."""
    fake = SimpleNamespace(cuda=SimpleNamespace(**cuda))
    monkeypatch.setitem(sys.modules, "torch", fake)
    return fake


def test_init_failure_means_no_gpu(monkeypatch):
    _stub_torch(monkeypatch, is_available=lambda: False)
    assert read_gpus(FakeNvml(init_fails=True)) == []
    assert detect_vram(FakeNvml(init_fails=True)) == []


def test_count_failure_means_no_gpu_and_reinit():
    fake = FakeNvml(fail={"count"})
    assert read_gpus(fake) == []
    fake.fail.clear()
    assert len(read_gpus(fake)) == 2
    assert fake.init_calls == 2


def test_detect_vram_from_nvml():
    rows = detect_vram(FakeNvml())
    assert rows[0] == {
        "index": 0,
        "name": "NVIDIA H200",
        "total_mib": 140 * 1024,
        "free_mib": 128 * 1024,
        "other_processes_mib": 2 * 1024 + 512,
    }
    assert len(rows) == 2


def test_detect_vram_torch_fallback(monkeypatch):
    _stub_torch(
        monkeypatch,
        is_available=lambda: True,
        device_count=lambda: 1,
        mem_get_info=lambda i: (6 * GIB, 8 * GIB),
        get_device_properties=lambda i: SimpleNamespace(name="Fake GPU", total_memory=8 * GIB),
    )
    rows = detect_vram(FakeNvml(init_fails=True))
    assert rows == [{"index": 0, "name": "Fake GPU", "total_mib": 8192.0,
                     "free_mib": 6144.0, "other_processes_mib": None}]


def test_real_pynvml_without_driver_returns_empty():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVIDIA driver")
    assert read_gpus() == []
    assert read_gpus(pynvml) == []


def test_missing_pynvml_returns_empty(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert read_gpus() == []


def test_module_import_is_light():
    import subprocess

    code = (
        "import sys, sidestep.telemetry.nvml; "
        "bad = [m for m in ('torch', 'textual', 'rich', 'pynvml') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_summary_full():
    (a, _b) = read_gpus(FakeNvml())
    assert a.summary() == "GPU0 NVIDIA H200 · 37% · 12.0/140.0 GiB · 45°C · 210/700 W"


def test_summary_missing_fields_show_na_not_zero():
    s = GpuReading(index=1, name=None).summary()
    assert s == "GPU1 · util N/A · mem N/A · temp N/A · power N/A"
    assert "0" not in s.replace("GPU1", "")
    partial = GpuReading(index=0, name="X", mem_total_mib=2048.0, power_limit_w=300.0)
    assert "N/A/2.0 GiB" in partial.summary() and "N/A/300 W" in partial.summary()


def _wait_for(cond, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_sampler_collects_and_stops():
    reading = GpuReading(index=0, name="fake", util_percent=5.0)
    sampler = GpuSampler(period=0.01, reader=lambda: [reading])
    assert sampler.latest() == (None, [])
    sampler.start()
    try:
        assert _wait_for(lambda: sampler.latest()[1] == [reading])
        assert sampler.latest()[0] is not None
    finally:
        sampler.stop()
    assert not sampler.running


def test_sampler_survives_reader_errors():
    calls = []

    def reader():
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("transient")
        return [GpuReading(index=0, name=f"call{len(calls)}")]

    with GpuSampler(period=0.01, reader=reader) as sampler:
        assert _wait_for(lambda: len(calls) >= 5)
        assert sampler.running
        _, readings = sampler.latest()
        assert readings and readings[0].name.startswith("call")


def test_sampler_backs_off_without_devices():
    calls = []
    seen = threading.Event()

    def reader():
        calls.append(1)
        seen.set()
        return []

    sampler = GpuSampler(period=0.01, reader=reader, idle_period=30.0).start()
    try:
        assert seen.wait(3.0)
        time.sleep(0.2)  # would be ~20 samples at the busy period
        assert len(calls) == 1
        assert sampler.latest()[1] == []
    finally:
        t0 = time.monotonic()
        sampler.stop()
        assert time.monotonic() - t0 < 2.0  # stop() doesn't wait out the idle period
