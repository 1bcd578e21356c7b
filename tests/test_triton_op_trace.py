"""torch.compile(fullgraph=True) traces the attention op's forward and backward into Triton kernel nodes.

On a GPU the ops are ``torch.library.triton_op``s: Inductor should see ``triton_kernel_wrapper_functional``
calls of our kernels (not an opaque custom op) and clone none of the inputs (torch's mutation analysis
finds that the kernels write only their outputs). The trace runs in a subprocess without TRITON_INTERPRET
(``_trace_triton_ops.py``, no kernel launches); the interpreter path itself is checked end to end by
test_attention.py::test_compiles_into_one_graph.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FWD, DQ, DKDV = "_attention_fwd_kernel", "_attention_bwd_dq_kernel", "_attention_bwd_dkdv_kernel"


@pytest.fixture(scope="module")
def traced():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(HERE / "_trace_triton_ops.py")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["op", "module"])
def test_forward_and_backward_are_triton_kernel_nodes(traced, case):
    graphs = traced[case]
    assert graphs["forward"]["kernels"] == [FWD]
    assert graphs["backward"]["kernels"] == [DQ, DKDV]
    assert graphs["forward"]["custom_ops"] == [] and graphs["backward"]["custom_ops"] == []


def test_kernels_clone_only_the_outputs_they_write(traced):
    """Without the mutation analysis (e.g. no target to build TTIR for) torch clones every tensor argument."""
    clones = {**traced["op"]["forward"]["tensors_to_clone"], **traced["op"]["backward"]["tensors_to_clone"]}
    assert clones[FWD] == ["LSE", "O"]
    assert clones[DQ] == ["DELTA", "DQ"]
    assert clones[DKDV] == ["DK", "DV"]
