"""The training loop (issue 14): labels of both kinds, the optimisers, fit, and the whole training.

The same workloads as compare.py's targets of issue 14 (see workloads.py):

- `StepLabels`: a cedf training step of each workload with int64 labels and with
  the same labels as integral float32 (compare.py's "step / floor" targets).
- `OptimizerStep`: ``Forward(); Backward(L)`` and then ``UpdateParameters()``
  (the bare step), ``cedf.optim.SGD(...).step()`` or ``cedf.optim.Adam(...).step()``,
  on mlp_mnist and on the MNIST-1D-sized MLP ("Adam step / SGD step").
- `FitEpoch`: one epoch of ``cedf.fit`` with Adam on the MNIST-1D-sized data
  (4000 examples, batch 100: 40 steps; "fit epoch / (40 x SGD step)").
- `EndToEnd`: the whole training, 30 epochs, by cedf's fit, PyTorch eager (its
  default threads, and 1 thread) and scikit-learn's MLPClassifier; seconds per
  epoch are its time / 30. PyTorch's and scikit-learn's are skipped (asv shows
  them as such) when those are not installed.
"""
import numpy as np

import cedf

from .workloads import (
    LABELS,
    MLP_MNIST1D,
    MNIST1D,
    WORKLOADS,
    cedf_training,
    edf_step,
    fit_epoch,
    mnist1d_data,
    optimizer_step,
    sgd_step,
    sklearn_training,
    torch_default_threads,
    torch_training,
)

DTYPES = ["float32", "float64"]


def _warm(fn, calls=3):
    # cedf's first step runs node by node and compiles the plan, the second builds the
    # backward program; later ones are what a training loop sees.
    for _ in range(calls):
        fn()
    return fn


class StepLabels:
    """``Forward(); Backward(L); UpdateParameters()`` of each workload, by the kind of its labels."""
    params = [list(WORKLOADS), list(LABELS), DTYPES]
    param_names = ["workload", "labels", "dtype"]

    def setup(self, workload, labels, dtype):
        cedf.set_backend("cython")
        self.step = _warm(edf_step(cedf, workload, np.dtype(dtype).type, labels))

    def time_step(self, *_):
        self.step()


class OptimizerStep:
    """A step whose update is the lecture's UpdateParameters, cedf.optim.SGD or cedf.optim.Adam."""
    params = [["mlp_mnist", MLP_MNIST1D], ["UpdateParameters", "SGD", "Adam"], list(LABELS), DTYPES]
    param_names = ["workload", "update", "labels", "dtype"]

    def setup(self, workload, update, labels, dtype):
        cedf.set_backend("cython")
        dtype = np.dtype(dtype).type
        if update == "UpdateParameters":
            self.step = sgd_step(workload, dtype, labels)
        else:
            self.step = optimizer_step(workload, dtype, labels, update.lower())
        _warm(self.step)

    def time_step(self, *_):
        self.step()


class FitEpoch:
    """One epoch of ``cedf.fit(..., optimizer=Adam, progress=False)``: 40 mini-batches of 100."""
    params = [list(LABELS), DTYPES]
    param_names = ["labels", "dtype"]

    def setup(self, labels, dtype):
        cedf.set_backend("cython")
        self.epoch = _warm(fit_epoch(np.dtype(dtype).type, labels), calls=1)

    def time_epoch(self, *_):
        self.epoch()


class EndToEnd:
    """The whole training of the MNIST-1D-sized MLP: 30 epochs, Adam lr 1e-2, batch 100, float32.

    Each sample trains a model built afresh in setup, once (number = 1).
    """
    params = [["cedf", "torch", "torch 1 thread", "scikit-learn"]]
    param_names = ["contender"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, contender):
        X, Y = mnist1d_data()
        try:
            if contender == "cedf":
                cedf.set_backend("cython")
                self.model = cedf_training(X, Y, MNIST1D.epochs)
            elif contender.startswith("torch"):
                threads = 1 if contender == "torch 1 thread" else torch_default_threads()
                self.model = torch_training(X, Y, MNIST1D.epochs, threads=threads)
            else:
                self.model = sklearn_training(X, Y, MNIST1D.epochs)
        except ImportError as e:   # asv skips a benchmark whose setup raises NotImplementedError
            raise NotImplementedError(f"{contender}: {e}") from None

    def time_train_30_epochs(self, *_):
        self.model.train()
