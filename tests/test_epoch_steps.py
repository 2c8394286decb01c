"""fit's inner loop: `cedf._fit.epoch_steps` (C) against its reference `cedf.training._epoch_steps`.

Both gather each mini-batch into fit's buffers, feed it, step, and keep the losses and
the correct predictions; the compiled one copies the examples as bytes, indexes the
labels by pointer and counts the argmax itself, so every way it can go wrong (a row
copied from the wrong place, a label misread, NaN ranked otherwise than by np.argmax)
shows as another number than the reference's.
"""
import numpy as np
import pytest

import cedf as edf
from cedf import training

_fit = pytest.importorskip("cedf._fit", reason="the compiled loop is part of the built extension")


def make_net(head, classes, width, seed=3):
    """A small ReLU net with loss `head` in a graph of its own, and what fit scores it by."""
    with edf.Graph() as g:
        np.random.seed(seed)
        x, y = edf.Input(), edf.Input()
        h = edf.ReLU(edf.Affine(edf.AffineParams(width, 8), x))
        z = edf.Affine(edf.AffineParams(8, 1 if head.startswith("bce") else classes), h)
        if head == "ce":
            L = edf.CrossEntropyLoss(edf.Softmax(z), y)   # the lecture's pair: its loss values are made when read
        elif head == "softmax_ce":
            L = edf.SoftmaxCrossEntropyLoss(z, y)
        elif head == "bce":
            L = edf.BCELoss(edf.Sigmoid(z), y)
        else:
            L = edf.BCEWithLogitsLoss(z, y)
    return g, x, y, L


def run(steps, head, X, Y, batch, epochs=2, dtype=np.float32, optimizer=True):
    """`epochs` epochs of `steps` over (X, Y) on a fresh net: per epoch (losses, correct), and the parameters."""
    edf.DT = dtype
    classes = 2 if head.startswith("bce") else 4
    g, x, y, L = make_net(head, classes, X.shape[1])
    opt = edf.optim.Adam(g.Parameters, lr=1e-2) if optimizer else None
    update = opt.step if optimizer else g.UpdateParameters
    labels = edf.metrics.class_indices("test", Y)
    xb = np.empty((batch,) + X.shape[1:], X.dtype)
    yb = np.empty((batch,) + Y.shape[1:], Y.dtype)
    rng = np.random.default_rng(11)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        losses = np.zeros(len(X))
        right = steps(X, Y, order, 0, len(X), batch, xb, yb, x, y, g.Forward, g.Backward, L, update,
                      training._scorer(L), losses, labels)
        out.append((losses, right))
    return out, [p.value.copy() for p in g.Parameters]


CASES = [("ce", np.float32, np.int64), ("softmax_ce", np.float64, np.int64), ("softmax_ce", np.float32, np.float32),
         ("bce", np.float32, np.float64), ("bce_logits", np.float64, np.int64), ("ce", np.float64, np.float32)]


@pytest.mark.parametrize("head, dtype, label_dtype", CASES)
@pytest.mark.parametrize("column", [False, True])
def test_the_compiled_loop_is_its_reference(head, dtype, label_dtype, column):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((203, 5)).astype(dtype)   # 203 = 6 batches of 30 and one of 23
    Y = rng.integers(0, 2 if head.startswith("bce") else 4, 203).astype(label_dtype)
    if column:
        Y = Y.reshape(-1, 1)
    edf.learning_rate = 0.1
    for optimizer in (True, False):
        expected, expected_params = run(training._epoch_steps, head, X, Y, 30, dtype=dtype, optimizer=optimizer)
        got, got_params = run(_fit.epoch_steps, head, X, Y, 30, dtype=dtype, optimizer=optimizer)
        for (losses, right), (hand_losses, hand_right) in zip(got, expected):
            np.testing.assert_array_equal(losses, hand_losses)
            assert right == hand_right
        for p, q in zip(got_params, expected_params):
            np.testing.assert_array_equal(p, q)
    assert 0 < expected[-1][1] < len(X)   # neither count is trivially right


