"""Score dissection: the basins of attraction of training, novel-valid and invalid points.

A denoiser's probability-flow ODE carries a point x0 + sigma*eps back to *some* configuration. The basin radius of a
probe x0 is the largest sigma from which it comes back to x0 itself with probability >= 0.5. A fully memorizing model
(the exact denoiser of the training points, :class:`EmpiricalDenoiser`) has basins around its training points only;
a model that has learned the rule has basins around every valid configuration. Tracking the radii of three probe
sets over training snapshots shows which one a model is at each step:

- ``train``: training samples;
- ``novel``: held-out valid samples;
- ``invalid``: each novel probe with one cell changed so that it breaks the rule.

Every end point is classified as ``return`` (decodes to its own probe), ``train`` (another training sample),
``valid`` (another valid configuration) or ``invalid``. Alongside, the weighted denoising loss of each probe set at
each sigma (EDM's loss at fixed noises) shows where in sigma training and held-out points separate.

Noise is one direction eps per (probe, draw), shared across the sigma grid and across snapshots (common random
numbers), so return curves are smooth in sigma and comparable between steps. Sigmas are in the model's encoding
(bits are +-1: two configurations one cell apart are 2 apart).

Reading the radii: a denoiser that knows only that cells are bits (independent +-1 cells) gives *every* point,
valid or not, the same radius (:func:`independent_bits_radius`: 0.48 for 36 cells, 0.58 for 16), and an untrained
DiT sits there too. Learned structure shows as departures from that level:
memorizing takes novel and invalid radii to 0 and grows the training radii; learning the rule takes invalid radii
to 0 while novel ones stay.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from innovwin import bits, objectives, tasks
from innovwin.analysis.basin_settings import DEFAULTS, PROBE_CLASSES
from innovwin.objectives import diffusion as edm
from innovwin.objectives.protocol import Denoising
from innovwin.runtime import resolve_device
from innovwin.store import rundir, schemas
from innovwin.store.files import write_jsonl
from innovwin.tasks.dataset import run_dataset

OUTCOMES = ("return", "train", "valid", "invalid")
RHO = 7.0
SIGMA_END = 0.002  # every trajectory integrates from its sigma down to this, then to 0 (EDM's sigma_min)
_INVALID_TRIES = 64


class EmpiricalDenoiser(torch.nn.Module):
    """The exact denoiser of the training set's empirical distribution: the fully memorizing optimum.

    D(x; sigma) = sum_i w_i x_i with w = softmax_i(-||x - x_i||^2 / (2 sigma^2)). Its ODE ends on a training
    point from anywhere, so only training points have basins: the reference the trained models are held against.
    """

    def __init__(self, train_x0: torch.Tensor, sigma_data: float = 1.0):
        super().__init__()
        points = train_x0.reshape(len(train_x0), -1).float()
        self.register_buffer("points", points)
        self.register_buffer("half_sq_norms", points.square().sum(1) / 2)
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1).float()
        # -||x - x_i||^2 / 2 up to the term ||x||^2 / 2, which is the same for every i and cancels in the softmax
        logits = (flat @ self.points.T - self.half_sq_norms) / sigma.float().reshape(-1, 1).square()
        return (torch.softmax(logits, dim=1) @ self.points).reshape(x.shape).to(x.dtype)


def sigma_grid(sigma_min: float = DEFAULTS["sigma_min"], sigma_max: float = DEFAULTS["sigma_max"],
               n: int = DEFAULTS["n_sigmas"]) -> np.ndarray:
    """``n`` noise levels spaced evenly in log sigma from ``sigma_min`` to ``sigma_max``."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if n < 2:
        raise ValueError(f"the sigma grid needs at least 2 levels, got {n}")
    return np.geomspace(sigma_min, sigma_max, n)


