"""What every task shares: spec parameters, input checks and the choice of validation backend.

A task is a set of valid configurations of ``n_cells`` cells (row-major grid ``shape``, values
0..k-1). Subclasses say how to sample it, how to check it with numpy (the reference) and which
native validator checks it on packed keys; this class does the rest once.
"""
from __future__ import annotations

import numpy as np

from innovwin import bits
from innovwin._native_loader import native

BACKENDS = ("auto", "native", "numpy")
NUMPY_CHUNK = 1 << 16  # rows per numpy reference call: bounds its temporaries (~100 MB for 9x9 Sudoku)
REQUIRED = object()  # marks a spec parameter without a default
MAX_SIDE = 64  # grid rows or columns: 4096 cells already outgrow every model and search here


def as_int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def as_side(value) -> int:
    """A grid's rows or columns: an integer in 1..MAX_SIDE (a size <= 0 would make an empty or negative grid)."""
    side = as_int(value)
    if not 1 <= side <= MAX_SIDE:
        raise ValueError(f"expected an integer in 1..{MAX_SIDE}, got {side}")
    return side


def as_seed(value) -> int:
    seed = as_int(value)
    if seed < 0:
        raise ValueError(f"expected a seed >= 0, got {seed}")
    return seed


class Task:
    """Base of all tasks. Subclasses set ``name``, ``PARAMS`` and, in ``__init__``, the attributes
    ``params`` (canonical values, in spec order), ``shape``, ``k``, ``complexity`` (and ``complexity_params``,
    the spec parameters that set it), ``n_valid``, ``n_constraints``."""

    name: str = ""
    # spec key -> (converter, default); REQUIRED means the spec must give it.
    PARAMS: dict = {}
    example: str = ""  # a spec string to show in messages and the CLI
    params: dict
    shape: tuple[int, int]
    k: int
    complexity: float
    # the spec parameters that set ``complexity``; None: the task names none and pools with no other (family)
    complexity_params: tuple[str, ...] | None = None
    n_valid: int | None
    n_constraints: int

    @classmethod
    def from_params(cls, raw: dict[str, str]) -> "Task":
        """Build from the string values of a spec, naming unknown or malformed parameters."""
        unknown = sorted(set(raw) - set(cls.PARAMS))
        if unknown:
            raise ValueError(
                f"{cls.name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(cls.PARAMS)}"
            )
        kwargs = {}
        for key, (convert, default) in cls.PARAMS.items():
            if key in raw:
                try:
                    kwargs[key] = convert(raw[key])
                except ValueError as error:
                    raise ValueError(f"{cls.name}: parameter {key}: {error}") from None
            elif default is REQUIRED:
                raise ValueError(f"{cls.name}: parameter {key}= is required (spec e.g. {cls.example})")
            else:
                kwargs[key] = default
        return cls(**kwargs)

    @property
    def spec(self) -> str:
        """Canonical spec string; ``make(task.spec)`` rebuilds the same task."""
        return f"{self.name}:" + ",".join(f"{key}={value}" for key, value in self.params.items())

    @property
    def family(self) -> str:
        """The spec without the parameters that set ``complexity``, e.g. ``rule:h=6,w=6,pred=majority``: the
        tasks one fit of tau_rule against complexity may pool. By name alone, majority-of-3 and weight-2-of-4
        (both ``rule``, complexity 3 and 4) would be fitted as one power law."""
        if self.complexity_params is None:
            return self.spec
        rest = ",".join(f"{key}={value}" for key, value in self.family_params().items())
        return f"{self.name}:{rest}" if rest else self.name

    def family_params(self) -> dict:
        return {key: value for key, value in self.params.items() if key not in self.complexity_params}

    @property
    def n_cells(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_words(self) -> int:
        return bits.n_words(self.n_cells, self.k)

    def __repr__(self) -> str:
        return f"Task({self.spec!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Task) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    # --- sampling -----------------------------------------------------------------------
    sample_chunk: int | None = None  # a sampler whose draws come in chunks of this many samples, one after the
    # other from one generator (so drawing chunk by chunk gives the same samples): it can report progress

    def sample(self, n: int, seed: int, progress=None) -> np.ndarray:
        """``n`` valid configurations, uint8 (n, n_cells); see each task for the distribution. ``progress(done,
        n)`` is called after each chunk of a chunked sampler (:attr:`sample_chunk`), the same samples either way."""
        n = as_int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if isinstance(seed, (int, np.integer)) and seed < 0:  # (a SeedSequence is taken as it is)
            raise ValueError(f"seed must be >= 0, got {seed}")
        if n == 0:
            return np.zeros((0, self.n_cells), dtype=np.uint8)
        rng = np.random.default_rng(seed)
        if progress is None or self.sample_chunk is None:
            out = self._sample(n, rng)
        else:
            out = []
            for start in range(0, n, self.sample_chunk):
                out.append(self._sample(min(self.sample_chunk, n - start), rng))
                progress(start + len(out[-1]), n)
            out = np.concatenate(out)
        return np.ascontiguousarray(out, dtype=np.uint8).reshape(n, self.n_cells)

    def sample_seconds(self, n: int) -> float | None:
        """About how long :meth:`sample` takes for ``n`` samples, where that can be long (an exact sampler's
        chains); None for a sampler that is fast at any size the commands allow."""
        return None

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------
    def validate(self, cells, backend: str = "auto") -> np.ndarray:
        """bool (n,): is each configuration valid."""
        if self._use_native(backend):  # the packer checks the values in the same pass
            return self.validate_packed(bits.pack(self.check_cells(cells, values=False), self.k), backend="native")
        return self._numpy_reference(self.check_cells(cells)).all(axis=1)

    def constraints(self, cells, backend: str = "auto") -> np.ndarray:
        """bool (n, n_constraints): which constraint (group, check, row/column/box) holds."""
        if self._use_native(backend):
            return self.constraints_packed(bits.pack(self.check_cells(cells, values=False), self.k), backend="native")
        return self._numpy_reference(self.check_cells(cells))

    def validate_packed(self, keys, backend: str = "auto", threads: int = 0) -> np.ndarray:
        """bool (n,) on packed keys (``innovwin.bits.pack``): the hot path, packed once, validated often.

        Bits or nibbles past ``n_cells`` are ignored; a nibble >= k is a violation."""
        keys = self.check_keys(keys)
        if self._use_native(backend):
            return self._native(keys, False, threads)
        return self._numpy_reference(bits.unpack(keys, self.n_cells, self.k)).all(axis=1)

    def constraints_packed(self, keys, backend: str = "auto", threads: int = 0) -> np.ndarray:
        """bool (n, n_constraints) on packed keys."""
        keys = self.check_keys(keys)
        if self._use_native(backend):
            return self._native(keys, True, threads)
        return self._numpy_reference(bits.unpack(keys, self.n_cells, self.k))

    def _numpy_reference(self, cells: np.ndarray) -> np.ndarray:
        """``_constraints_numpy`` over chunks of rows, so a million samples fit in memory."""
        out = np.empty((len(cells), self.n_constraints), dtype=bool)
        for start in range(0, len(cells), NUMPY_CHUNK):
            out[start:start + NUMPY_CHUNK] = self._constraints_numpy(cells[start:start + NUMPY_CHUNK])
        return out

    def _constraints_numpy(self, cells: np.ndarray) -> np.ndarray:
        """Reference check on uint8 cells; values >= k (from garbage keys) must count as violations."""
        raise NotImplementedError

    def _native(self, keys: np.ndarray, per_constraint: bool, threads: int) -> np.ndarray:
        raise NotImplementedError

    # --- input checks -------------------------------------------------------------------
    def check_cells(self, cells, values: bool = True) -> np.ndarray:
        """Type and shape checked cells; ``values`` also checks every cell is below k (a pass over the data)."""
        if not isinstance(cells, np.ndarray):
            raise ValueError(f"cells must be a numpy uint8 array, got {type(cells).__name__}")
        if cells.dtype != np.uint8:
            raise ValueError(f"cells must be uint8, got {cells.dtype}")
        if cells.ndim != 2 or cells.shape[1] != self.n_cells:
            raise ValueError(
                f"cells for {self.spec} must have shape (n, {self.n_cells}), got {tuple(cells.shape)}"
            )
        if values and cells.size and int(cells.max()) >= self.k:
            raise ValueError(f"cell value {int(cells.max())} is outside the alphabet 0..{self.k - 1}")
        return np.ascontiguousarray(cells)

    def check_keys(self, keys) -> np.ndarray:
        if not isinstance(keys, np.ndarray) or keys.dtype != np.uint64:
            got = keys.dtype if isinstance(keys, np.ndarray) else type(keys).__name__
            raise ValueError(f"packed keys must be a numpy uint64 array, got {got}")
        if keys.ndim != 2 or keys.shape[1] != self.n_words:
            raise ValueError(
                f"packed keys for {self.spec} must have shape (n, {self.n_words}), got {tuple(keys.shape)}"
            )
        return np.ascontiguousarray(keys)

    @staticmethod
    def _use_native(backend: str) -> bool:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "native" and native is None:
            raise ValueError("backend 'native' requested but the C++ extension innovwin._native is not built")
        return backend != "numpy" and native is not None
