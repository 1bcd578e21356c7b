"""The basin dissection's probe classes and default settings, apart from its torch code so that the command line
can show them in ``innovwin basins --help`` without importing torch (see :mod:`innovwin.analysis.basins`)."""

PROBE_CLASSES = ("train", "novel", "invalid")
DEFAULTS = dict(n_probes=32, sigma_min=0.05, sigma_max=5.0, n_sigmas=12, draws=4, steps=12, seed=0, chunk=4096)
