"""Group rules on bit grids: the h*w bits split into groups of G, each group must satisfy a predicate.

``parity`` (every group even) is a GF(2) linear code and uses the linear machinery (exact
uniform sampling, syndrome validator). ``rule`` takes the other predicates, all functions of a
group's popcount: ``majority`` (more ones than zeros, G odd), ``uniform`` (all bits equal),
``weight`` (exactly k ones). Groups are independent, so sampling is exactly uniform per group.
"""
from __future__ import annotations

from math import comb

import numpy as np

from innovwin._native_loader import native
from innovwin.tasks.base import REQUIRED, Task, as_int, as_seed, as_side
from innovwin.tasks.linear import LinearCodeTask

LAYOUTS = ("rows", "blocks", "random")
PREDICATES = ("majority", "uniform", "weight")


def parse_group(value) -> tuple[int, int] | int:
    """``g=3`` (G consecutive cells) or ``g=2x3`` (rectangular blocks of 2 rows by 3 columns)."""
    text = str(value)
    if "x" in text:
        a, _, b = text.partition("x")
        return (as_int(a), as_int(b))
    return as_int(text)


def group_cells(h: int, w: int, g, layout: str, seed: int) -> np.ndarray:
    """Cell indices of each group, int64 (n_groups, G), each row sorted."""
    cells = h * w
    if isinstance(g, tuple):
        bh, bw = g
        if layout != "blocks":
            raise ValueError(f"g={bh}x{bw} means layout=blocks, got layout={layout}")
        if bh < 1 or bw < 1 or h % bh or w % bw:
            raise ValueError(f"block {bh}x{bw} must tile the {h}x{w} grid")
        grid = np.arange(cells).reshape(h // bh, bh, w // bw, bw)
        return grid.transpose(0, 2, 1, 3).reshape(-1, bh * bw)
    if layout == "blocks":
        raise ValueError(f"layout=blocks needs g=AxB (block rows x columns), got g={g}")
    if g < 1 or cells % g:
        raise ValueError(f"group size g={g} must divide h*w={cells}")
    if layout == "rows":
        return np.arange(cells).reshape(-1, g)
    if layout == "random":
        return np.sort(np.random.default_rng(seed).permutation(cells).reshape(-1, g), axis=1)
    raise ValueError(f"unknown layout={layout!r}; valid: {', '.join(LAYOUTS)}")


def group_params(name, h, w, g, layout, seed) -> dict:
    """Canonical spec values of a group layout (seed only when the layout is random)."""
    g_text = f"{g[0]}x{g[1]}" if isinstance(g, tuple) else str(g)
    params = {"h": h, "w": w, "g": g_text}
    if layout == "random":
        params.update(layout="random", seed=seed)
    elif seed != 0:
        raise ValueError(f"{name}: seed= only applies to layout=random")
    return params


def default_layout(g, layout):
    return layout if layout is not None else ("blocks" if isinstance(g, tuple) else "rows")


def group_family_params(task) -> dict:
    """A group task's family drops g, but keeps block layouts (g=AxB) apart from groups of G consecutive cells."""
    params = Task.family_params(task)
    if "x" in str(task.params["g"]):
        params["layout"] = "blocks"
    return params


GROUP_PARAMS = {
    "h": (as_side, 6),
    "w": (as_side, 6),
    "g": (parse_group, REQUIRED),
    "layout": (str, None),
    "seed": (as_seed, 0),
}


class GroupParityTask(LinearCodeTask):
    """``parity:h=6,w=6,g=G``: every group of G bits has even parity; complexity = G."""

    name = "parity"
    example = "parity:h=6,w=6,g=3"
    PARAMS = GROUP_PARAMS
    complexity_params = ("g",)
    family_params = group_family_params

    def __init__(self, h=6, w=6, g=2, layout=None, seed=0):
        layout = default_layout(g, layout)
        self.shape = (h, w)
        self.groups = group_cells(h, w, g, layout, seed)
        self.params = group_params(self.name, h, w, g, layout, seed)
        self.complexity = self.groups.shape[1]
        self._set_checks(list(self.groups))


class GroupRuleTask(Task):
    """``rule:h=6,w=6,g=G,pred=P``: each group of G bits satisfies P (majority, uniform, weight with k=)."""

    name = "rule"
    example = "rule:h=6,w=6,g=3,pred=majority"
    PARAMS = {**GROUP_PARAMS, "pred": (str, REQUIRED), "k": (as_int, None)}
    complexity_params = ("g",)
    family_params = group_family_params

    def __init__(self, h=6, w=6, g=3, layout=None, seed=0, pred="majority", k=None):
        layout = default_layout(g, layout)
        self.shape = (h, w)
        self.k = 2
        self.groups = group_cells(h, w, g, layout, seed)
        self.params = group_params(self.name, h, w, g, layout, seed)
        size = self.groups.shape[1]
        counts = np.arange(size + 1)
        if pred != "weight" and k is not None:
            raise ValueError(f"{self.name}: k= only applies to pred=weight")
        if pred == "majority":
            if size % 2 == 0:
                raise ValueError(f"{self.name}: pred=majority needs an odd group size, got G={size}")
            allowed = 2 * counts > size
        elif pred == "uniform":
            allowed = (counts == 0) | (counts == size)
        elif pred == "weight":
            if k is None or not 0 <= k <= size:
                raise ValueError(f"{self.name}: pred=weight needs k= in 0..{size}, got {k}")
            allowed = counts == k
        else:
            raise ValueError(f"{self.name}: unknown pred={pred!r}; valid: {', '.join(PREDICATES)} (parity is its own task)")
        self.params["pred"] = pred
        if k is not None:
            self.params["k"] = k
        self.allowed = allowed  # allowed[c]: a group with c ones is fine
        self.complexity = size
        self.n_constraints = len(self.groups)
        per_group = sum(comb(size, int(c)) for c in counts[allowed])
        self.n_valid = per_group ** len(self.groups)
        n_cells = h * w
        words = (n_cells + 63) // 64
        self._masks = np.zeros((len(self.groups), words), dtype=np.uint64)
        for i, members in enumerate(self.groups):
            for cell in members:
                self._masks[i, cell // 64] |= np.uint64(1) << np.uint64(cell % 64)

    def _sample(self, n, rng):
        size = self.groups.shape[1]
        counts = np.arange(size + 1)
        weights = np.array([comb(size, int(c)) for c in counts], dtype=np.float64) * self.allowed
        ones = rng.choice(counts, size=(n, len(self.groups)), p=weights / weights.sum())
        # a uniformly random subset of `ones` positions: the cells with the smallest random ranks
        ranks = np.argsort(np.argsort(rng.random((n, len(self.groups), size)), axis=2), axis=2)
        group_bits = (ranks < ones[:, :, None]).astype(np.uint8)
        cells = np.zeros((n, self.n_cells), dtype=np.uint8)
        cells[:, self.groups] = group_bits
        return cells

    def _constraints_numpy(self, cells):
        return self.allowed[cells[:, self.groups].sum(axis=2, dtype=np.int64)]

    def _native(self, keys, per_constraint, threads):
        return native.group_count_validate(keys, self._masks, self.allowed.astype(np.uint8), per_constraint, threads)
