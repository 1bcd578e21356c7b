"""make_dataset: distinct valid training samples, a disjoint valid held-out set, clear refusals."""
import numpy as np
import pytest

from innovwin import bits, tasks
from innovwin.tasks.dataset import first_distinct, make_dataset


@pytest.mark.parametrize("spec", ["parity:h=6,w=6,g=3", "sudoku:n=4", "linear:h=10,w=10,checks=rowcol"])
def test_train_and_heldout_are_distinct_valid_and_disjoint(spec):
    data = make_dataset(spec, n=200, seed=0, n_heldout=50)
    task = data.task
    assert data.train.shape == (200, task.n_cells) and data.heldout.shape == (50, task.n_cells)
    assert data.train.dtype == np.uint8 and data.train_keys.dtype == np.uint64
    np.testing.assert_array_equal(data.train_keys, bits.pack(data.train, task.k))
    np.testing.assert_array_equal(data.heldout_keys, bits.pack(data.heldout, task.k))
    assert task.validate(data.train, backend="numpy").all() and task.validate(data.heldout, backend="numpy").all()
    keys = {row.tobytes() for row in np.concatenate([data.train_keys, data.heldout_keys])}
    assert len(keys) == 250
    assert data.chance_copy == 200 / task.n_valid


def test_seeded():
    a, b = make_dataset("parity:h=6,w=6,g=2", 100, seed=3), make_dataset("parity:h=6,w=6,g=2", 100, seed=3)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    assert not np.array_equal(make_dataset("parity:h=6,w=6,g=2", 100, seed=4).train, a.train)


def test_can_take_the_whole_valid_set():
    data = make_dataset(tasks.make("sudoku:n=4"), n=280, seed=0, n_heldout=8)
    assert len({row.tobytes() for row in np.concatenate([data.train, data.heldout])}) == 288


def test_refuses_more_than_the_valid_set():
    with pytest.raises(ValueError, match="only 64 valid configurations"):
        make_dataset("rule:h=6,w=6,g=6,pred=uniform", n=60, seed=0, n_heldout=5)
    with pytest.raises(ValueError, match="n >= 1"):
        make_dataset("parity:g=2", n=0, seed=0)


def test_gives_up_when_the_sampler_cannot_find_enough_distinct_samples():
    class Stuck(type(tasks.make("parity:h=2,w=2,g=2"))):
        """A task whose sampler only ever returns two configurations, claiming |V| unknown."""

        def __init__(self):
            super().__init__(h=2, w=2, g=2)
            self.n_valid = None

        def _sample(self, n, rng):
            return np.repeat(np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.uint8), (n + 1) // 2, axis=0)[:n]

    with pytest.raises(ValueError, match="found only 2 distinct valid samples"):
        make_dataset(Stuck(), n=3, seed=0, n_heldout=0)


def test_first_distinct_keeps_first_occurrences_in_order():
    keys = np.array([[5, 1], [2, 0], [5, 1], [0, 9], [2, 0]], dtype=np.uint64)
    np.testing.assert_array_equal(first_distinct(keys), [0, 1, 3])
