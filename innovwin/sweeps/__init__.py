"""Sweeps: a spec (TOML grid) expands into runs; the driver hands them to an executor (local processes or Ray) and
records each result in the store as it lands. Shipped specs live in ``presets/``.
"""
