"""Whole graphs: one training step, and forward alone, of each workload in workloads.py.

A training step is ``Forward(); Backward(L); UpdateParameters()`` on a fixed
batch. The contenders are named as in compare.py: "cedf" (compiled kernels),
"cedf numpy" (cedf on its NumPy reference backend), and two reference points:
"lecture" (the lecture's EDF in NumPy, `cedf.lecture`) and "floor" (only the
matrix products a step cannot avoid, by NumPy's BLAS into ready buffers);
"floor scipy" is the same products through SciPy's BLAS, cedf's fallback.
`Memory` is the peak memory of 100 training steps of mlp_mnist.
"""
import numpy as np

import cedf
from cedf import lecture

from .workloads import WORKLOADS, edf_forward, edf_step, floor_forward, floor_step

CONTENDERS = ["cedf", "cedf numpy", "lecture", "floor", "floor scipy"]
DTYPES = ["float32", "float64"]


def _make(what, contender, workload, dtype):
    """The step or forward function (`what`) of `contender` on `workload`, warmed up."""
    dtype = np.dtype(dtype).type
    if contender.startswith("floor"):
        blas = "scipy" if contender == "floor scipy" else "numpy"
        fn = {"step": floor_step, "forward": floor_forward}[what](workload, dtype, blas)
    else:
        edf = lecture if contender == "lecture" else cedf
        cedf.set_backend("numpy" if contender == "cedf numpy" else "cython")
        fn = {"step": edf_step, "forward": edf_forward}[what](edf, workload, dtype)
    # cedf's first step runs node by node and compiles the graph's plan, the
    # second builds the backward program; later steps are what a training loop
    # sees (and a --quick run times a single call).
    for _ in range(3):
        fn()
    return fn


class _Graph:
    params = [list(WORKLOADS), CONTENDERS, DTYPES]
    param_names = ["workload", "contender", "dtype"]
    # The lecture's EDF takes 1-2 s a step of mlp_large; asv's default sampling then spends
    # ~20 s on it (2 rounds of at most 10 s) after the setup, well inside this limit.
    timeout = 300


class TrainingStep(_Graph):
    def setup(self, workload, contender, dtype):
        self.step = _make("step", contender, workload, dtype)

    def time_step(self, *_):
        self.step()


class Forward(_Graph):
    def setup(self, workload, contender, dtype):
        self.forward = _make("forward", contender, workload, dtype)

    def time_forward(self, *_):
        self.forward()


class Memory:
    """cedf reuses its buffers from step to step, so 100 steps should peak no higher than one."""
    params = [["cedf", "cedf numpy"], DTYPES]
    param_names = ["contender", "dtype"]

    def setup(self, contender, dtype):
        self.step = _make("step", contender, "mlp_mnist", dtype)

    def peakmem_100_steps(self, *_):
        for _ in range(100):
            self.step()
