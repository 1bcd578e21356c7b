"""The one registry: an architecture name -> (backbone, objective). Only this module and the objectives and models
it names know which architecture a run uses; every other layer calls through :func:`get`.

Entries name their builders as ``"module:attribute"`` strings and import them on first use, so reading a config or
parsing a command line never imports torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from innovwin.naming import did_you_mean
from innovwin.objectives import diffusion_settings
from innovwin.objectives.protocol import Stackable, missing_members


@dataclass(frozen=True)
class Arch:
    """One architecture: ``backbone(task, **size) -> nn.Module`` and ``objective(task, config) -> objective``
    (callables or "module:attribute" strings); ``title`` names it in reports; ``settings`` are the objective's
    own config fields (the run key hashes added ones only for the architectures that read them). ``stackable``: the
    backbone's code takes a leading member dimension, so K of them train as one stacked ensemble
    (:mod:`innovwin.models.stacked`)."""

    name: str
    title: str
    backbone: Callable | str
    objective: Callable | str
    settings: tuple[str, ...] = ()
    stackable: bool = False

    def build_backbone(self, task, **size):
        return _resolve(self.backbone)(task, **size)

    def build_objective(self, task, config=None):
        """The run's objective; ValueError when it lacks a member of the protocol (:mod:`innovwin.objectives.protocol`)
        the architecture needs: the required ones, and ``join_starts`` when it is stackable."""
        objective = _resolve(self.objective)(task, config)
        missing = missing_members(objective)
        if self.stackable and not isinstance(objective, Stackable):
            missing.append("join_starts")
        if missing:
            raise ValueError(f"arch {self.name!r}: its objective {type(objective).__name__} lacks "
                             f"{', '.join(missing)} (see innovwin.objectives.protocol)")
        return objective


def _resolve(target: Callable | str) -> Callable:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    """Add (or replace) an architecture; returns it."""
    ARCHS[arch.name] = arch
    return arch


def unregister(name: str) -> None:
    ARCHS.pop(name, None)


def names() -> list[str]:
    return list(ARCHS)


def get(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}{did_you_mean(str(name), ARCHS)}; choose from {', '.join(ARCHS)}")
    return ARCHS[name]


def build_model(task, arch: str, **size):
    """The backbone of ``arch`` for ``task``; unknown size keywords are refused with the nearest valid one."""
    return get(arch).build_backbone(task, **size)


register(Arch("dit", "DiT (EDM diffusion)", "innovwin.objectives.builders:dit", "innovwin.objectives.diffusion:Diffusion",
              settings=diffusion_settings.FIELDS, stackable=True))
register(Arch("gpt", "GPT (next token)", "innovwin.objectives.builders:gpt",
              "innovwin.objectives.autoregressive:Autoregressive", stackable=True))
