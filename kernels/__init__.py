"""Triton GPU kernels, installed as ``innovwin.kernels``.

Each kernel module holds the kernel, its launcher and a pure-PyTorch reference beside it.
On a machine without CUDA they run under ``TRITON_INTERPRET=1`` (how the tests check them).
"""