def check_sigmas(sigmas) -> np.ndarray:
    """The noise levels as a sorted float64 array; each must lie above the ODE's end point ``SIGMA_END``."""
    sigmas = np.sort(np.asarray(sigmas, dtype=np.float64).ravel())
    if sigmas.size == 0:
        raise ValueError("need at least one sigma")
    if not np.isfinite(sigmas).all() or sigmas[0] <= 0:
        raise ValueError(f"every sigma must be finite and > 0, got {sigmas.tolist()}")
    if sigmas[0] <= SIGMA_END:
        raise ValueError(f"every sigma must exceed the ODE's end point {SIGMA_END}, got {sigmas[0]}")
    if len(np.unique(sigmas)) != len(sigmas):
        raise ValueError(f"sigmas must be distinct, got {sigmas.tolist()}")
    return sigmas


def independent_bits_radius(n_cells: int) -> float:
    """Basin radius of every point under the denoiser of independent uniform bits, D = tanh(x / sigma^2).

    Its ODE never moves a coordinate across 0, so a point returns iff no noise coordinate flips its sign:
    P(return) = Phi(1/sigma)^n_cells, which is 1/2 at sigma = 1 / Phi^-1(2^(-1/n_cells)). The level a model sits
    at before it has learned anything beyond the alphabet.
    """
    return float(1 / torch.special.ndtri(torch.tensor(0.5 ** (1 / n_cells), dtype=torch.float64)))


# --- probes and outcomes --------------------------------------------------------------------
@dataclass(frozen=True)
class Probes:
    """Three probe sets and what their end points are judged against."""

    cells: dict  # probe class -> uint8 (K, n_cells)
    train: np.ndarray  # uint8 (N, n_cells): the whole training set (an end point equal to one is a copy)
    validate: Callable[[np.ndarray], np.ndarray]  # uint8 cells (M, n_cells) -> bool (M,)
    k: int  # alphabet size

    @property
    def n_probes(self) -> int:
        return len(self.cells["train"])


def make_probes(train: np.ndarray, heldout: np.ndarray, validate, k: int, n_probes: int, seed: int) -> Probes:
    """K training samples, K held-out samples, and those K held-out samples each with one cell changed.

    The invalid probes are paired with the novel ones: each sits one cell away from a novel probe, so the two
    sets differ only in validity. A changed cell is redrawn until the configuration breaks the rule.
    """
    if n_probes < 1:
        raise ValueError(f"need at least 1 probe per class, got {n_probes}")
    for name, have in (("training", len(train)), ("held-out", len(heldout))):
        if n_probes > have:
            raise ValueError(f"asked for {n_probes} probes but the run has only {have} {name} samples")
    rng = np.random.default_rng(seed)
    train_probes = train[rng.choice(len(train), n_probes, replace=False)]
    novel = heldout[rng.choice(len(heldout), n_probes, replace=False)]
    invalid = novel.copy()
    pending = np.arange(n_probes)
    for _ in range(_INVALID_TRIES):
        invalid[pending] = novel[pending]
        cell = rng.integers(0, novel.shape[1], len(pending))
        shift = rng.integers(1, k, len(pending))
        invalid[pending, cell] = (novel[pending, cell] + shift) % k
        pending = pending[validate(invalid[pending])]
        if len(pending) == 0:
            return Probes({"train": train_probes, "novel": novel, "invalid": invalid}, train, validate, k)
    raise ValueError(f"could not make {len(pending)} held-out samples invalid by changing one cell "
                     f"in {_INVALID_TRIES} tries: does the rule tolerate single-cell changes?")


def _row_keys(cells: np.ndarray, k: int) -> np.ndarray:
    """Packed rows as one opaque (void) value each, so np.isin compares whole configurations."""
    packed = np.ascontiguousarray(bits.pack(cells, k))
    return packed.view(np.dtype((np.void, packed.dtype.itemsize * packed.shape[1]))).ravel()


