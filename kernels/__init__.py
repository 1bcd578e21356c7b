"""Triton GPU kernels, installed as ``innovwin.kernels``.

Each kernel module holds the kernel and its launcher, with the pure-PyTorch reference it is tested against beside
it (the Hamming search's references in ``hamming_reference``, which needs no Triton: the CPU search uses them).
On a machine without CUDA they run under ``TRITON_INTERPRET=1`` (how the tests check them).
"""
