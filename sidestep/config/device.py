"""Which device and precision a run uses.

``auto`` picks CUDA > MPS > XPU > CPU. bf16 is chosen only where the hardware really does it
(CUDA compute capability >= 8.0); older CUDA cards get fp16 with a note, MPS fp16, CPU fp32.
The hardware facts come from a ``DeviceInfo`` so the rules can be tested without a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class DeviceError(ValueError):
    pass


@dataclass(frozen=True)
class DeviceInfo:
    cuda_count: int = 0
    cuda_capability: tuple[tuple[int, int], ...] = ()  # per CUDA device
    cuda_names: tuple[str, ...] = ()
    mps: bool = False
    xpu_count: int = 0
    xpu_bf16: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)


def probe() -> DeviceInfo:
    """Read the real hardware through torch (imported here, not at module import)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    caps = tuple(torch.cuda.get_device_capability(i) for i in range(count))
    names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    xpu = getattr(torch, "xpu", None)
    xpu_count = xpu.device_count() if xpu is not None and xpu.is_available() else 0
    return DeviceInfo(cuda_count=count, cuda_capability=caps, cuda_names=names, mps=mps,
                      xpu_count=xpu_count)


_PATTERN = re.compile(r"^(auto|cpu|mps|cuda|xpu)(?::(\d+))?$")


def resolve_device(requested: str, info: DeviceInfo) -> str:
    req = (requested or "auto").strip().lower()
    m = _PATTERN.match(req)
    if not m or (m.group(2) is not None and m.group(1) not in ("cuda", "xpu")):
        raise DeviceError(f"--device {requested!r} is not a device; use auto, cpu, cuda, "
                          "cuda:N, mps, xpu or xpu:N")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        if info.cuda_count:
            return "cuda:0"
        if info.mps:
            return "mps"
        if info.xpu_count:
            return "xpu:0"
        return "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        if not info.mps:
            raise DeviceError("--device mps: Apple MPS is not available on this machine; "
                              "use --device auto or cpu")
        return "mps"
    count = info.cuda_count if kind == "cuda" else info.xpu_count
    idx = int(index) if index is not None else 0
    if count == 0:
        raise DeviceError(f"--device {req}: no {kind.upper()} device is available; use "
                          "--device auto or cpu")
    if idx >= count:
        raise DeviceError(f"--device {req}: only {count} {kind.upper()} device(s) "
                          f"(0..{count - 1})")
    return f"{kind}:{idx}"


def resolve_precision(requested: str, device: str, info: DeviceInfo) -> tuple[str, str | None]:
    """(precision, note). The note explains a fallback the user should know about."""
    req = (requested or "auto").strip().lower()
    if req not in ("auto", "bf16", "fp16", "fp32"):
        raise DeviceError(f"--precision {requested!r}: use auto, bf16, fp16 or fp32")
    kind = device.split(":")[0]
    idx = int(device.split(":")[1]) if ":" in device else 0

    bf16_ok = True
    if kind == "cuda":
        cap = info.cuda_capability[idx] if idx < len(info.cuda_capability) else (0, 0)
        bf16_ok = cap >= (8, 0)
    elif kind == "xpu":
        bf16_ok = info.xpu_bf16

    if req == "auto":
        if kind == "cpu":
            return "fp32", None
        if kind == "mps":
            return "fp16", None
        if bf16_ok:
            return "bf16", None
        cap = info.cuda_capability[idx] if kind == "cuda" and idx < len(info.cuda_capability) \
            else None
        why = f"compute capability {cap[0]}.{cap[1]}" if cap else "this device"
        return "fp16", f"bf16 needs compute capability 8.0 or newer ({why}); using fp16"
    if req == "bf16" and not bf16_ok:
        raise DeviceError(f"--precision bf16: {device} does not support bfloat16 (needs "
                          "compute capability 8.0+); use fp16 or auto")
    if req == "fp16" and kind == "cpu":
        raise DeviceError("--precision fp16: half precision training is not supported on the "
                          "CPU; use fp32 (or bf16)")
    return req, None
