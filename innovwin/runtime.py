"""Where a run computes: the one place a device name becomes a torch device."""
from __future__ import annotations

import re

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu`` or ``cuda[:i]``; anything else (torch knows many more
    device types, which would fail later, mid-run) and a CUDA device torch does not see are refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", name)
    if match is None:
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)
