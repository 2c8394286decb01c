"""cedf: the lecture's Educational Deep learning Framework (EDF) on compiled kernels.

``import cedf as edf`` runs the lecture's code unchanged::

    edf.clear_compgraph()
    x = edf.Input(); y = edf.Input()
    x.value, y.value = X, labels
    params = edf.AffineParams(nInputs, nLabels)
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(params, x)), y)
    for i in range(iterations):
        edf.Forward(); edf.Backward(L); edf.UpdateParameters()

Package settings, read when they are used, so assigning them here takes effect:
``cedf.DT`` (dtype of new parameters and buffers, default float32) and
``cedf.learning_rate`` (step of `UpdateParameters`, default 0.001).
``cedf.CompNodes`` and ``cedf.Parameters`` are the node lists of the current graph.
"""
from importlib.metadata import PackageNotFoundError, version as _version

import numpy as np

#: dtype of new parameters and of buffers made for non-float inputs.
DT = np.float32
#: step size of `UpdateParameters`.
learning_rate = 0.001

from . import backend, graph, nodes, reference  # noqa: E402
from .backend import get_backend, get_blas, get_num_threads, set_backend, set_blas, set_num_threads  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from .gradient_check import gradcheck  # noqa: E402
from . import data, metrics, optim  # noqa: E402
from .training import History, evaluate, fit, predict  # noqa: E402
from .drawing import draw  # noqa: E402
from . import plot  # noqa: E402  (matplotlib is imported when a figure is made)
from .config import show_config  # noqa: E402
from .graph import Backward, Forward, Graph, UpdateParameters, clear_compgraph, current_graph, eval, train  # noqa: E402,A004
from .nodes import (  # noqa: E402
    Add,
    Affine,
    AffineParams,
    BCELoss,
    BCEWithLogitsLoss,
    CompNode,
    CrossEntropyLoss,
    Input,
    LeakyReLU,
    Parameter,
    ReLU,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropyLoss,
    Tanh,
)
from .shape import Flatten, Reshape  # noqa: E402
from .conv import Conv, ConvParams  # noqa: E402
from .pooling import AvgPool, MaxPool  # noqa: E402
from .normalization import BatchNorm, LayerNorm  # noqa: E402
from .dropout import Dropout  # noqa: E402

try:
    __version__ = _version("cedf")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"


def __getattr__(name):
    # The lecture's global lists, read from whichever graph is current.
    if name in ("CompNodes", "Parameters"):
        return getattr(graph.current_graph(), name)
    raise AttributeError(f"module 'cedf' has no attribute {name!r}")


__all__ = [
    "DT", "learning_rate", "CompNodes", "Parameters",
    "Input", "Parameter", "CompNode", "AffineParams", "Affine", "Sigmoid", "Softmax",
    "CrossEntropyLoss", "BCELoss", "Tanh", "ReLU", "LeakyReLU", "SoftmaxCrossEntropyLoss", "BCEWithLogitsLoss",
    "Add", "Flatten", "Reshape", "ConvParams", "Conv", "MaxPool", "AvgPool", "BatchNorm", "LayerNorm", "Dropout",
    "Graph", "current_graph", "clear_compgraph", "Forward", "Backward", "UpdateParameters", "train", "eval",
    "set_backend", "get_backend", "set_blas", "get_blas", "set_num_threads", "get_num_threads", "save", "load",
    "gradcheck", "optim", "data", "metrics", "fit", "predict", "evaluate", "History",
    "draw", "plot", "show_config",
]
