"""The MNIST-1D CNN of issue 15: one training step (Forward, Backward, Adam) in float32.

The same contenders as compare.py's "cnn_mnist1d" targets (see workloads.py):
cedf's planned step, PyTorch eager (its default threads, and 1 thread; skipped
when PyTorch is not installed) and the floor, the products of the unfolded
convolutions and of the last Affine alone.
"""
import numpy as np

import cedf

from .workloads import cnn_floor_step, cnn_step, import_torch, torch_cnn_step, torch_default_threads


class CnnStep:
    params = [["cedf", "torch", "torch 1 thread", "floor"]]
    param_names = ["contender"]

    def setup(self, contender):
        if contender == "cedf":
            cedf.set_backend("cython")
            self.step = cnn_step(np.float32)
        elif contender == "floor":
            self.step = cnn_floor_step(np.float32)
        else:
            try:
                torch = import_torch()
            except ImportError as e:   # asv skips a benchmark whose setup raises NotImplementedError
                raise NotImplementedError(f"{contender}: {e}") from None
            self.threads_before = torch.get_num_threads()
            torch.set_num_threads(1 if contender == "torch 1 thread" else torch_default_threads())
            self.step = torch_cnn_step(np.float32)
        for _ in range(3):   # cedf: the first runs node by node and compiles the plan
            self.step()

    def teardown(self, contender):
        if contender.startswith("torch"):
            import_torch().set_num_threads(self.threads_before)

    def time_step(self, *_):
        self.step()
