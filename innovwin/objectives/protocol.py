"""The objective protocol: what the trainer, the evaluation and the analyses may call on an objective.

An objective is built per run as ``objective(task, config)`` (an ``Arch``'s ``objective``); ``net`` is the backbone,
an ``nn.Module``. :class:`Objective` lists the members every objective has; the optional ones are protocols of
their own, so a caller asks ``isinstance(objective, ExactProbability)`` of the one member it needs rather than
probing names: :class:`Stackable` (``join_starts``: every objective of a stackable architecture has it,
checked when it is built), :class:`ExactProbability` (``sample_probability``) and :class:`Denoising`
(``denoiser``, ``decode``: what the basin analysis integrates). docs/architecture.md's table lists the same
members (tests/test_docs.py holds the two together).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Objective(Protocol):
    def encode(self, cells) -> Any:
        """The training representation of uint8 cells (B, n_cells)."""

    def training_inputs(self, x, generator) -> tuple:
        """A batch's random draws, made outside any compiled step."""

    def loss(self, net, *inputs) -> Any:
        """Per-sample loss (B,); the driver averages it."""

    def loss_inputs(self, sets: dict, generator, device) -> dict:
        """Fixed inputs of the held-out and training losses, per named cell set."""

    def eval_start(self, n: int, generator, device) -> Any:
        """What every evaluation generates its n samples from (fixed once per run)."""

    def generate(self, net, start) -> tuple:
        """Decoded uint8 cells (M, n_cells) and the undecoded outputs (M, D), or None for them."""

    def features(self, cells) -> Any:
        """The training set in the space of the undecoded outputs (the L2 ratio test), or None."""

    def network_calls_per_sample(self) -> int:
        """The evaluation's cost, for ordering a sweep's runs."""


@runtime_checkable
class Stackable(Protocol):
    """The objective of an architecture registered ``stackable``: one generation for a stacked ensemble."""

    def join_starts(self, starts: list) -> Any:
        """The members' ``eval_start``s as one start (rows in member order)."""


@runtime_checkable
class ExactProbability(Protocol):
    """An objective that knows the exact probability of a generation (the GPT's, by teacher forcing)."""

    def sample_probability(self, net, cells) -> Any:
        """The probability (B,) that one generation equals each row of ``cells``."""


@runtime_checkable
class Denoising(Protocol):
    """A diffusion objective: a denoiser to integrate and the decoding of its end points."""

    def denoiser(self, net) -> Any:
        """The preconditioned denoiser D(x; sigma) around ``net``."""

    def decode(self, x) -> Any:
        """Model-space x (B, ...) -> uint8 cells (B, n_cells)."""


REQUIRED = tuple(name for name in vars(Objective) if not name.startswith("_"))
OPTIONAL = {protocol.__name__: tuple(name for name in vars(protocol) if not name.startswith("_"))
            for protocol in (Stackable, ExactProbability, Denoising)}


def missing_members(objective) -> list[str]:
    """The required members ``objective`` lacks (empty when it follows the protocol)."""
    return [name for name in REQUIRED if not callable(getattr(objective, name, None))]
