"""K backbones of one shape kept as one: their weights in a single (K, P) tensor, seen two ways.

- Each member stays an ordinary backbone whose parameters are views of its row of the tensor: snapshots, state
  files and per-member losses read it like any single model (and write into it when a state is loaded).
- :class:`Stacked` is one module over all K rows: its parameters are (K, ...) views, every Linear is a batched
  matmul over the members (bmm), and attention runs over K*B rows, so one forward and backward launch as many
  kernels for K members as for one. Its inputs and outputs have K*B rows, member k's rows k*B..(k+1)*B-1, so an
  objective's loss, sampler and KV-cached decoding run on it unchanged. Training runs it over groups of members
  (:meth:`Stack.passes`): all K at once on a GPU, one at a time on a CPU.

The backbones' code is written for any leading dimensions; a stacked copy swaps its Linear, LayerNorm and
Embedding leaves for the member-batched ones below and its other parameters for views with a leading K (DiT's
positions broadcast over the batch because they carry a leading 1).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F


class StackedLinear(nn.Module):
    """K Linear layers: weight (K, out, in), bias (K, out) or None; x (K, ..., in) -> (K, ..., out)."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, out_features, in_features = self.weight.shape
        rows = x.reshape(members, -1, in_features)
        weight = self.weight.transpose(1, 2)
        y = torch.bmm(rows, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), rows, weight)
        return y.reshape(*x.shape[:-1], out_features)


class StackedLayerNorm(nn.Module):
    """K affine LayerNorms over the last dimension: weight and bias (K, width)."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, x.shape[-1:], None, None, self.eps)
        shape = (x.shape[0], *[1] * (x.ndim - 2), x.shape[-1])
        y = y * self.weight.view(shape)
        return y if self.bias is None else y + self.bias.view(shape)


class StackedEmbedding(nn.Module):
    """K embedding tables (K, n, width); indices (K, ...) -> (K, ..., width), member k reading table k."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        members, n, width = self.weight.shape
        offsets = torch.arange(members, device=idx.device).view(members, *[1] * (idx.ndim - 1)) * n
        return F.embedding(idx + offsets, self.weight.reshape(members * n, width))


def _split(value, members: int):
    return value.reshape(members, -1, *value.shape[1:]) if isinstance(value, torch.Tensor) else value


def _merge(value):
    return value.reshape(-1, *value.shape[2:]) if isinstance(value, torch.Tensor) else value


class Stacked(nn.Module):
    """A backbone's stacked copy behind the single backbone's interface, with K*B rows in and out.

    Attributes it does not have (``n_cells``, ``bos``, ``new_cache``, ``pos_emb``...) are the stacked copy's.
    """

    def __init__(self, inner: nn.Module, members: int):
        super().__init__()
        self.inner, self.members = inner, members

    def forward(self, *inputs):
        return _merge(self.inner(*(_split(value, self.members) for value in inputs)))

    def decode_step(self, token: torch.Tensor, cache: torch.Tensor, t: int) -> torch.Tensor:
        """GPT's cached step: the cache already holds K*B rows (``new_cache(K * B)``)."""
        return _merge(self.inner.decode_step(_split(token, self.members), cache, t))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":
                raise
            return getattr(self.inner, name)


def _stacked_copy(module: nn.Module, prefix: str, views: dict) -> nn.Module:
    """``module`` with its parameters replaced by the (K, ...) ``views`` (keyed by dotted name)."""
    def own(name):
        return views.get(prefix + name)

    if isinstance(module, nn.Linear):
        return StackedLinear(own("weight"), own("bias"))
    if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        return StackedLayerNorm(own("weight"), own("bias"), module.eps)
    if isinstance(module, nn.Embedding):
        return StackedEmbedding(own("weight"))
    clone = copy.copy(module)  # shares plain attributes (sizes, heads), gets its own parameter and child tables
    clone._parameters = {name: own(name) for name in module._parameters}
    clone._buffers = dict(module._buffers)
    clone._modules = {name: _stacked_copy(child, f"{prefix}{name}.", views) for name, child in module._modules.items()}
    return clone


def _set_parameter(model: nn.Module, name: str, value: nn.Parameter) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf, value)


class Stack:
    """K backbones of one shape with their weights in ``flat`` (K, P): ``members[k]`` are ordinary backbones on
    row k (no gradients), ``net`` the :class:`Stacked` module over all rows (generation), :meth:`passes` the
    modules that train them."""

    def __init__(self, members: list[nn.Module]):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        self.shapes = {name: p.shape for name, p in first.named_parameters()}
        for k, member in enumerate(members[1:], 1):
            shapes = {name: p.shape for name, p in member.named_parameters()}
            if type(member) is not type(first) or shapes != self.shapes:
                raise ValueError(f"ensemble members differ in shape: member {k} is not shaped like member 0")
        if set(first.state_dict()) != set(self.shapes):
            raise ValueError(f"{type(first).__name__} keeps state besides its parameters; it cannot be stacked")
        self.members = members
        self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in members])
        sizes = [shape.numel() for shape in self.shapes.values()]
        self._slices = dict(zip(self.shapes, (slice(end - size, end) for size, end in
                                              zip(sizes, torch.tensor(sizes).cumsum(0).tolist()))))
        for k, member in enumerate(members):
            for name, view in self.member_views(self.flat, k).items():
                _set_parameter(member, name, nn.Parameter(view, requires_grad=False))
        self.net, _ = self._net(self.flat)

    def __len__(self) -> int:
        return len(self.members)

    def _net(self, rows: torch.Tensor) -> tuple[Stacked, list[nn.Parameter]]:
        """A :class:`Stacked` module whose parameters are views of ``rows`` (some rows of ``flat``), and those
        parameters in :meth:`views` order."""
        views = {name: nn.Parameter(view) for name, view in self.views(rows).items()}
        return Stacked(_stacked_copy(self.members[0], "", views), len(rows)), list(views.values())

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter name -> (K, *shape) view of a (K, P) tensor laid out like ``flat``."""
        return {name: flat[:, cut].view(len(flat), *self.shapes[name]) for name, cut in self._slices.items()}

    def member_views(self, flat: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Parameter name -> member k's view of a (K, P) tensor laid out like ``flat`` (a state_dict's layout)."""
        return {name: flat[k, cut].view(self.shapes[name]) for name, cut in self._slices.items()}

    def passes(self, per_pass: int, grad: torch.Tensor) -> list[tuple[slice, Stacked]]:
        """The members in consecutive groups of ``per_pass``, each with a :class:`Stacked` module over its rows of
        ``flat`` whose parameters' ``.grad`` are views of the same rows of ``grad`` (K, P): one backward per group
        accumulates straight into ``grad`` (zero it between steps; never set the gradients to None).

        Why groups: on a GPU one pass over all K members runs as few kernels as one run (``per_pass = K``); on a
        CPU a pass over K*B rows spills the caches that one member's activations fit in, and member by member
        (``per_pass = 1``) is faster (``benches/bench_ensemble.py``)."""
        if per_pass < 1:
            raise ValueError(f"members per pass must be >= 1, got {per_pass}")
        groups = []
        for start in range(0, len(self), per_pass):
            rows = slice(start, min(start + per_pass, len(self)))
            net, params = self._net(self.flat[rows])
            for param, view in zip(params, self.views(grad[rows]).values()):
                param.grad = view
            groups.append((rows, net))
        return groups
