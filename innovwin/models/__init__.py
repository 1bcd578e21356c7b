"""The two model families, a small registry of sizes, and ``build`` (the one constructor configs go through)."""
from __future__ import annotations

import difflib
import inspect

from innovwin.models.dit import DiT
from innovwin.models.gpt import GPT

ARCHS = {"dit": DiT, "gpt": GPT}

# head_dim 32 or 64 everywhere, the sizes the fused attention kernel takes.
SIZES = {
    "XS": dict(depth=2, width=64, heads=2),
    "S": dict(depth=4, width=128, heads=4),
    "M": dict(depth=6, width=256, heads=8),
    "L": dict(depth=8, width=512, heads=8),
}


def _nearest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build(task, arch: str, size: str | None = None, **kwargs):
    """A model for ``task``: ``arch`` is "dit" or "gpt"; ``size`` names a preset in SIZES that ``kwargs`` override.

    ``build(task, m.arch, **m.size_config())`` rebuilds the architecture of model ``m``.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}{_nearest(str(arch), ARCHS)}; choose from {sorted(ARCHS)}")
    if size is not None and size not in SIZES:
        raise ValueError(f"unknown model size {size!r}{_nearest(str(size), SIZES)}; choose from {list(SIZES)}")
    cls = ARCHS[arch]
    valid = [p for p in inspect.signature(cls).parameters if p != "task"]
    for key in kwargs:
        if key not in valid:
            raise ValueError(f"unknown {arch} parameter {key!r}{_nearest(key, valid)}; valid: {valid}")
    return cls(task, **{**SIZES.get(size, {}), **kwargs})


__all__ = ["ARCHS", "SIZES", "DiT", "GPT", "build"]
