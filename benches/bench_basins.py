"""Seconds per snapshot of the basin dissection: K = 256 probes per class, 12 sigmas, R = 4 draws, 12 Heun steps.

That is 3 * 256 * 12 * 4 = 36,864 trajectories of 23 network calls each. Model: a DiT on 6x6 parity bits,
depth 1, width 32, 2 heads (about 30k parameters) on CPU; depth 4, width 128, 4 heads (the DiT default, ~1.2M
parameters) on CUDA. Weights are random (the cost does not depend on them).

- ``batched``: innovwin.basins.measure, every (class, probe, sigma, draw) one row of a chunked batch with per-row
  Heun schedules;
- ``per_sigma`` (baseline): the same measurement one sigma at a time, one shared schedule per call;
- ``memorizer``: the same batched measurement with the exact empirical denoiser of 512 training points in place
  of the DiT: the cost of everything but the network (noising, Heun bookkeeping, decoding, classification).

Run: pytest benches/bench_basins.py --benchmark-enable
"""
import numpy as np
import pytest
import torch

from innovwin import tasks
from innovwin.analysis import basins
from innovwin.objectives import builders, diffusion
from innovwin.tasks import dataset as data

K, N_SIGMAS, DRAWS, STEPS = 256, 12, 4, 12
SIZES = {"cpu": dict(depth=1, width=32, heads=2), "cuda": dict(depth=4, width=128, heads=4)}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def probes():
    task = tasks.make("parity:h=6,w=6,g=3")
    dataset = data.make_dataset(task, 512, seed=0, n_heldout=K)
    return task, dataset, basins.make_probes(dataset.train, dataset.heldout, task.validate, task.k, K, seed=0)


def _model(task, device):
    torch.manual_seed(0)
    net = builders.dit(task, **SIZES[device]).to(device).eval()
    for p in net.parameters():  # leave adaLN-Zero's zero init: a zero network would be a trivial denoiser
        torch.nn.init.normal_(p, std=0.02)
    return diffusion.Diffusion(task).denoiser(net)


def _run(denoise, coder, probes, sigma_sets, device):
    """One snapshot's dissection, ``coder`` giving encode/decode, one measure() call per set of sigmas."""
    for sigmas in sigma_sets:
        basins.measure(denoise, coder.encode, coder.decode, probes, sigmas, draws=DRAWS, steps=STEPS, device=device)
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
def test_batched(benchmark, probes, device):
    task, _, probe_sets = probes
    model = _model(task, device)
    sigmas = basins.sigma_grid(n=N_SIGMAS)
    benchmark.extra_info.update(device=device, params=sum(p.numel() for p in model.net.parameters()), **SIZES[device])
    benchmark.pedantic(_run, args=(model, diffusion.Diffusion(task), probe_sets, [sigmas], device), rounds=1, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sigma_baseline(benchmark, probes, device):
    task, _, probe_sets = probes
    model = _model(task, device)
    sigma_sets = [np.array([s]) for s in basins.sigma_grid(n=N_SIGMAS)]
    benchmark.extra_info.update(device=device, params=sum(p.numel() for p in model.net.parameters()), **SIZES[device])
    benchmark.pedantic(_run, args=(model, diffusion.Diffusion(task), probe_sets, sigma_sets, device), rounds=1, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
def test_memorizer(benchmark, probes, device):
    task, dataset, probe_sets = probes
    model = diffusion.Diffusion(task)  # its encode/decode
    memorizer = basins.EmpiricalDenoiser(model.encode(torch.from_numpy(dataset.train))).to(device)
    benchmark.extra_info.update(device=device, n_train=len(dataset.train))
    sigmas = basins.sigma_grid(n=N_SIGMAS)
    benchmark.pedantic(_run, args=(memorizer, model, probe_sets, [sigmas], device), rounds=1, iterations=1)
