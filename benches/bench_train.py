"""Whole-run throughput of the training driver: training steps, one evaluation, and the share of time in evaluation.

    pytest benches/bench_train.py --benchmark-enable        (or: python benches/record.py benches/bench_train.py)

Runs, each built as ``innovwin.train`` builds them (Trainer, Evaluator; model weights as initialized):
- ``default``: the README's ``innovwin train`` (RunConfig defaults) on CPU, one thread (the CLI's default);
- ``default_two_threads``: the same with two torch threads (the baseline for ``--threads 1``);
- ``dit_default_size``: the same run with arch=dit (the DiT baseline the default was chosen against: its
  evaluation runs 35 network calls per sample where the GPT runs one pass with a KV cache);
- ``gpu_dit``: CUDA only, 6x6 parity G=3, DiT depth 6, width 256, 8 heads, batch 512, eager (``compile=False``)
  against the fast path (``compile=None``: torch.compile + Triton attention + bf16 on CUDA).
``test_steps`` times 20 training steps; ``test_evaluation`` one evaluation. ``extra_info`` carries steps/s and
``eval_share``: the share of a whole run's time spent evaluating with that run's schedule (8 per decade),
eval_time * n_evals / (steps * step_time + eval_time * n_evals).
"""
from __future__ import annotations

import time

import pytest
import torch

from innovwin.config import RunConfig
from innovwin.evaluation.evaluator import Evaluator
from innovwin.tasks import dataset as data
from innovwin.train.driver import check_run, eval_steps
from innovwin.train.members import Trainer

STEPS_PER_ROUND = 20
GPU_RUN = dict(task="parity:h=6,w=6,g=3", arch="dit", depth=6, width=256, heads=8, batch=512, n_train=1024,
               steps=100_000, eval_samples=1024, device="cuda")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
RUNS = {
    "default": {},
    "default_two_threads": {},
    "dit_default_size": dict(arch="dit"),
    "gpu_dit_eager": {**GPU_RUN, "compile": False, "dtype": "float32"},
    "gpu_dit_fast": GPU_RUN,
}
THREADS = {"default_two_threads": 2}  # every other run: 1
PARAMS = [name if not name.startswith("gpu") else pytest.param(name, marks=CUDA) for name in RUNS]


def _setup(name):
    config, task = check_run(RunConfig(**RUNS[name]))
    device = torch.device("cuda" if name.startswith("gpu") else "cpu")
    dataset = data.make_dataset(task, config.n_train, config.data_seed, n_heldout=config.loss_samples)
    trainer = Trainer(config, task, dataset, device)
    return config, trainer, Evaluator(task, dataset, config, trainer.objective, device), device


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _steps(trainer, device):
    for _ in range(STEPS_PER_ROUND):
        trainer.train_step()
    trainer.losses.take_train_loss()
    _sync(device)


@pytest.fixture(scope="module")
def step_seconds():
    return {}


@pytest.fixture
def threads(name):
    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS.get(name, 1))
    yield torch.get_num_threads()
    torch.set_num_threads(saved)


@pytest.mark.parametrize("name", PARAMS)
def test_steps(benchmark, name, step_seconds, threads):
    config, trainer, _, device = _setup(name)
    _steps(trainer, device)  # warm-up (and compilation on CUDA)
    benchmark.pedantic(_steps, args=(trainer, device), rounds=5, iterations=1)
    step_seconds[name] = benchmark.stats.stats.median / STEPS_PER_ROUND
    benchmark.extra_info.update(steps_per_s=1 / step_seconds[name], batch=config.batch, arch=config.arch,
                                threads=threads)


@pytest.mark.parametrize("name", PARAMS)
def test_evaluation(benchmark, name, step_seconds, threads):
    config, trainer, evaluator, device = _setup(name)
    model = trainer.eval_model
    evaluator(model, 0)  # warm-up
    benchmark.pedantic(evaluator, args=(model, 0), rounds=3, iterations=1)
    eval_s = benchmark.stats.stats.median
    n_evals = len(eval_steps(config))
    benchmark.extra_info.update(eval_samples=config.eval_samples, n_evals=n_evals, steps=config.steps,
                                threads=threads)
    if name in step_seconds:
        train_s = config.steps * step_seconds[name]
        benchmark.extra_info.update(eval_share=eval_s * n_evals / (train_s + eval_s * n_evals),
                                    run_minutes_estimate=(train_s + eval_s * n_evals) / 60)


def test_wall_clock_of_the_default_run_is_reported(tmp_path):
    """Not a timing assertion: prints the default run's wall time beside its clocks (run with -s)."""
    from innovwin.train.driver import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    summary = train(RunConfig(), tmp_path, quiet=True)
    print(f"\ndefault run: {time.perf_counter() - start:.0f} s wall, tau_rule {summary['tau_rule_text']}, "
          f"tau_mem {summary['tau_mem_text']}, window {summary['window']}, timing {summary['timing']}")
    assert summary["tau_rule"] is not None and summary["tau_mem"] is not None