def _feed(score, order, batch, threshold):
    """A scores_of that gives the scores of the batches of `order` in turn, with `threshold`."""
    firsts = iter(range(0, len(order), batch))

    def scores_of():
        first = next(firsts)
        return score[order[first:first + batch]], threshold
    return scores_of


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threshold", [None, 0.5, 0])
def test_the_compiled_count_ranks_nan_and_ties_as_numpy(dtype, threshold):
    """np.argmax takes the first maximum and counts NaN as the largest (the first NaN wins); a
    threshold is compared in the scores' dtype, a score equal to it counting as class 1."""
    rng = np.random.default_rng(1)
    n, c = 64, 5
    if threshold is None:
        score = rng.integers(0, 3, (n, c)).astype(dtype)   # many ties
        score[rng.random((n, c)) < 0.1] = np.nan
        score[3], score[4, 0] = np.nan, np.nan
    else:
        score = (threshold + rng.integers(-2, 3, n) / 4).astype(dtype)   # a fifth exactly at the threshold
        score[rng.random(n) < 0.1] = np.nan
    labels = rng.integers(0, 2 if threshold is not None else c, n).astype(np.int64)
    order = rng.permutation(n)
    predicted = np.argmax(score, axis=1) if threshold is None else score >= threshold
    expected = np.count_nonzero(predicted[order] == labels[order])
    node = type("Node", (), {})()
    node.value = np.zeros(n)
    noop = lambda *args: None   # noqa: E731
    for steps in (training._epoch_steps, _fit.epoch_steps):
        for batch in (n, 7):
            got = steps(np.zeros((n, 1)), labels.copy(), order, 0, n, batch, np.empty((batch, 1)),
                        np.empty(batch, np.int64), node, node, noop, noop, node, noop,
                        _feed(score, order, batch, threshold), np.zeros(n), labels)
            assert got == expected, (steps, batch)
    assert 0 < expected < n


def test_fit_picks_the_compiled_loop_for_contiguous_numbers_only():
    X, Y = np.zeros((10, 3), np.float32), np.zeros(10, np.int64)
    assert training._steps_for(X, Y)[0] is _fit.epoch_steps
    assert training._steps_for(np.asfortranarray(np.zeros((10, 3))), Y)[0] is training._epoch_steps
    assert training._steps_for(X.astype(object), Y)[0] is training._epoch_steps
    steps, _, labels = training._steps_for(X, np.zeros((10, 2), np.int64)[:, 0])   # a strided column
    assert steps is _fit.epoch_steps and labels.flags.c_contiguous


def test_fit_on_fortran_data_takes_the_reference_with_the_same_result():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((90, 5))
    Y = rng.integers(0, 4, 90)
    histories = []
    for data in (X, np.asfortranarray(X)):
        edf.DT = np.float64
        g, x, y, L = make_net("softmax_ce", 4, 5)
        h = edf.fit(L, x, y, data, Y, epochs=2, batch_size=16, optimizer=edf.optim.Adam(g.Parameters, lr=1e-2),
                    progress=False, graph=g)
        histories.append((h.loss, h.accuracy, [p.value.copy() for p in g.Parameters]))
    assert histories[0][:2] == histories[1][:2]
    for p, q in zip(histories[0][2], histories[1][2]):
        np.testing.assert_array_equal(p, q)


def _hostile_forward(g, change):
    """The graph's Forward, after which `change()` runs once, at the second step."""
    calls = []

    def forward():
        g.Forward()
        calls.append(1)
        if len(calls) == 2:
            change()
    return forward


@pytest.mark.parametrize("what", ["shape", "dtype", "rows", "labels"])
def test_data_changed_between_steps_is_refused_not_read_out_of_bounds(what):
    """Another thread (here: the Forward) reshaping or reinterpreting fit's data in place between
    two steps: the next step's gather checks the arrays again and refuses."""
    edf.DT = np.float64
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4))
    Y = rng.integers(0, 4, 60)
    g, x, y, L = make_net("softmax_ce", 4, 4)
    target = Y if what == "labels" else X

    def change():
        if what == "shape":
            X.shape = (30, 8)
        elif what == "dtype":
            X.dtype = np.float32   # the same bytes read as twice as many float32s
        elif what == "rows":
            X.shape = (120, 2)
        else:
            Y.shape = (30, 2)
    before = target.shape
    name = "y" if what == "labels" else "X"
    with pytest.raises(ValueError, match=f"fit: the examples of {name} .* no longer fit the batch buffer fit feeds "
                                         f"as {name.lower()}.value"):
        _fit.epoch_steps(X, Y, np.arange(60), 0, 60, 10, np.empty((10, 4)), np.empty(10, Y.dtype), x, y,
                         _hostile_forward(g, change), g.Backward, L, g.UpdateParameters, training._scorer(L),
                         np.zeros(60), np.zeros(60, np.int64))
    assert target.shape != before


