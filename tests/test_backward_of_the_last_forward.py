"""Backward differentiates the Forward that ran, on both backends, whatever happens in between.

The NumPy backend's nodes keep what their forward saw; the compiled plan's
backward program reads what its forward program read (`Binding.following`), and
when it cannot run (the plan was dropped, the graph grew), the graph runs that
Forward again node by node on those same arrays, with the nodes' state (running
statistics, a Dropout's step) as it was (`Graph._replay_forward`). Each case
here ran on the compiled backend differently before: the gradient of another
batch, running statistics updated twice, a new Dropout mask, a bare
AttributeError.
"""
import contextlib

import numpy as np
import pytest

import cedf as edf
from helpers import assert_close

LAYERS = {
    "Affine": lambda x: edf.Affine(edf.AffineParams(3, 3), x),
    "BatchNorm": lambda x: edf.BatchNorm(x, num_features=3),
    "LayerNorm": lambda x: edf.LayerNorm(x, num_features=3),
}


@contextlib.contextmanager
def on_backend(name):
    """Backend `name`, float64, NumPy's global seed 0 (the nodes' initial values, Dropout's seed)."""
    edf.set_backend(name)
    edf.DT = np.float64
    np.random.seed(0)
    try:
        yield
    finally:
        edf.set_backend("cython")


def on_both(run):
    """run(), on the NumPy backend and on the compiled one, from the same seeds."""
    results = []
    for name in ("numpy", "cython"):
        with on_backend(name):
            results.append(run())
    return results


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_batch_fed_between_forward_and_backward_is_not_the_one_differentiated(layer):
    def run():
        rng = np.random.default_rng(0)
        with edf.Graph() as g:
            x = edf.Input()
            t = edf.Tanh(LAYERS[layer](x))
            for _ in range(2):   # node by node, then the plan
                x.value = rng.standard_normal((4, 3))
                g.Forward()
                g.Backward(t)
            x.value = rng.standard_normal((4, 3))
            g.Forward()
            x.value = rng.standard_normal((4, 3))   # the next batch, set before Backward
            g.Backward(t)
            return [p.grad.copy() for p in g.Parameters]
    ref, got = on_both(run)
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12, layer)


@pytest.mark.parametrize("meddle", ["slope set again", "another batch size"])
def test_a_plan_dropped_between_forward_and_backward_leaves_the_gradient_of_that_forward(meddle):
    def run():
        rng = np.random.default_rng(1)
        with edf.Graph() as g:
            x, y = edf.Input(), edf.Input()
            p = edf.AffineParams(3, 2)
            r = edf.LeakyReLU(edf.Affine(p, x), 0.1)
            L = edf.SoftmaxCrossEntropyLoss(r, y)
            x.value, y.value = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
            g.Forward()
            g.Backward(L)   # node by node: the plan is built
            x.value, y.value = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
            g.Forward()     # the plan, on the second batch
            if meddle == "slope set again":
                r.slope = 0.1   # the same slope: it only drops the plan
            else:
                x.value, y.value = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
            g.Backward(L)
            return p.A.grad.copy(), p.b.grad.copy(), L.value.copy()
    ref, got = on_both(run)
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12, meddle)


def stateful(g):
    x = edf.Input()
    x.value = np.random.default_rng(0).standard_normal((4, 3))
    bn = edf.BatchNorm(x, num_features=3)
    d = edf.Dropout(bn, 0.5)
    return x, bn, d, edf.Tanh(d)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_a_node_made_before_backward_is_named_and_nothing_ran_again(backend):
    with on_backend(backend), edf.Graph() as g:
        x, bn, d, t = stateful(g)
        for _ in range(3):
            g.Forward()
            g.Backward(t)
        g.Forward()
        seen, running, steps = t.value.copy(), bn.running_mean.copy(), int(d._state[1])
        edf.Tanh(t)   # made after the Forward: it has no value
        with pytest.raises(RuntimeError, match="Tanh: it has no value yet; call Forward"):
            g.Backward(t)
        np.testing.assert_array_equal(t.value, seen)
        np.testing.assert_array_equal(bn.running_mean, running)
        assert int(d._state[1]) == steps == 4


