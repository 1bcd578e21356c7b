"""Backbones under their objectives: encodings, EDM preconditioning at init, learning, KV cache vs recomputation,
the registry's builders, the train step."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from innovwin import objectives, tasks
from innovwin.objectives import autoregressive as ar
from innovwin.objectives import diffusion as edm
from innovwin.objectives.builders import dit as DiT
from innovwin.objectives.builders import gpt as GPT
from innovwin.train.step import make_train_step

build = objectives.build_model

PARITY = tasks.make("parity:h=6,w=6,g=2")
DIGITS = SimpleNamespace(shape=(3, 3), n_cells=9, k=4)  # a k-valued grid; the models need only n_cells and k
TINY = dict(depth=2, width=32, heads=2)


def cells_of(task, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, task.k, (n, task.n_cells), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("task, channels, sigma_data", [(PARITY, 1, 1.0), (DIGITS, 4, math.sqrt(3) / 4)])
def test_dit_encoding_roundtrip_and_sigma_data_is_the_rms(task, channels, sigma_data):
    model = edm.Diffusion(task)
    cells = cells_of(task, 500, 0)
    x0 = model.encode(cells)
    assert x0.shape == (500, task.n_cells, channels) and model.sample_shape == (task.n_cells, channels)
    assert DiT(task, **TINY).channels == channels
    assert model.sigma_data == pytest.approx(sigma_data)
    torch.testing.assert_close(model.decode(x0), cells, rtol=0, atol=0)
    noisy = x0 + 0.2 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)) * sigma_data
    assert (model.decode(noisy) == cells).float().mean() > 0.95
    # every coordinate of a uniformly random grid has mean 0 and RMS sigma_data
    assert x0.mean().item() == pytest.approx(0.0, abs=0.02)
    assert x0.square().mean().sqrt().item() == pytest.approx(sigma_data, rel=0.02)


def test_encode_decode_reject_bad_input():
    model = edm.Diffusion(DIGITS)
    with pytest.raises(ValueError, match="alphabet"):
        model.encode(torch.full((2, 9), 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        model.encode(torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.zeros(2, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        model.decode(torch.zeros(2, 9, 1))
    with pytest.raises(ValueError, match="sigma"):
        model.denoiser(DiT(DIGITS, **TINY))(torch.zeros(2, 9, 4), torch.ones(3))


@pytest.mark.parametrize("task", [PARITY, DIGITS])
def test_dit_at_init_is_c_skip_times_x(task):
    """adaLN-Zero: the output layer starts at zero, so D(x; s) = c_skip(s) x exactly."""
    model = edm.Diffusion(task).denoiser(DiT(task, **TINY))
    x = torch.randn(4, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.3, 1.0, 50.0])
    c_skip = edm.precondition(sigma, model.sigma_data)[0]
    torch.testing.assert_close(model(x, sigma), c_skip[:, None, None] * x, rtol=0, atol=0)


DIFFUSION = edm.Diffusion(PARITY)


def _dit_loss(model, x0, sigma, noise):
    return DIFFUSION.loss(model, x0, sigma, noise).mean()


def test_dit_train_steps_reduce_the_loss_on_parity():
    torch.manual_seed(0)  # the training step's own randomness is drawn from generators below
    model = DiT(PARITY, **TINY)
    x0 = DIFFUSION.encode(torch.from_numpy(PARITY.sample(128, seed=0)))
    gen = torch.Generator().manual_seed(1)
    eval_noise = edm.training_noise(x0, torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    step = make_train_step(model, optimizer, _dit_loss)
    before = _dit_loss(model, x0, *eval_noise).item()
    losses = [step(x0, *edm.training_noise(x0, gen)).item() for _ in range(100)]
    after = _dit_loss(model, x0, *eval_noise).item()
    assert all(math.isfinite(v) for v in losses)
    assert after < 0.8 * before


def test_gpt_nll_matches_manual_cross_entropy_and_is_causal():
    model = GPT(DIGITS, **TINY)
    cells = cells_of(DIGITS, 6, 3)
    tokens = torch.cat([torch.full((6, 1), DIGITS.k), cells[:, :-1].long()], dim=1)
    logits = model(tokens)
    assert logits.shape == (6, 9, DIGITS.k)
    manual = -logits.log_softmax(-1).gather(-1, cells.long()[..., None])[..., 0].mean(1)
    torch.testing.assert_close(ar.nll(model, cells), manual)
    torch.testing.assert_close(ar.nll(model, cells[:2]).mean(), F.cross_entropy(logits[:2].flatten(0, 1),
                                                                           cells[:2].long().flatten()))
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % DIGITS.k
    torch.testing.assert_close(model(changed)[:, :5], logits[:, :5])
    assert not torch.allclose(model(changed)[:, 5:], logits[:, 5:])


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_gpt_kv_cache_sampling_equals_recomputation(temperature):
    model = GPT(DIGITS, depth=2, width=32, heads=4)
    with torch.no_grad():  # a sharper model than init, so the samples depend on the context
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    cached = ar.sample(model, 64, temperature, torch.Generator().manual_seed(7))
    recomputed = ar.sample(model, 64, temperature, torch.Generator().manual_seed(7), kv_cache=False)
    assert cached.dtype == torch.uint8 and cached.shape == (64, 9)
    torch.testing.assert_close(cached, recomputed, rtol=0, atol=0)
    assert len({tuple(row) for row in cached.tolist()}) > (1 if temperature else 0)


def test_gpt_learns_and_samples_are_reproducible():
    model = GPT(PARITY, **TINY)
    cells = torch.from_numpy(PARITY.sample(128, seed=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    step = make_train_step(model, optimizer, lambda m, c: ar.nll(m, c).mean())
    before = ar.nll(model, cells).mean().item()
    for _ in range(30):
        step(cells)
    assert ar.nll(model, cells).mean().item() < before - 0.05
    a = ar.sample(model, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, ar.sample(model, 8, generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["dit", "gpt"])
def test_build_roundtrips_size_config(arch):
    model = build(PARITY, arch, depth=3, width=64, heads=2)
    assert model.size_config()["depth"] == 3 and model.size_config()["width"] == 64
    twin = build(PARITY, arch, **model.size_config())
    twin.load_state_dict(model.state_dict())
    assert twin.size_config() == model.size_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="dit", width=30, heads=4), "not divisible"),
        (dict(arch="gpt", depth=0), "depth"),
        (dict(arch="vae"), "unknown arch"),
        (dict(arch="dit", widht=64), "did you mean 'width'"),
        (dict(arch="gpt", sigma_data=0.5), "unknown gpt parameter"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(PARITY, **kwargs)


def test_train_step_is_eager_on_cpu_and_checks_the_loss():
    model = GPT(PARITY, **TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cells = torch.from_numpy(PARITY.sample(16, seed=1))
    step = make_train_step(model, optimizer, lambda m, c: ar.nll(m, c).mean(), clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(cells)
    assert loss.ndim == 0 and not loss.requires_grad and loss.dtype == torch.float32
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < moved.norm().item() <= 0.1 * 1e-3 * 1.0001  # clipped to the max norm, times the lr
    with pytest.raises(ValueError, match="scalar"):
        make_train_step(model, optimizer, lambda m, c: ar.nll(m, c))(cells)
    with pytest.raises(ValueError, match="clip"):
        make_train_step(model, optimizer, lambda m, c: ar.nll(m, c).mean(), clip=0)
