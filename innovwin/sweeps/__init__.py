"""Sweeps: a spec (TOML grid) expands into runs; a plan queues the runs still to do as jobs (a run alone, or the
members of a stacked ensemble); the driver hands the jobs to an executor (local processes or Ray) and records each
run's outcome in the store as it lands. Shipped specs live in ``presets/``.
"""
