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


def large_graph(backend, rows=4000, width=500):
    """A graph of about 60 MB (values, gradients, the plan's buffers), trained on both losses, then dropped."""
    edf.set_backend(backend)
    rng = np.random.default_rng(2)
    with edf.Graph() as g:
        x, y, z = edf.Input(), edf.Input(), edf.Input()
        x.value = rng.standard_normal((rows, width))
        y.value, z.value = rng.integers(0, 3, rows), rng.integers(0, 2, rows)
        h = edf.Tanh(edf.Affine(edf.AffineParams(width, width), x))
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(width, 3), h)), y)
        M = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(width, 1), h)), z)
        for loss in (L, M, L):
            edf.Forward()
            edf.Backward(loss)
            edf.UpdateParameters()
    return g, L


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_a_dropped_graph_is_freed_by_reference_counting(backend):
    """No cycle between a graph, its nodes and its plan: with the cycle collector off, dropping the
    graph and its nodes frees them at once (graphs dropped without clear() once waited for it)."""
    import weakref

    if backend == "cython" and edf.backend._kernels is None:
        pytest.skip("the compiled kernels are not built")
    gc.disable()
    try:
        g, L = large_graph(backend, rows=50, width=8)
        L.value                               # a lazy loss value, computed
        refs = [weakref.ref(obj) for obj in [g, L, *g.CompNodes, *g.Parameters]]
        if g._plan is not None:
            refs.append(weakref.ref(g._plan))
        del g, L
        alive = [r() for r in refs if r() is not None]
        assert not alive, f"still alive without the cycle collector: {[type(a).__name__ for a in alive]}"
    finally:
        gc.enable()


def test_twenty_large_graphs_dropped_need_no_more_memory_than_two():
    edf.set_backend("cython")
    gc.disable()
    try:
        large_graph("cython")   # the allocator's pools reach their size
        base = rss()
        g = large_graph("cython")
        one = rss() - base
        del g
        peak = 0
        for _ in range(20):
            large_graph("cython")
            peak = max(peak, rss() - base)
        assert one > 30 * MB, f"the graph is too small to measure ({one / MB:.0f} MB)"
        assert peak < 2 * one, f"20 graphs dropped one after another peaked at {peak / MB:.0f} MB, one takes {one / MB:.0f} MB"
    finally:
        gc.enable()