def test_a_replayed_forward_draws_the_same_mask_and_leaves_the_statistics_alone():
    # The plan dropped between Forward and Backward:
    # Backward runs that Forward again node by node, with the Dropout's step and the
    # running statistics as they were, and puts them back.
    def run():
        with edf.Graph() as g:
            x, bn, d, t = stateful(g)
            for _ in range(3):
                g.Forward()
                g.Backward(t)
            g.Forward()
            running, steps = bn.running_mean.copy(), int(d._state[1])
            g.release_plan()
            g.Backward(t)
            np.testing.assert_array_equal(bn.running_mean, running)
            assert int(d._state[1]) == steps
            return [p.grad.copy() for p in g.Parameters] + [bn.running_var.copy(), t.value.copy()]
    ref, got = on_both(run)
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_a_refused_forward_changes_no_state(backend):
    with on_backend(backend), edf.Graph() as g:
        x, y = edf.Input(), edf.Input()
        x.value, y.value = np.random.default_rng(2).standard_normal((4, 3)), np.array([0, 1, 1, 0])
        bn = edf.BatchNorm(x, num_features=3)
        d = edf.Dropout(bn, 0.5)
        L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(3, 2), d), y)
        g.Forward()
        running, variance, steps = bn.running_mean.copy(), bn.running_var.copy(), int(d._state[1])
        g.release_plan()   # the next Forward runs node by node, the loss last
        y.value = np.array([0, 5, 1, 0])
        with pytest.raises(ValueError, match="label 5 is outside"):
            g.Forward()
        np.testing.assert_array_equal(bn.running_mean, running)
        np.testing.assert_array_equal(bn.running_var, variance)
        assert int(d._state[1]) == steps


def test_a_parameter_the_graph_does_not_list_gets_this_backwards_gradient_on_both_backends():
    # A layer frozen by taking its parameters out of graph.Parameters: the plan wrote each
    # Backward's gradient into its .grad, node by node they piled up (or failed on None).
    def run():
        rng = np.random.default_rng(1)
        with edf.Graph() as g:
            x, y = edf.Input(), edf.Input()
            x.value, y.value = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
            p = edf.AffineParams(3, 3)
            L = edf.SoftmaxCrossEntropyLoss(edf.Affine(p, x), y)
            g.Parameters = [q for q in g.Parameters if q is not p.b]   # before any Backward: .grad is None
            grads = []
            for _ in range(4):
                g.Forward()
                g.Backward(L)
                grads.append(p.b.grad.copy())
                g.UpdateParameters()
            return grads
    ref, got = on_both(run)
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12)
    assert not np.allclose(ref[0], ref[3]), "the steps moved the weights: each gradient is its own"


def dropout_net(rng):
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    bn = edf.BatchNorm(edf.Affine(edf.AffineParams(3, 4), x), num_features=4)
    d = edf.Dropout(edf.LeakyReLU(bn, 0.1), 0.5)
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(4, 2), d), y)
    return x, y, bn, d, L


def after_a_forward(g, seed):
    """dropout_net in graph g, three steps (the plan built and its backward too), then a Forward."""
    x, y, bn, d, L = dropout_net(np.random.default_rng(seed))
    for _ in range(3):
        g.Forward()
        g.Backward(L)
    g.Forward()
    return y, bn, d, L


def agree(ref, got, what=""):
    """Normwise over the gradients (the first bias's is 0 exactly), the statistics and steps after."""
    scale = max(float(np.max(np.abs(r))) for r in ref[:-2])
    for r, c in zip(ref, got):
        assert_close(c.astype(np.float64), r.astype(np.float64), 1e-12, what, scale=scale)


MEDDLING = {   # what may happen between a Forward (of the plan) and Backward; each drops the plan
    "evaluation mode, plan dropped": lambda g, y, bn, d: (g.eval(), g.release_plan()),
    "Dropout's p": lambda g, y, bn, d: setattr(d, "p", 0.25),
    "BatchNorm's eps": lambda g, y, bn, d: setattr(bn, "eps", 1e-3),
    # Read by the node's backward as it is then, by the dropped plan's as it was.
    "LeakyReLU's slope": lambda g, y, bn, d: setattr(next(c for c in g.CompNodes if isinstance(c, edf.LeakyReLU)),
                                                     "slope", 0.3),
    "labels changed in place, plan dropped": lambda g, y, bn, d: (y.value.__setitem__(slice(None), 1 - y.value),
                                                                   g.release_plan()),
}


