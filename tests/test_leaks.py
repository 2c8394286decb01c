"""Nothing leaks: many graphs built and dropped, many steps, each leave the resident memory where it was."""
import gc
import os
import sys

import numpy as np
import pytest

import cedf as edf

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the resident set size from /proc/self/statm (Linux)")

MB = 2**20


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_graph(rng):
    """A small MLP in a graph of its own, trained one step on both losses' paths; then dropped."""
    with edf.Graph() as g:
        x, y, z = edf.Input(), edf.Input(), edf.Input()
        x.value = rng.standard_normal((32, 8))
        y.value, z.value = rng.integers(0, 3, 32), rng.integers(0, 2, 32)
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(8, 16), x))
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(16, 3), h)), y)
        M = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(16, 1), h)), z)
        for loss in (L, M):
            edf.Forward()   # the second Forward runs the compiled plan
            edf.Backward(loss)
            edf.UpdateParameters()
        L.value, M.value   # the lazily computed loss values too


def test_ten_thousand_graphs_leave_memory_where_it_was():
    edf.set_backend("cython")
    rng = np.random.default_rng(0)
    for _ in range(500):   # the allocators' pools and caches reach their steady size
        one_graph(rng)
    gc.collect()
    before = rss()
    for _ in range(10_000):
        one_graph(rng)
    gc.collect()
    grown = rss() - before
    assert grown < 10 * MB, f"10,000 graphs grew the resident memory by {grown / MB:.1f} MB"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_hundred_thousand_steps_leave_memory_where_it_was(dtype):
    edf.set_backend("cython")
    edf.DT = dtype
    rng = np.random.default_rng(1)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((100, 2)).astype(dtype), rng.integers(0, 2, 100)
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    for _ in range(1000):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    gc.collect()
    before = rss()
    for _ in range(100_000):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    gc.collect()
    grown = rss() - before
    assert grown < 10 * MB, f"100,000 steps grew the resident memory by {grown / MB:.1f} MB"