def classify(ends: np.ndarray, targets: np.ndarray, probes: Probes) -> np.ndarray:
    """Outcome codes (index into OUTCOMES, int8 (M,)) of end points ``ends`` started from probes ``targets``.

    The first that applies wins: return (equals its own probe), train (another training sample), valid, invalid.
    """
    if ends.shape != targets.shape:
        raise ValueError(f"ends {ends.shape} and targets {targets.shape} must have the same shape")
    codes = np.full(len(ends), OUTCOMES.index("invalid"), dtype=np.int8)
    codes[probes.validate(ends)] = OUTCOMES.index("valid")
    codes[np.isin(_row_keys(ends, probes.k), _row_keys(probes.train, probes.k))] = OUTCOMES.index("train")
    codes[(ends == targets).all(1)] = OUTCOMES.index("return")
    return codes


def basin_radius(return_prob: np.ndarray, sigmas: np.ndarray):
    """Largest sigma with return probability >= 0.5, interpolated in log sigma (..., S) -> (radius, censored).

    Between the last grid point at or above 0.5 and the next one, the crossing is placed linearly in log sigma.
    0 when no grid point reaches 0.5; the top of the grid (censored) when the last one does.
    """
    p = np.asarray(return_prob, dtype=np.float64)
    log_s = np.log(np.asarray(sigmas, dtype=np.float64))
    above = p >= 0.5
    n = p.shape[-1]
    last = np.where(above.any(-1), n - 1 - np.argmax(above[..., ::-1], axis=-1), -1)
    censored = last == n - 1
    j = np.clip(last, 0, n - 2)
    p_j = np.take_along_axis(p, j[..., None], -1)[..., 0]
    p_next = np.take_along_axis(p, (j + 1)[..., None], -1)[..., 0]
    frac = np.where(p_j > p_next, (p_j - 0.5) / np.where(p_j > p_next, p_j - p_next, 1.0), 0.0)
    radius = np.exp(log_s[j] + frac * (log_s[j + 1] - log_s[j]))
    radius = np.where(censored, np.exp(log_s[-1]), np.where(last < 0, 0.0, radius))
    return radius, censored


# --- the measurement ------------------------------------------------------------------------
def _unravel(flat: torch.Tensor, shape) -> list[torch.Tensor]:
    """Row-major multi-index of flat indices (torch.unravel_index imports sympy: a second on first use)."""
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat = flat // size
    return index[::-1]


