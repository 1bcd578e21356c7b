"""Reports of a store or of one run directory, each module one part: the orchestration (``build``), the
headline (``headline``), the tables (``tables``), the seeds' spread (``seeds``), the threshold sensitivity
(``thresholds``), the figures (``drawing``: what they share; ``scaling_figures``: clocks across runs;
``run_figures``: one run's curves and the window map; ``basins_figures``: a diffusion run's basins) and
index.html (``page``). Every part reads the runs as :class:`innovwin.analysis.records.RunRecord`.
"""
from innovwin.report.build import build_report

__all__ = ["build_report"]
