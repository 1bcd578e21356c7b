"""``innovwin tasks | sample | validate``: list the tasks, print samples, check a file of samples.

``validate`` exits 0 when every sample is valid and 1 when any is not (so scripts can branch on it)."""
from __future__ import annotations

import numpy as np

from innovwin import bits
from innovwin.tasks import TASKS, make
from innovwin.tasks.pace import sampling_progress

MAX_SAMPLES = 10**6  # `sample --n`: more would take minutes and gigabytes (9x9 Sudoku), never a useful printout
MAX_SAMPLE_S = 3600.0  # `sample` refuses a draw estimated slower than this (a slow one reports progress)

# The task table of `innovwin tasks`: each family's example plus the sweep points we use most.
TABLE_SPECS = [
    "parity:h=6,w=6,g=2",
    "parity:h=6,w=6,g=3",
    "parity:h=6,w=6,g=4",
    "parity:h=6,w=6,g=6",
    "parity:h=6,w=6,g=2x3",
    "parity:h=6,w=6,g=4,layout=random,seed=0",
    "rule:h=6,w=6,g=3,pred=majority",
    "rule:h=6,w=6,g=4,pred=uniform",
    "rule:h=6,w=6,g=4,pred=weight,k=2",
    "linear:h=6,w=6,checks=rowcol",
    "linear:h=6,w=6,checks=sparse,m=12,weight=4,seed=0",
    "latin:n=5",
    "latin:n=7",
    "sudoku:n=4",
    "sudoku:n=6",
    "sudoku:n=9",
]


def format_count(n_valid: int | None) -> str:
    if n_valid is None:
        return "unknown"
    if n_valid < 10**7:
        return str(n_valid)
    return f"2^{n_valid.bit_length() - 1}" if n_valid & (n_valid - 1) == 0 else f"{n_valid:.4e}"


def format_grid(cells: np.ndarray, shape: tuple[int, int], k: int) -> str:
    """One sample as rows of symbols: '.' and '#' for bits, digits for k-valued cells."""
    symbols = ".#" if k == 2 else "0123456789abcdef"
    return "\n".join(" ".join(symbols[v] for v in row) for row in cells.reshape(shape))


def run_tasks(args) -> int:
    rows = [(spec.split(":")[0], spec, make(spec)) for spec in TABLE_SPECS]
    print(f"{'name':<8} {'spec':<48} {'|V|':>12} {'complexity':>10}")
    for name, spec, task in rows:
        print(f"{name:<8} {spec:<48} {format_count(task.n_valid):>12} {task.complexity!s:>10}")
    print(f"\ntask names: {', '.join(TASKS)}; a spec is name:key=value,... (see `innovwin sample SPEC`)")
    return 0


def run_sample(args) -> int:
    if not 0 <= args.n <= MAX_SAMPLES:
        raise ValueError(f"--n must be in 0..{MAX_SAMPLES}, got {args.n}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    task = make(args.spec)
    check_sampling_time(task, args.n)
    cells = task.sample(args.n, seed=args.seed, progress=sampling_progress(task, args.n))
    if args.out:
        out = args.out if args.out.endswith(".npy") else f"{args.out}.npy"  # where np.save writes it
        np.save(out, cells)
        print(f"wrote {len(cells)} samples of {task.spec} to {out}")
        return 0
    for i, sample in enumerate(cells):
        print(f"# {task.spec} sample {i} (seed {args.seed})")
        print(format_grid(sample, task.shape, task.k))
        print()
    return 0


def check_sampling_time(task, n: int) -> None:
    """Refuse a draw estimated slower than :data:`MAX_SAMPLE_S` (an exact sampler's chains), saying how many fit."""
    estimate = task.sample_seconds(n)
    if estimate is not None and estimate > MAX_SAMPLE_S:
        fit = max(n * MAX_SAMPLE_S // estimate, 1)
        raise ValueError(f"sampling {n} of {task.spec} would take about {estimate / 3600:.1f} h (an exact sampler's "
                         f"chains); ask for fewer with --n (about {fit:.0f} fit in {MAX_SAMPLE_S / 3600:.0f} h)")


def load_samples(task, path: str) -> np.ndarray:
    """Cells from a .npy file: uint8 (n, n_cells) or (n, h, w), or packed uint64 keys (n, words)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:  # not a .npy file, truncated, or pickled objects
        raise ValueError(f"{path} is not a readable .npy array ({error})") from None
    if not isinstance(data, np.ndarray):
        raise ValueError(f"{path} is a .npz archive; give one .npy array")
    if data.dtype == np.uint64:
        return bits.unpack(task.check_keys(data), task.n_cells, task.k)
    if data.ndim == 3 and data.shape[1:] == task.shape:
        data = data.reshape(len(data), task.n_cells)
    return task.check_cells(data)


def run_validate(args) -> int:
    if args.show < 0:
        raise ValueError(f"--show must be >= 0, got {args.show}")
    task = make(args.spec)
    cells = load_samples(task, args.file)
    held = task.constraints(cells, backend=args.backend)
    valid = held.all(axis=1)
    n = len(cells)
    share = f"{valid.mean():.1%}" if n else "n/a"
    print(f"{task.spec}: {n} samples, {int(valid.sum())} valid ({share}); "
          f"constraints held: {held.mean() if n else float('nan'):.1%} of {task.n_constraints} per sample")
    invalid = np.nonzero(~valid)[0]
    for i in invalid[: args.show]:
        failed = np.nonzero(~held[i])[0]
        print(f"  sample {i}: {len(failed)} constraint(s) fail: {', '.join(map(str, failed[:12]))}"
              + (" ..." if len(failed) > 12 else ""))
    if len(invalid) > args.show:
        print(f"  ... and {len(invalid) - args.show} more invalid samples")
    if len(invalid):
        print(f"{len(invalid)} of {n} samples are invalid")
        return 1
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("tasks", help="list the tasks with an example spec, |V| and complexity")
    p.set_defaults(func=run_tasks)

    p = subparsers.add_parser("sample", help="print (or save) valid samples of a task")
    p.add_argument("spec", help="task spec, e.g. parity:h=6,w=6,g=3 or sudoku:n=4")
    p.add_argument("--n", type=int, default=5, help=f"number of samples, up to {MAX_SAMPLES} (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save the samples as uint8 (n, n_cells) to this .npy file instead of printing")
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser("validate", help="check samples in a .npy file against a task (exit 1 if any is invalid)")
    p.add_argument("spec", help="task spec the samples should satisfy")
    p.add_argument("file", help=".npy with uint8 cells (n, n_cells) or (n, h, w), or packed uint64 keys")
    p.add_argument("--backend", choices=["auto", "native", "numpy"], default="auto")
    p.add_argument("--show", type=int, default=10, help="list this many invalid samples (default 10)")
    p.set_defaults(func=run_validate)


