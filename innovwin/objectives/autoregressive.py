"""The autoregressive objective: next-token prediction over a task's cells, read in row-major order after BOS.

Tokens 0..k-1 are cell values and token k is BOS (the GPT backbone's ``bos``). The loss is the negative
log-likelihood per cell; sampling draws one cell at a time with the backbone's key/value cache, by inverse-CDF
sampling from one uniform per row, so a fixed generator gives the same samples at every evaluation. A sample's
exact probability under that sampler comes from one teacher-forced pass (``sample_probability``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def _check_cells(cells: torch.Tensor, n_cells: int) -> None:
    if cells.ndim != 2 or cells.shape[1] != n_cells:
        raise ValueError(f"cells must have shape (B, {n_cells}), got {tuple(cells.shape)}")
    if cells.dtype != torch.uint8:
        raise ValueError(f"cells must be uint8, got {cells.dtype}")


def _teacher_forced(net: nn.Module, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, n_cells, k) as float, targets (B, n_cells)): every position predicted from the true prefix."""
    _check_cells(cells, net.n_cells)
    targets = cells.long()
    bos = torch.full_like(targets[:, :1], net.bos)
    return net(torch.cat([bos, targets[:, :-1]], dim=1)).float(), targets


def nll(net: nn.Module, cells: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (B,) of uint8 cells (B, n_cells), in nats per cell (mean over the cells)."""
    logits, targets = _teacher_forced(net, cells)
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1)


@torch.no_grad()
def log_prob(net: nn.Module, cells: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p (B,) that :func:`sample` at ``temperature`` draws exactly these cells: one teacher-forced pass."""
    if not temperature > 0:
        raise ValueError(f"a sample's probability needs temperature > 0, got {temperature!r}")
    logits, targets = _teacher_forced(net, cells)
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets[..., None]).squeeze(-1).sum(1)


def _uniforms(rows: int, generator, device) -> torch.Tensor:
    """(rows, 1) uniforms from one generator, or from each of a list of them in turn (equal shares of the rows)."""
    if not isinstance(generator, (list, tuple)):
        gen_device = generator.device if generator is not None else device
        return torch.rand(rows, 1, generator=generator, device=gen_device).to(device)
    return torch.cat([_uniforms(rows // len(generator), one, device) for one in generator])


def _draw(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    """Next cells (B,) by inverse-CDF sampling from one uniform per row (argmax at temperature 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    u = _uniforms(logits.shape[0], generator, logits.device)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(-1)
    return (cdf < u).sum(-1).clamp_max(logits.shape[-1] - 1)


@torch.no_grad()
def sample(net: nn.Module, n: int, temperature: float = 1.0, generator=None, kv_cache: bool = True) -> torch.Tensor:
    """n grids as uint8 (n, n_cells). ``generator``: one, or a list whose generators draw for equal shares of the
    rows in turn (a stacked ensemble's members). ``kv_cache=False`` recomputes the whole prefix at every position
    (the reference the cache is tested against: both consume the generator identically)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    device = net.pos_emb.weight.device
    tokens = torch.full((n, 1), net.bos, dtype=torch.long, device=device)
    cache = net.new_cache(n) if kv_cache else None
    for t in range(net.n_cells):
        logits = net.decode_step(tokens[:, -1:], cache, t) if kv_cache else net(tokens)[:, -1]
        tokens = torch.cat([tokens, _draw(logits, temperature, generator)[:, None]], dim=1)
    return tokens[:, 1:].to(torch.uint8)


@dataclass(frozen=True)
class SamplingStart:
    """What a GPT evaluation generates from: ``n`` samples from each seed's generator, reseeded every evaluation
    (several seeds: a stacked ensemble's members, their rows in this order)."""

    n: int
    seeds: tuple[int, ...]


class Autoregressive:
    """Next-token training and cached sampling of a task's cells. Settings come from the run config."""

    def __init__(self, task, config=None):
        self.n_cells, self.k = int(task.n_cells), int(task.k)
        self.temperature = config.temperature if config is not None else 1.0
        self.seed = config.sampling_seed if config is not None else 0

    def network_calls_per_sample(self) -> int:
        """One cached pass over the sequence per sample."""
        return 1

    def encode(self, cells: torch.Tensor) -> torch.Tensor:
        """The training representation is the cells themselves (tokens are made in the loss)."""
        return cells

    def features(self, cells: torch.Tensor) -> None:
        """Generations are tokens: there is no undecoded form to run the L2 ratio test on."""
        return None

    def training_inputs(self, cells: torch.Tensor, generator: torch.Generator) -> tuple:
        return (cells,)

    def loss(self, net: nn.Module, cells: torch.Tensor) -> torch.Tensor:
        return nll(net, cells)

    def eval_start(self, n: int, generator: torch.Generator, device) -> SamplingStart:
        """Every evaluation reseeds its own generator on the device: the start is the count and the seed."""
        return SamplingStart(n, (self.seed,))

    @staticmethod
    def join_starts(starts: list[SamplingStart]) -> SamplingStart:
        """A stacked ensemble's members' starts as one: their seeds, in order."""
        if len({start.n for start in starts}) != 1:
            raise ValueError("members of one ensemble must generate equally many samples")
        return SamplingStart(starts[0].n, tuple(seed for start in starts for seed in start.seeds))

    def loss_inputs(self, sets: dict, generator: torch.Generator, device) -> dict:
        return {name: (cells.to(device),) for name, cells in sets.items()}

    def sample_probability(self, net: nn.Module, cells: torch.Tensor) -> torch.Tensor:
        """Probability (B,) that one generation equals each row of cells: summed over the training set, the
        expected copy rate, with no sampling noise (an optional member: objectives without it have none)."""
        return log_prob(net, cells, self.temperature).exp()

    @torch.no_grad()
    def generate(self, net: nn.Module, start: SamplingStart) -> tuple[torch.Tensor, None]:
        device = net.pos_emb.weight.device
        generators = [torch.Generator(device).manual_seed(seed) for seed in start.seeds]
        generator = generators[0] if len(generators) == 1 else generators
        return sample(net, start.n * len(generators), temperature=self.temperature, generator=generator), None
