"""Stacked ensembles against K sequential single runs, on CPU: training steps and evaluations, DiT and GPT.

    python benches/record.py benches/bench_ensemble.py --name bench_ensemble-cpu-2core-shared

Each benchmark round runs the same work twice, interleaved so both see the same machine load: K members stepped
(or evaluated) as one stacked ensemble (:class:`innovwin.train.stacked.Ensemble`), and the same K runs as single
runs one after the other (:class:`innovwin.train.members.Trainer`, the path of one run per process, without the
process start). Training also times the stacked ensemble in one pass over all K members (``one_pass_s``, the
GPU's default), against the CPU's default of one member per pass. ``extra_info`` has the best round of each, their
ratios ``speedup`` and ``one_pass_speedup`` (sequential / ensemble; the issue's floor on CPU is 0.9) and the memory
that training holds per member at its peak (``memory_ratio`` against one single run, and ``one_pass_memory_ratio``):
the activations autograd saves for the largest pass plus the weights, gradients, Adam's moments and EMA, over K.

Sizes are the default run's (6x6 parity, depth 2, width 64, batch 64; 1 thread); evaluations draw 64 samples with
6 Heun steps (the default 256 and 18 scale both paths alike) so that K = 16 sequential DiT evaluations fit a
shared CPU.
"""
import time

import pytest
import torch

from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.evaluation.batched import evaluate_members
from innovwin.tasks.dataset import run_dataset
from innovwin.train.ensemble import check_members
from innovwin.train.members import Trainer
from innovwin.train.stacked import Ensemble

SIZES = (1, 4, 8, 16)
TRAIN_STEPS = 2
ROUNDS = 2
CPU = torch.device("cpu")
torch.set_num_threads(1)  # this bench runs in its own process (benches/record.py)


def build(arch: str, size: int, members_per_pass: int | None = None):
    configs = [RunConfig(arch=arch, seed=seed, device="cpu", eval_samples=64, sampler_steps=6, ema=0.999)
               for seed in range(size)]
    checked = check_members(configs)
    datasets = [run_dataset(config, task) for config, task in checked]
    configs, task_list = [c for c, _ in checked], [t for _, t in checked]
    ensemble = Ensemble(configs, task_list, datasets, CPU, members_per_pass)
    trainers = [Trainer(c, t, d, CPU) for c, t, d in zip(configs, task_list, datasets)]
    evaluators = [Evaluator(t, d, c, o, CPU) for c, t, d, o in zip(configs, task_list, datasets, ensemble.objectives)]
    return ensemble, trainers, evaluators


def saved_activation_bytes(step, weights: set[int]) -> int:
    """Bytes of the distinct storages autograd saves for backward in ``step()``, less the weights'."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def nbytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


def peak_pass_bytes(ensemble: Ensemble) -> int:
    """The most bytes autograd saves for one of the ensemble's forward and backward passes in a step (the passes
    run one after another, each freeing its activations before the next starts), less the weights'."""
    weights = {ensemble.stack.flat.untyped_storage().data_ptr()}
    per_pass = []

    def measured(backward):
        def run(*inputs):
            loss = None

            def one_pass():
                nonlocal loss
                loss = backward(*inputs)

            per_pass.append(saved_activation_bytes(one_pass, weights))
            return loss
        return run

    passes = ensemble.passes
    ensemble.passes = [(rows, net, measured(backward)) for rows, net, backward in passes]
    try:
        ensemble.train_step()
    finally:
        ensemble.passes = passes
    return max(per_pass)


def memory_per_member(ensemble: Ensemble, trainer: Trainer) -> dict:
    """What training holds per member at its peak: one pass's saved activations and the K members' weights,
    gradients, Adam moments and EMA, over K; against one single run's."""
    size = len(ensemble)
    stacked_state = [ensemble.stack.flat, ensemble.optimizer.grad, ensemble.optimizer.exp_avg,
                     ensemble.optimizer.exp_avg_sq, ensemble.ema.flat]
    stacked = (peak_pass_bytes(ensemble) + nbytes(stacked_state)) / size
    params = list(trainer.model.parameters())
    single = saved_activation_bytes(trainer.train_step, {p.untyped_storage().data_ptr() for p in params})
    single += nbytes([*params, *(p.grad for p in params), *trainer.ema.parameters(),  # after a step: grads, moments
                      *(t for s in trainer.optimizer.state.values() for t in s.values() if t.ndim)])
    return {"ensemble_bytes_per_member": stacked, "single_run_bytes": single, "memory_ratio": stacked / single}


def interleaved(benchmark, stacked, sequential, one_pass=None) -> dict:
    """Benchmark rounds of (stacked, sequential[, stacked in one pass]); the best time of each and the ratios."""
    works = {"ensemble_s": stacked, "sequential_s": sequential, "one_pass_s": one_pass}
    times = {name: [] for name, work in works.items() if work is not None}

    def one_round():
        for name in times:
            start = time.perf_counter()
            works[name]()
            times[name].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    best = {name: min(values[1:]) for name, values in times.items()}  # the first entry is the warmup round's
    best["speedup"] = best["sequential_s"] / best["ensemble_s"]
    if one_pass is not None:
        best["one_pass_speedup"] = best["sequential_s"] / best["one_pass_s"]
    benchmark.extra_info.update(best)
    return best


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("arch", ["gpt", "dit"])
def test_train_steps(benchmark, arch, size):
    ensemble, trainers, _ = build(arch, size)  # the CPU default: one member per forward and backward pass
    one_pass, _, _ = build(arch, size, members_per_pass=size)  # the GPU default: all K members in one pass

    def stacked(ensemble=ensemble):
        for _ in range(TRAIN_STEPS):
            ensemble.train_step()
        ensemble.losses.take_train_loss()

    def sequential():
        for trainer in trainers:
            for _ in range(TRAIN_STEPS):
                trainer.train_step()
            trainer.losses.take_train_loss()

    benchmark.extra_info.update(members=size, steps=TRAIN_STEPS, **memory_per_member(ensemble, trainers[0]),
                                one_pass_memory_ratio=memory_per_member(one_pass, trainers[0])["memory_ratio"])
    interleaved(benchmark, stacked, sequential, lambda: stacked(one_pass))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("arch", ["gpt", "dit"])
def test_evaluation(benchmark, arch, size):
    ensemble, trainers, evaluators = build(arch, size)
    stack = ensemble.eval_stack

    def stacked():
        evaluate_members(stack.net.eval(), [m.eval() for m in stack.members], evaluators, 1)

    def sequential():
        for trainer, evaluator in zip(trainers, evaluators):
            evaluator(trainer.eval_model, 1)

    benchmark.extra_info.update(members=size)
    interleaved(benchmark, stacked, sequential)
