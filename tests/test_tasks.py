"""Tasks: spec parsing, exact counts by brute force, sampling validity and uniformity, bad input."""
import itertools

import numpy as np
import pytest

from innovwin import bits, tasks

SPECS = [
    "parity:h=6,w=6,g=2",
    "parity:h=6,w=6,g=3",
    "parity:h=6,w=6,g=2x3",
    "parity:h=6,w=6,g=4,layout=random,seed=5",
    "rule:h=6,w=6,g=3,pred=majority",
    "rule:h=6,w=6,g=6,pred=uniform",
    "rule:h=6,w=6,g=4,pred=weight,k=1",
    "linear:h=6,w=6,checks=rowcol",
    "linear:h=5,w=7,checks=sparse,m=9,weight=5,seed=2",
    "latin:n=5",
    "sudoku:n=4",
    "sudoku:n=6",
    "sudoku:n=9",
]


def chi_square(samples: np.ndarray, n_valid: int) -> float:
    _, counts = np.unique(samples, axis=0, return_counts=True)
    expected = len(samples) / n_valid
    observed = np.concatenate([counts, np.zeros(n_valid - len(counts))])
    return float(((observed - expected) ** 2 / expected).sum())


def assert_uniform(samples, n_valid):
    """Chi-square against uniform; the bound sits ~5 standard deviations above the mean."""
    dof = n_valid - 1
    assert chi_square(samples, n_valid) < dof + 5 * np.sqrt(2 * dof)


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips_and_samples_are_valid(spec):
    task = tasks.make(spec)
    assert tasks.make(task.spec).spec == task.spec
    cells = task.sample(40, seed=1)
    assert cells.dtype == np.uint8 and cells.shape == (40, task.n_cells)
    assert task.validate(cells, backend="numpy").all()
    assert task.constraints(cells, backend="numpy").shape == (40, task.n_constraints)
    np.testing.assert_array_equal(task.sample(40, seed=1), cells)  # seeded
    assert not np.array_equal(task.sample(40, seed=2), cells)


def test_names_and_canonical_specs():
    assert tasks.names() == ["parity", "rule", "linear", "latin", "sudoku"]
    assert tasks.make(" parity: g=3 , h=6,w=6").spec == "parity:h=6,w=6,g=3"
    assert tasks.make("parity:g=2x3").spec == "parity:h=6,w=6,g=2x3"
    assert tasks.make("parity:g=2,layout=rows").spec == "parity:h=6,w=6,g=2"


def all_bit_grids(n_cells):
    return ((np.arange(2 ** n_cells)[:, None] >> np.arange(n_cells)) & 1).astype(np.uint8)


@pytest.mark.parametrize(
    "spec",
    [
        "parity:h=3,w=4,g=2",
        "parity:h=3,w=4,g=3",
        "parity:h=3,w=4,g=4",
        "parity:h=3,w=4,g=6",
        "parity:h=3,w=4,g=3x2",
        "parity:h=3,w=4,g=4,layout=random,seed=1",
        "rule:h=3,w=4,g=3,pred=majority",
        "rule:h=3,w=4,g=4,pred=uniform",
        "rule:h=3,w=4,g=6,pred=weight,k=2",
        "linear:h=3,w=4,checks=rowcol",
        "linear:h=3,w=4,checks=sparse,m=6,weight=3,seed=0",
        "linear:h=3,w=4,checks=sparse,m=20,weight=4,seed=3",  # more checks than rank
    ],
)
def test_n_valid_matches_brute_force_on_3x4(spec):
    task = tasks.make(spec)
    assert int(task.validate(all_bit_grids(12), backend="numpy").sum()) == task.n_valid


