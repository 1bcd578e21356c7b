"""Memorization search: each generation's nearest training samples, over the C++ and Triton kernels.

``NearestIndex`` (a training set packed once, searched by many query batches), ``nearest`` (one-off search) and
``nearest_l2`` (the float counterpart for a DiT's undecoded outputs); see :mod:`innovwin.search.index`.
"""
from innovwin.search.index import BACKENDS, NearestIndex, nearest, nearest_l2, nearest_numpy

__all__ = ["BACKENDS", "NearestIndex", "nearest", "nearest_l2", "nearest_numpy"]
