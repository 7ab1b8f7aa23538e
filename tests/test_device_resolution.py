from __future__ import annotations

import pytest

from sidestep.config.device import DeviceError, DeviceInfo, probe, resolve_device, \
    resolve_precision

AMPERE = DeviceInfo(cuda_count=2, cuda_capability=((8, 0), (7, 5)))
MAC = DeviceInfo(mps=True)
INTEL = DeviceInfo(xpu_count=1)
CPU = DeviceInfo()


@pytest.mark.parametrize("info,expected", [
    (AMPERE, "cuda:0"), (DeviceInfo(cuda_count=1, cuda_capability=((9, 0),), mps=True),
                         "cuda:0"),
    (MAC, "mps"), (DeviceInfo(mps=True, xpu_count=1), "mps"), (INTEL, "xpu:0"), (CPU, "cpu"),
])
def test_auto_priority(info, expected):
    assert resolve_device("auto", info) == expected


def test_explicit_devices_validated():
    assert resolve_device("cuda:1", AMPERE) == "cuda:1"
    assert resolve_device("cuda", AMPERE) == "cuda:0"
    assert resolve_device("cpu", AMPERE) == "cpu"
    for bad, info, needle in [("cuda:2", AMPERE, "only 2"), ("cuda", CPU, "no CUDA"),
                              ("mps", CPU, "not available"), ("gpu", CPU, "not a device"),
                              ("cpu:1", CPU, "not a device"), ("xpu", CPU, "no XPU")]:
        with pytest.raises(DeviceError, match=needle):
            resolve_device(bad, info)


def test_precision_auto():
    assert resolve_precision("auto", "cuda:0", AMPERE) == ("bf16", None)
    prec, note = resolve_precision("auto", "cuda:1", AMPERE)
    assert prec == "fp16" and "7.5" in note
    assert resolve_precision("auto", "mps", MAC) == ("fp16", None)
    assert resolve_precision("auto", "cpu", CPU) == ("fp32", None)
    assert resolve_precision("auto", "xpu:0", INTEL) == ("bf16", None)


def test_precision_explicit_validated():
    assert resolve_precision("fp32", "cuda:0", AMPERE) == ("fp32", None)
    assert resolve_precision("fp16", "cuda:1", AMPERE) == ("fp16", None)
    with pytest.raises(DeviceError, match="bfloat16"):
        resolve_precision("bf16", "cuda:1", AMPERE)
    with pytest.raises(DeviceError, match="CPU"):
        resolve_precision("fp16", "cpu", CPU)
    with pytest.raises(DeviceError):
        resolve_precision("fp8", "cpu", CPU)


def test_real_probe_runs_here():
    info = probe()
    device = resolve_device("auto", info)
    prec, _ = resolve_precision("auto", device, info)
    if info.cuda_count == 0 and not info.mps and not info.xpu_count:
        assert (device, prec) == ("cpu", "fp32")