@pytest.mark.parametrize("node_by_node", [False, True], ids=["plan's backward", "replayed node by node"])
@pytest.mark.parametrize("meddle", sorted(MEDDLING))
def test_a_plan_dropped_after_its_forward_still_differentiates_that_forward(meddle, node_by_node):
    # node_by_node: a gradient buffer dropped too, so that the dropped plan's backward cannot
    # run and that Forward is replayed node by node; it ran with the attributes as they were
    # (a new Dropout p, BatchNorm eps gave another mask and other statistics before).
    def run():
        with edf.Graph() as g:
            y, bn, d, L = after_a_forward(g, 5)
            values = [c.value.copy() for c in g.CompNodes]
            MEDDLING[meddle](g, y, bn, d)
            if node_by_node:
                g.Parameters[0].grad = None
            g.Backward(L)
            for c, v in zip(g.CompNodes, values):
                np.testing.assert_array_equal(c.value, v, err_msg="Backward changed a value")
            return [p.grad.copy() for p in g.Parameters] + [bn.running_mean.copy(), d._state.copy()]
    agree(*on_both(run), meddle)


def replaced_parameter(change):
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.ones((50, 20)), np.zeros(50, np.int64)
    p = edf.AffineParams(20, 30)
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(p, x), y)
    edf.Forward()
    edf.Forward()   # the plan's, on the compiled backend; its backward program is built at the first Backward
    p.A.value = np.zeros((2, 2)) if change == "shape" else p.A.value.astype(np.float32)
    return p, L


def test_a_parameter_of_another_shape_between_forward_and_backward_is_refused_clearly():
    # The backward program was sized by the forward and the gradient by the new value:
    # 20 x 30 numbers written into a 2 x 2 gradient, then a crash.
    for backend in ("numpy", "cython"):
        with on_backend(backend), edf.Graph():
            p, L = replaced_parameter("shape")
            with pytest.raises(ValueError, match="shape"):
                edf.Backward(L)


def test_a_parameter_of_another_dtype_between_forward_and_backward_gets_the_same_gradient():
    def run():
        with edf.Graph():
            p, L = replaced_parameter("dtype")
            edf.Backward(L)
            return p.A.grad.copy()
    ref, got = on_both(run)
    assert got.dtype == ref.dtype
    assert_close(got, ref, 1e-6)


def test_after_a_refused_forward_backward_differentiates_the_last_good_one():
    def grads(refuse):
        with on_backend("cython"), edf.Graph() as g:
            rng = np.random.default_rng(7)
            x, y, bn, d, L = dropout_net(rng)
            for _ in range(2):
                g.Forward()
                g.Backward(L)
            g.Forward()
            if refuse:
                good = y.value
                x.value, y.value = rng.standard_normal((8, 3)), np.full(8, 7)
                with pytest.raises(ValueError, match="label 7 is outside"):
                    g.Forward()
                y.value = good
            g.Backward(L)
            return [p.grad.copy() for p in g.Parameters]
    for r, c in zip(grads(False), grads(True)):
        np.testing.assert_array_equal(c, r)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_backward_after_predict_asks_for_a_forward(backend):
    with on_backend(backend), edf.Graph() as g:
        x, y, bn, d, L = dropout_net(np.random.default_rng(8))
        g.Forward()
        g.Backward(L)
        g.Forward()
        edf.predict(L.x, x, np.ones((5, 3)), graph=g)
        with pytest.raises(RuntimeError, match=r"predict\(\) ran since the last Forward\(\)"):
            g.Backward(L)
        g.Forward()
        g.Backward(L)


def test_a_replayed_forward_runs_in_the_mode_it_ran_in():
    # The backend switched between a (planned, training) Forward and Backward: the nodes hold
    # nothing of that Forward, so it is replayed node by node, in training mode, though the
    # graph is in evaluation mode by then.
    def run(switch):
        with edf.Graph() as g:
            y, bn, d, L = after_a_forward(g, 9)
            g.eval()
            if switch:
                edf.set_backend("numpy")
            g.Backward(L)
            g.train()
            return [p.grad.copy() for p in g.Parameters] + [bn.running_mean.copy(), d._state.copy()]
    with on_backend("numpy"):
        ref = run(False)
    with on_backend("cython"):
        got = run(True)
    agree(ref, got)
