"""Reports: tables, scaling fits and figures of a store, and the index.html that shows them (``build``); each grid
cell's seeds and their spread (``seeds``); the basin figures of a diffusion run (``basins_figures``).
"""
from innovwin.report.build import build_report

__all__ = ["build_report"]
