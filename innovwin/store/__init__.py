"""Persistence: the run directory (what one run writes, and how it is read back) and the sweep store (one SQLite
table of runs beside their run directories). The trainer writes these; analyses and reports only read them.
"""
from innovwin.store.runstore import RunStore

__all__ = ["RunStore"]
