"""Test setup: Triton kernels run under the interpreter when there is no CUDA device.

The variable must be set before triton is first imported, hence here, at collection time.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The models under test are tiny: one intra-op thread is as fast as two and, unlike two,
# does not collapse when the cores are busy (OpenMP threads spin-waiting on each other).
torch.set_num_threads(1)
