"""Graphs as objects: several at once, trained in turn or in two threads; clearing frees and fences."""
import threading

import numpy as np
import pytest

import cedf as edf

BACKENDS = pytest.mark.parametrize("backend", ["cython", "numpy"])


def build(seed, dtype=np.float64, batch=64, widths=(12, 16, 5)):
    """An MLP classifier in the current graph, on data of its own: (loss, x, y, X, Y)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, widths[0])).astype(dtype)
    Y = rng.integers(0, widths[-1], batch)
    np.random.seed(seed)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    x.value, y.value = X, Y
    h = x
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(n_in, n_out), h))
    p = edf.Softmax(edf.Affine(edf.AffineParams(widths[-2], widths[-1]), h))
    return edf.CrossEntropyLoss(p, y)


def train(graph, L, steps):
    """`steps` SGD steps of `graph` through its methods; its parameters and losses afterwards."""
    losses = []
    for _ in range(steps):
        graph.Forward()
        graph.Backward(L)
        graph.UpdateParameters()
        losses.append(float(np.mean(L.value)))
    return [p.value.copy() for p in graph.Parameters], losses


def assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    assert a[1] == b[1]


@BACKENDS
def test_with_block_makes_a_graph_current_and_restores_the_previous(backend):
    edf.set_backend(backend)
    outer = edf.current_graph()
    with edf.Graph() as g:
        assert edf.current_graph() is g
        L = build(1)
        assert edf.CompNodes is g.CompNodes and len(g.Parameters) == 4
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
        with edf.Graph() as inner:
            assert edf.current_graph() is inner
        assert edf.current_graph() is g
    assert edf.current_graph() is outer
    assert outer.CompNodes == [] and outer.Parameters == []


def test_with_blocks_must_close_in_order():
    a, b = edf.Graph(), edf.Graph()
    a.__enter__()
    b.__enter__()
    with pytest.raises(RuntimeError, match="must close in the order they opened"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)


@BACKENDS
def test_graphs_trained_alternately_do_not_interfere(backend):
    edf.set_backend(backend)
    alone = []
    for seed in (1, 2):
        with edf.Graph() as g:
            L = build(seed)
        alone.append(train(g, L, 6))

    with edf.Graph() as g1:
        L1 = build(1)
    with edf.Graph() as g2:
        L2 = build(2)
    steps = {id(g1): [], id(g2): []}
    for _ in range(6):
        for g, L in ((g1, L1), (g2, L2)):
            with g:   # the lecture's functions, on whichever graph is current
                edf.Forward()
                edf.Backward(L)
                edf.UpdateParameters()
            steps[id(g)].append(float(np.mean(L.value)))
    assert_same(([p.value for p in g1.Parameters], steps[id(g1)]), alone[0])
    assert_same(([p.value for p in g2.Parameters], steps[id(g2)]), alone[1])


@BACKENDS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_graphs_train_in_two_threads_as_one_after_the_other(backend, dtype):
    edf.set_backend(backend)
    graphs = []
    for seed in (3, 4):
        with edf.Graph() as g:
            graphs.append((g, build(seed, dtype, batch=256, widths=(64, 128, 10))))
    sequential = [train(g, L, 20) for g, L in graphs]

    graphs = []
    for seed in (3, 4):
        with edf.Graph() as g:
            graphs.append((g, build(seed, dtype, batch=256, widths=(64, 128, 10))))
    results, errors = [None, None], []
    start = threading.Barrier(2)

    def worker(i):
        try:
            g, L = graphs[i]
            with g:   # the thread's own current graph: the other thread's does not change it
                start.wait()
                results[i] = train(edf.current_graph(), L, 20)
        except BaseException as exc:   # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, expected in zip(results, sequential):
        assert_same(got, expected)


def test_a_with_block_in_one_thread_does_not_change_another_threads_graph():
    main = edf.current_graph()
    inside, seen = threading.Event(), []
    done = threading.Event()

    def worker():
        with edf.Graph():
            inside.set()
            done.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    seen.append(edf.current_graph())
    done.set()
    t.join()
    assert seen == [main]


@BACKENDS
def test_clear_compgraph_frees_buffers_and_fences_old_nodes(backend):
    edf.set_backend(backend)
    L = build(5)
    edf.Forward()
    edf.Backward(L)
    g = edf.current_graph()
    nodes, params = list(g.CompNodes), list(g.Parameters)
    trained = [p.value.copy() for p in params]
    edf.clear_compgraph()

    assert edf.CompNodes == [] and edf.Parameters == [] and g._plan is None
    assert all(n.value is None and n.grad is None for n in nodes)
    assert all(getattr(n, "_value_buf", None) is None for n in nodes)
    # A parameter keeps its value (a trained model can still be read or saved), not its gradient.
    assert all(p.grad is None for p in params)
    for p, value in zip(params, trained):
        np.testing.assert_array_equal(p.value, value)

    with pytest.raises(ValueError, match=r"Sigmoid: x \(Affine\) belongs to a graph that was cleared"):
        edf.Sigmoid(nodes[0])
    with pytest.raises(ValueError, match=r"Affine: A \(Parameter\) belongs to a graph that was cleared"):
        edf.Affine(type("P", (), {"A": params[0], "b": params[1]})(), edf.Input())
    with pytest.raises(RuntimeError, match="Affine: its graph was cleared"):
        nodes[0].forward()
    with pytest.raises(ValueError, match="Backward: the loss CrossEntropyLoss is not a node of this graph"):
        edf.Backward(L)
    # Nothing of the failed constructions joined the new graph, which works as before.
    assert edf.CompNodes == [] and edf.Parameters == []
    L = build(5)
    edf.Forward()
    edf.Backward(L)


def test_nodes_of_another_live_graph_are_refused():
    with edf.Graph() as other:
        x = edf.Input()
        h = edf.Affine(edf.AffineParams(3, 2), x)
    with pytest.raises(ValueError, match=r"Softmax: x \(Affine\) belongs to another graph"):
        edf.Softmax(h)
    with pytest.raises(ValueError, match=r"Affine: A \(Parameter\) belongs to another graph"):
        edf.Affine(h.params, x)
    # An Input holds data, not graph state: any graph may read it.
    edf.Sigmoid(x)
    assert len(other.CompNodes) == 1 and len(edf.CompNodes) == 1


def test_clearing_a_graph_inside_its_with_block_clears_that_graph_only():
    L = build(6)
    outer = edf.current_graph()
    with edf.Graph() as g:
        build(7)
        edf.clear_compgraph()
        assert g.CompNodes == [] and g.Parameters == []
    assert len(outer.CompNodes) == 5 and outer.CompNodes[-1] is L