@pytest.mark.parametrize("what", ["losses", "labels", "order"])
def test_fits_own_arrays_freed_between_steps_are_refused_not_written(what):
    """The losses, labels and permutation are fit's own, but a graph's node runs Python between two
    steps and could reach them: each is checked again before it is read or written (freed and
    reallocated smaller here, which a loop reading through a pointer taken at the start would
    overrun)."""
    edf.DT = np.float64
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((60, 4)), rng.integers(0, 4, 60)
    g, x, y, L = make_net("softmax_ce", 4, 4)
    arrays = {"losses": np.zeros(60), "labels": Y.astype(np.int64), "order": np.arange(60)}
    arrays[what] = np.ascontiguousarray(arrays[what])
    with pytest.raises(ValueError, match=f"fit: {what} must be a"):
        _fit.epoch_steps(X, Y, arrays["order"], 0, 60, 10, np.empty((10, 4)), np.empty(10, Y.dtype), x, y,
                         _hostile_forward(g, lambda: arrays[what].resize(3, refcheck=False)), g.Backward, L,
                         g.UpdateParameters, training._scorer(L), arrays["losses"], arrays["labels"])


def test_bad_arguments_are_named():
    edf.DT = np.float64
    X, Y = np.zeros((20, 4)), np.zeros(20, np.int64)
    g, x, y, L = make_net("softmax_ce", 4, 4)

    def call(order=None, start=0, stop=20, losses=None, labels=None, xb=None):
        return _fit.epoch_steps(X, Y, np.arange(20) if order is None else order, start, stop, 5,
                                np.empty((5, 4)) if xb is None else xb, np.empty(5, np.int64), x, y,
                                g.Forward, g.Backward, L, g.UpdateParameters, training._scorer(L),
                                np.zeros(20) if losses is None else losses,
                                np.zeros(20, np.int64) if labels is None else labels)
    for kwargs, message in (({"stop": 21}, r"positions \[0, 21\)"), ({"start": 5, "stop": 4}, "positions"),
                            ({"losses": np.zeros(19)}, "losses must be"),
                            ({"losses": np.zeros(20, np.float32)}, "losses must be"),
                            ({"labels": np.zeros(19, np.int64)}, "labels must be"),
                            ({"order": np.arange(20, dtype=np.int32)}, "order must be a contiguous int64"),
                            ({"order": np.zeros((4, 5), np.int64)}, "order must be a 1-D"),
                            ({"xb": X[:5]}, "must not overlap")):
        with pytest.raises(ValueError, match=message):
            call(**kwargs)
    for bad in (20, -1):
        order = np.arange(20)
        order[7] = bad
        with pytest.raises(IndexError, match=f"fit: example {bad} of 20"):
            call(order=order)


def test_a_batch_larger_than_the_data_is_one_batch_of_all():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((50, 5)), rng.integers(0, 4, 50)
    results = []
    for batch_size in (50, 10 ** 12):   # no buffer of 10**12 rows: the batch is the 50 examples
        edf.DT = np.float64
        g, x, y, L = make_net("softmax_ce", 4, 5)
        h = edf.fit(L, x, y, X, Y, epochs=2, batch_size=batch_size, optimizer=edf.optim.Adam(g.Parameters, lr=1e-2),
                    progress=False, graph=g)
        results.append((h.loss, h.accuracy, [p.value.copy() for p in g.Parameters]))
    assert results[0][:2] == results[1][:2]
    for p, q in zip(results[0][2], results[1][2]):
        np.testing.assert_array_equal(p, q)


class Lying(np.ndarray):
    """An array whose `dtype` attribute says float64, whatever it holds."""

    @property
    def dtype(self):
        return np.dtype(np.float64)


def test_the_data_is_read_by_its_own_dtype_not_by_what_its_class_says():
    # The gather compared the `dtype` attributes: one that lied had its bytes copied as
    # another dtype's (int8 rows read as float64, or references as numbers).
    edf.DT = np.float64
    g, x, y, L = make_net("softmax_ce", 4, 4)
    Y = np.zeros(20, np.int64)
    for held in (np.int8, np.float32, object):
        X = np.zeros((20, 4), held).view(Lying)
        assert X.dtype == np.float64
        with pytest.raises(ValueError, match="fit: the (examples of X|training data X)"):
            _fit.epoch_steps(X, Y, np.arange(20), 0, 20, 5, np.empty((5, 4)), np.empty(5, np.int64), x, y,
                             g.Forward, g.Backward, L, g.UpdateParameters, training._scorer(L), np.zeros(20),
                             np.zeros(20, np.int64))
