"""Objectives: the ways a backbone is trained into a generator, and the one registry of architectures.

An objective is a small object built per run as ``objective(task, config)``; the trainer, the evaluation and the
analyses call only the members of :mod:`innovwin.objectives.protocol` (``Objective``: encode, training_inputs, loss,
loss_inputs, eval_start, generate, features, network_calls_per_sample; optional: ``join_starts``,
``sample_probability``, and a diffusion objective's ``denoiser`` and ``decode``).

:mod:`innovwin.objectives.registry` maps an architecture name to (backbone builder, objective); register a new
one there (or from your own code with ``registry.register``) and every command can train it.
"""
from innovwin.objectives.protocol import Objective
from innovwin.objectives.registry import Arch, build_model, get, names, register

__all__ = ["Arch", "Objective", "build_model", "get", "names", "register"]
