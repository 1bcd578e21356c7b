"""Sweep specs shipped with innovwin: `innovwin sweep --preset NAME --store DIR` (see innovwin.sweeps.spec)."""