def all_row_permutation_grids(n):
    """Every n x n grid whose rows are permutations: (n!)^n candidates, a superset of Latin squares."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.uint8)
    index = np.array(list(itertools.product(range(len(perms)), repeat=n)))
    return perms[index].reshape(len(index), n * n)


def test_latin_4_and_sudoku_4_counts_by_brute_force():
    grids = all_row_permutation_grids(4)
    latin, sudoku = tasks.make("latin:n=4"), tasks.make("sudoku:n=4")
    assert latin.n_valid == int(latin.validate(grids, backend="numpy").sum()) == 576
    assert sudoku.n_valid == int(sudoku.validate(grids, backend="numpy").sum()) == 288


def test_known_counts():
    assert [tasks.make(f"latin:n={n}").n_valid for n in range(2, 8)] == [
        2, 12, 576, 161280, 812851200, 61479419904000]
    assert tasks.make("latin:n=11").n_valid == 776966836171770144107444346734230682311065600000
    assert tasks.make("latin:n=12").n_valid is None
    assert [tasks.make(f"sudoku:n={n}").n_valid for n in (4, 6, 9)] == [
        288, 28200960, 6670903752021072936960]
    assert tasks.make("parity:h=6,w=6,g=4").n_valid == 2 ** 27


@pytest.mark.parametrize(
    "spec, n",
    [
        ("parity:h=3,w=4,g=3", 25_600),  # 256 valid
        ("linear:h=3,w=3,checks=rowcol", 8_000),  # 16 valid
        ("rule:h=2,w=3,g=3,pred=majority", 3_200),  # 16 valid
        ("rule:h=2,w=4,g=4,pred=weight,k=2", 7_200),  # 36 valid
        ("latin:n=4", 6_000),  # 576 valid, Jacobson-Matthews
        ("sudoku:n=4", 3_000),  # 288 valid, enumerated
    ],
)
def test_sampling_is_uniform(spec, n):
    task = tasks.make(spec)
    assert_uniform(task.sample(n, seed=0), task.n_valid)


def test_sudoku_sampler_covers_all_6x6_grids_of_a_small_draw():
    task = tasks.make("sudoku:n=6")
    samples = task.sample(300, seed=0)
    assert task.validate(samples, backend="numpy").all()
    assert len(np.unique(samples, axis=0)) == 300  # 28,200,960 grids: a small draw has no repeats


def test_one_flipped_bit_breaks_parity():
    task = tasks.make("parity:h=6,w=6,g=3")
    cells = task.sample(36, seed=0)
    cells[np.arange(36), np.arange(36)] ^= 1
    assert not task.validate(cells, backend="numpy").any()
    broken = ~task.constraints(cells, backend="numpy")
    np.testing.assert_array_equal(broken.sum(axis=1), 1)
    np.testing.assert_array_equal(broken.argmax(axis=1), np.arange(36) // 3)


def test_sudoku_box_constraint_is_checked():
    latin_not_sudoku = ((np.arange(4)[:, None] + np.arange(4)) % 4).astype(np.uint8).reshape(1, 16)
    assert tasks.make("latin:n=4").validate(latin_not_sudoku, backend="numpy").all()
    held = tasks.make("sudoku:n=4").constraints(latin_not_sudoku, backend="numpy")[0]
    assert held[:8].all() and not held[8:].all()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope:n=3", "unknown task 'nope'; valid: parity, rule"),
        ("parity:h=6,w=6,g=3,colour=red", "unknown parameter(s) colour; valid: h, w, g"),
        ("parity:h=6,w=6", "parameter g= is required"),
        ("parity:h=6,w=6,g=5", "g=5 must divide h*w=36"),
        ("parity:h=6,w=6,g=4x4", "must tile the 6x6 grid"),
        ("parity:g=three", "parameter g: expected an integer"),
        ("parity:g=3,g=2", "given twice"),
        ("parity:g", "expected key=value"),
        ("parity:g=3,seed=4", "seed= only applies to layout=random"),
        ("parity:g=3,layout=spiral", "unknown layout='spiral'"),
        ("rule:g=4,pred=majority", "odd group size"),
        ("rule:g=3,pred=parity", "unknown pred='parity'"),
        ("rule:g=3,pred=weight,k=4", "pred=weight needs k= in 0..3"),
        ("linear:checks=sparse", "needs m= and weight="),
        ("linear:checks=diagonal", "unknown checks='diagonal'"),
        ("latin:n=17", "n must be in 2..16"),
        ("sudoku:n=5", "n must be one of 4, 6, 9"),
        ("", "non-empty string"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=None) as info:
        tasks.make(spec)
    assert message in str(info.value)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_bad_cells_raise(backend):
    task = tasks.make("sudoku:n=4")
    good = task.sample(3, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        task.validate(good.astype(np.int64), backend=backend)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        task.validate(good[:, :15], backend=backend)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        task.validate(good[0], backend=backend)
    with pytest.raises(ValueError, match="outside the alphabet 0..3"):
        task.validate(np.full((2, 16), 4, dtype=np.uint8), backend=backend)
    with pytest.raises(ValueError, match="numpy uint8 array"):
        task.validate(good.tolist(), backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        task.validate(good, backend="gpu")
    assert task.validate(good[:0], backend=backend).shape == (0,)
    assert task.constraints(good[:0], backend=backend).shape == (0, 12)
    with pytest.raises(ValueError, match="uint64"):
        task.validate_packed(good, backend=backend)
    with pytest.raises(ValueError, match=r"shape \(n, 1\)"):
        task.validate_packed(np.zeros((2, 2), dtype=np.uint64), backend=backend)
    with pytest.raises(ValueError, match="n must be >= 0"):
        task.sample(-1, seed=0)
    assert task.sample(0, seed=0).shape == (0, 16)


def test_packed_numpy_path_counts_out_of_alphabet_nibbles_as_violations():
    task = tasks.make("latin:n=3")
    square = np.array([[0, 1, 2, 1, 2, 0, 2, 0, 1]], dtype=np.uint8)
    keys = bits.pack(square, 3)
    assert task.validate_packed(keys, backend="numpy").all()
    garbage = keys | np.uint64(0xF)  # cell 0 becomes 15
    assert not task.validate_packed(garbage, backend="numpy").any()
    assert task.validate_packed(keys | np.uint64(0xF << 40), backend="numpy").all()  # past n_cells


TASKS_PROSE = (
    'name     spec                                                      |V| complexity\n'
    'parity   parity:h=6,w=6,g=2                                     262144          2\n'
    'parity   parity:h=6,w=6,g=3                                       2^24          3\n'
    'parity   parity:h=6,w=6,g=4                                       2^27          4\n'
    'parity   parity:h=6,w=6,g=6                                       2^30          6\n'
    'parity   parity:h=6,w=6,g=2x3                                     2^30          6\n'
    'parity   parity:h=6,w=6,g=4,layout=random,seed=0                  2^27          4\n'
    'rule     rule:h=6,w=6,g=3,pred=majority                           2^24          3\n'
    'rule     rule:h=6,w=6,g=4,pred=uniform                             512          4\n'
    'rule     rule:h=6,w=6,g=4,pred=weight,k=2                   1.0078e+07          4\n'
    'linear   linear:h=6,w=6,checks=rowcol                             2^25          6\n'
    'linear   linear:h=6,w=6,checks=sparse,m=12,weight=4,seed=0         2^24          4\n'
    'latin    latin:n=5                                              161280          5\n'
    'latin    latin:n=7                                          6.1479e+13          7\n'
    'sudoku   sudoku:n=4                                                288          4\n'
    'sudoku   sudoku:n=6                                         2.8201e+07          6\n'
    'sudoku   sudoku:n=9                                         6.6709e+21          9\n'
    '\n'
    'task names: parity, rule, linear, latin, sudoku; a spec is name:key=value,... (see `innovwin sample SPEC`)\n'
)


def test_tasks_command_prose(capsys):
    """`innovwin tasks`: the task table and the closing line, exactly."""
    from innovwin.cli import main

    assert main(["tasks"]) == 0
    assert capsys.readouterr().out == TASKS_PROSE


def test_cli_sample_validate(tmp_path, capsys):
    from innovwin.cli import main

    assert main(["sample", "sudoku:n=4", "--n", "2", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("# sudoku:n=4 sample") == 2
    path = tmp_path / "samples.npy"
    assert main(["sample", "parity:h=6,w=6,g=3", "--n", "8", "--out", str(path)]) == 0
    cells = np.load(path)
    cells[2, 0] ^= 1
    np.save(path, cells)
    capsys.readouterr()
    assert main(["validate", "parity:h=6,w=6,g=3", str(path)]) == 1  # an invalid sample: exit 1, counted
    report = capsys.readouterr().out
    assert "8 samples, 7 valid (87.5%)" in report and "sample 2: 1 constraint(s) fail: 0" in report
    assert "1 of 8 samples are invalid" in report
    assert main(["validate", "sudoku:n=4", str(path)]) == 2
    assert "must have shape (n, 16)" in capsys.readouterr().err


def test_without_the_extension_auto_falls_back_to_numpy(monkeypatch):
    import innovwin.tasks.base as base

    monkeypatch.setattr(base, "native", None)
    task = tasks.make("parity:h=6,w=6,g=3")
    cells = task.sample(10, seed=0)
    assert task.validate(cells).all() and task.validate_packed(bits.pack(cells)).all()
    with pytest.raises(ValueError, match="not built"):
        task.validate(cells, backend="native")


def test_a_slow_draw_says_its_estimate_and_a_fast_one_says_nothing():
    import io

    from innovwin.tasks.pace import sampling_progress

    stream = io.StringIO()
    assert sampling_progress(tasks.make("parity:h=4,w=4,g=2"), 10**6, stream) is None
    progress = sampling_progress(tasks.make("latin:n=16"), 1000, stream)
    progress(1000, 1000)
    assert stream.getvalue().splitlines()[0].startswith("sampling 1000 of latin:n=16: about ")
    assert stream.getvalue().splitlines()[1].startswith("  1000 of 1000 sampled")