@torch.no_grad()
def measure(denoise, encode, decode, probes: Probes, sigmas, *, draws: int = DEFAULTS["draws"],
            steps: int = DEFAULTS["steps"], seed: int = DEFAULTS["seed"], chunk: int = DEFAULTS["chunk"],
            device="cpu") -> dict:
    """Return probabilities, outcome fractions, basin radii and per-sigma losses of the three probe sets.

    ``denoise(x, sigma (B,)) -> D(x; sigma)`` with a ``sigma_data`` attribute (a DiT, an EmpiricalDenoiser);
    ``encode(uint8 cells tensor) -> x0``; ``decode(x) -> uint8 cells tensor``. Every (class, probe, sigma, draw)
    is one row of a single batch, run through EDM's Heun sampler with one schedule per row, ``chunk`` rows at a time.
    """
    sigmas = check_sigmas(sigmas)
    if draws < 1 or steps < 1 or chunk < 1:
        raise ValueError(f"draws, steps and chunk must be >= 1, got draws={draws}, steps={steps}, chunk={chunk}")
    n_classes, n_probes, n_sigmas = len(PROBE_CLASSES), probes.n_probes, len(sigmas)
    cells = np.stack([probes.cells[name] for name in PROBE_CLASSES])  # (3, K, n_cells)
    x0 = encode(torch.from_numpy(cells.reshape(-1, cells.shape[-1])).to(device))
    x0 = x0.reshape(n_classes, n_probes, *x0.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn((n_classes, n_probes, draws, *x0.shape[2:]), generator=generator).to(device, x0.dtype)
    sigma_rows = torch.tensor(sigmas, dtype=torch.float32, device=device)
    schedules = torch.stack([edm.sigma_schedule(steps, SIGMA_END, float(s), RHO, device=device) for s in sigmas])

    shape = (n_classes, n_probes, n_sigmas, draws)
    n_rows = int(np.prod(shape))
    ends = np.empty((n_rows, cells.shape[-1]), dtype=np.uint8)
    losses = torch.empty(n_rows, device=device)
    for start in range(0, n_rows, chunk):
        rows = torch.arange(start, min(start + chunk, n_rows), device=device)
        c, i, s, r = _unravel(rows, shape)
        clean, noise, sigma = x0[c, i], eps[c, i, r], sigma_rows[s]
        losses[rows] = edm.loss_at(denoise, clean, sigma, noise)
        end = edm.heun(denoise, clean + sigma.reshape(-1, *[1] * (clean.ndim - 1)) * noise, schedules[s].T)
        ends[start:start + len(rows)] = decode(end).cpu().numpy()

    targets = np.repeat(cells.reshape(-1, cells.shape[-1]), n_sigmas * draws, axis=0)
    codes = classify(ends, targets, probes).reshape(shape)
    return_prob = (codes == OUTCOMES.index("return")).mean(-1)  # (3, K, S)
    radius, censored = basin_radius(return_prob, sigmas)
    loss = losses.reshape(shape).mean((1, 3)).cpu().numpy()  # (3, S)
    result = {"sigmas": sigmas.tolist(), "n_probes": n_probes, "draws": draws, "steps": steps, "seed": seed,
              "classes": {}}
    for c, name in enumerate(PROBE_CLASSES):
        q25, median, q75 = np.quantile(radius[c], [0.25, 0.5, 0.75])
        result["classes"][name] = {
            "radius_median": float(median), "radius_q25": float(q25), "radius_q75": float(q75),
            "censored_frac": float(censored[c].mean()), "zero_frac": float((radius[c] == 0).mean()),
            "return_prob": return_prob[c].mean(0).tolist(),
            "outcomes": {o: (codes[c] == j).mean((0, 2)).tolist() for j, o in enumerate(OUTCOMES)},
            "loss": loss[c].tolist(),
            "radii": radius[c].tolist(),
        }
    return result


# --- a run directory ------------------------------------------------------------------------
def _run_dataset(run_dir: Path, config, task):
    """The run's training and held-out sets, drawn again by the training driver's own function.

    Checked against the run's last evaluation: its saved nearest-neighbour distances must come out the same on the
    redrawn training set, or the copies we classify would be copies of a different set.
    """
    dataset = run_dataset(config, task)
    evaluated = [row["step"] for row in rundir.read_metrics(run_dir)]
    if evaluated:
        saved = rundir.load_eval_samples(run_dir, evaluated[-1:])
        samples = bits.unpack(saved["keys"][0], task.n_cells, task.k)
        nearest = dataset.train[saved["nn_idx"][0][:, 0]]
        if not np.array_equal((samples != nearest).sum(1), saved["nn_dist"][0][:, 0]):
            raise ValueError(f"{run_dir}: the training set drawn again from config.json does not match the one "
                             "the run evaluated against (was it trained by another version of innovwin?)")
    return dataset


def select_snapshots(available: list[int], which="all") -> list[int]:
    """``"all"``, or a comma-separated string / list of steps that must all have snapshots."""
    if which == "all":
        return list(available)
    try:
        steps = [int(s) for s in (which.split(",") if isinstance(which, str) else which)]
    except ValueError:
        raise ValueError(f"snapshots must be 'all' or comma-separated steps, got {which!r}") from None
    missing = sorted(set(steps) - set(available))
    if missing:
        raise ValueError(f"no snapshot at step(s) {missing}; the run has {available}")
    return sorted(set(steps))


def _fingerprint(path: Path) -> str:
    """Hash of a snapshot file: a row is reused only for the weights it was measured on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def measure_run(run_dir, *, n_probes: int | None = None, sigmas=None, draws: int = DEFAULTS["draws"],
                steps: int = DEFAULTS["steps"], snapshots="all", seed: int = DEFAULTS["seed"],
                chunk: int = DEFAULTS["chunk"], device="auto",
                progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Dissect every chosen snapshot of a diffusion run: writes basins.jsonl (one row per step).

    ``n_probes`` defaults to DEFAULTS["n_probes"], or to the run's training or held-out set size if smaller.
    The probes (seeded by ``seed``) and the noises are the same at every snapshot, so rows differ only because the
    model did. basins.jsonl is rewritten after each snapshot; rows already there with the same settings are kept
    rather than measured again, so an interrupted dissection resumes and adding snapshots costs only the new ones.
    A row measured under other settings (or of a snapshot since replaced) is never dropped: it stays in the file,
    labelled by its settings and snapshot. Returns this dissection's rows (what the figures draw).
    """
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir).resolved()
    task = tasks.make(config.task)
    objective = objectives.get(config.arch).build_objective(task, config)
    if not isinstance(objective, Denoising):
        raise ValueError(f"{run_dir} trained a {config.arch}: basins needs a diffusion run (a denoiser to integrate)")
    available = rundir.snapshot_steps(run_dir)
    if not available:
        raise ValueError(f"{run_dir} has no model snapshots (train with snapshots = true)")
    chosen = select_snapshots(available, snapshots)
    sigmas = check_sigmas(sigma_grid() if sigmas is None else sigmas)
    device = resolve_device(str(device))
    dataset = _run_dataset(run_dir, config, task)
    if n_probes is None:  # the default, or fewer when the run has fewer samples; an explicit K is checked
        n_probes = min(DEFAULTS["n_probes"], len(dataset.train), len(dataset.heldout))
    probes = make_probes(dataset.train, dataset.heldout, task.validate, task.k, n_probes, seed)

    settings = {"sigmas": sigmas.tolist(), "n_probes": n_probes, "draws": draws, "steps": steps, "seed": seed}
    kept = read_basins(run_dir)  # every measured row stays, each labelled by its snapshot and settings
    done = {(row["step"], row.get("snapshot")): row for row in kept if all(row[k] == v for k, v in settings.items())}
    rows = []
    for step in chosen:
        snapshot = _fingerprint(rundir.step_path(run_dir, rundir.SNAPSHOTS, step, "pt"))
        if (step, snapshot) in done:  # this very snapshot, measured with the same settings: the same numbers
            rows.append(done[step, snapshot])
            continue
        _, model = rundir.load_snapshot(run_dir, step)
        model.to(device)
        started = time.perf_counter()
        row = {"step": step, "snapshot": snapshot, "task": task.spec,
               **measure(objective.denoiser(model), objective.encode, objective.decode, probes, sigmas, draws=draws, steps=steps, seed=seed,
                         chunk=chunk, device=device)}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        kept.append(row)
        write_jsonl(run_dir / rundir.BASINS, sorted(kept, key=lambda one: one["step"]))
        if progress is not None:
            progress(row)
    return rows


def read_basins(run_dir) -> list[dict]:
    """The rows of a run's basins.jsonl (empty when it has none); a garbled file or a row of another shape is
    refused, named."""
    path = Path(run_dir) / rundir.BASINS
    fix = "delete it to measure every snapshot again"
    try:
        lines = path.read_text().splitlines() if path.exists() else []
        rows = [(number, json.loads(line)) for number, line in enumerate(lines, start=1) if line]
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is garbled; {fix}") from None
    return [schemas.check(row, f"{path} line {number}", schemas.BASINS_ROW, schemas.BASINS_OPTIONAL, fix=fix)
            for number, row in rows]
