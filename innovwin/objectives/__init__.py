"""Objectives: the ways a backbone is trained into a generator, and the one registry of architectures.

An objective is a small object built per run as ``objective(task, config)``; the trainer, the evaluation and the
analyses call only these members (``net`` is the backbone, an ``nn.Module``):

    encode(cells) -> x                       training representation of uint8 cells (B, n_cells)
    training_inputs(x, generator) -> tuple   a batch's random draws, made outside any compiled step
    loss(net, *inputs) -> (B,)               per-sample loss (the driver averages it)
    loss_inputs(sets, generator, device)     fixed inputs of the held-out / training losses, per named cell set
    eval_start(n, generator, device)         what every evaluation generates from (fixed once per run)
    generate(net, start) -> (cells, outputs) decoded uint8 cells (M, n_cells) and the undecoded outputs (M, D)
                                             or None (a DiT's outputs feed the L2 ratio test)
    features(cells) -> (B, D) or None        the training set in the space of those undecoded outputs
    network_calls_per_sample() -> int        the evaluation's cost, for scheduling sweeps

:mod:`innovwin.objectives.registry` maps an architecture name to (backbone builder, objective); register a new
one there (or from your own code with ``registry.register``) and every command can train it.
"""
from innovwin.objectives.registry import Arch, build_model, get, names, register

__all__ = ["Arch", "build_model", "get", "names", "register"]
