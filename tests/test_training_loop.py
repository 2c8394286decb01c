"""cedf.fit, cedf.evaluate and cedf.predict: the lecture's loop over mini-batches, and inference."""
import numpy as np
import pytest

import cedf as edf
from cedf import data, metrics
from helpers import adam_by_hand, lecture_training


def digits_mlp(head="lecture", dtype=np.float32):
    X_train, X_test, y_train, y_test = data.digits()
    np.random.seed(0)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(64, 32), x))
    logits = edf.Affine(edf.AffineParams(32, 10), h)
    if head == "lecture":
        p = edf.Softmax(logits)
        L = edf.CrossEntropyLoss(p, y)
    else:
        p = logits
        L = edf.SoftmaxCrossEntropyLoss(logits, y)
    return (X_train, X_test, y_train, y_test), x, y, p, L


@pytest.mark.parametrize("head", ["lecture", "logits"])
def test_fit_trains_and_records_every_epoch(head):
    (X, Xv, Y, Yv), x, y, p, L = digits_mlp(head)
    opt = edf.optim.Adam(edf.Parameters, lr=1e-2)
    history = edf.fit(L, x, y, X, Y, epochs=8, batch_size=64, optimizer=opt, validation=(Xv, Yv),
                      progress=False)
    assert history.epochs == 8 and len(history.val_loss) == 8 and len(history.val_accuracy) == 8
    assert history.loss[-1] < history.loss[0] / 3
    assert history.val_accuracy[-1] > 0.9
    # The recorded validation numbers are what evaluate() and the metrics say afterwards.
    loss, accuracy = edf.evaluate(L, x, y, Xv, Yv)
    assert loss == pytest.approx(history.val_loss[-1], rel=1e-5)
    assert accuracy == pytest.approx(history.val_accuracy[-1])
    probs = edf.predict(p, x, Xv, batch_size=100)
    assert metrics.accuracy(Yv, probs) == pytest.approx(accuracy)


def test_fit_with_the_lectures_update_parameters():
    X, labels = data.blobs(n=400, seed=1)
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    edf.learning_rate = 0.5
    history = edf.fit(L, x, y, X, labels, epochs=5, batch_size=20, progress=False)
    assert history.accuracy[-1] > 0.9 and not history.val_loss


def fit_batches(n, batch_size, epochs, seed):
    """The mini-batches fit takes (a permutation per epoch from default_rng(seed), then in order)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out += [order[start:start + batch_size] for start in range(0, n, batch_size)]
    return out


@pytest.mark.parametrize("optimizer", ["UpdateParameters", "Adam"])
@pytest.mark.parametrize("head", ["bce", "ce"])
def test_fit_trains_as_the_lectures_edf(head, optimizer):
    """fit's parameters after 5 epochs are those of the slides' EDF (its own gradients, and its
    UpdateParameters or Adam written out) on the same mini-batches: no accuracy bar can tell a bias
    gradient from one row, or a parameter never updated."""
    X, labels = data.blobs(n=203, seed=1)   # 203: a last batch of 3
    edf.DT = np.float64
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    if head == "bce":
        L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    else:
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(2, 5), x))
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(5, 2), h)), y)
    before = [q.value.copy() for q in edf.Parameters]
    edf.learning_rate = 0.5
    opt = edf.optim.Adam(edf.Parameters, lr=1e-2) if optimizer == "Adam" else None
    history = edf.fit(L, x, y, X, labels, epochs=5, batch_size=20, optimizer=opt, seed=7, progress=False)
    batches = fit_batches(len(X), 20, 5, seed=7)
    losses, after, _ = lecture_training(X, labels, before, lr=0.5, dtype=np.float64, head=head, batches=batches,
                                        update=adam_by_hand(lr=1e-2) if optimizer == "Adam" else None)
    for q, expected in zip(edf.Parameters, after):
        np.testing.assert_allclose(q.value, expected, rtol=1e-9, atol=1e-12)
    # Each epoch's loss is the mean over its examples of the per-batch losses.
    weights = np.array([len(b) for b in batches[:11]]) / len(X)
    expected = [np.dot(losses[e * 11:(e + 1) * 11], weights) for e in range(5)]
    np.testing.assert_allclose(history.loss, expected, rtol=1e-10)


def test_training_accuracy_of_an_epoch_is_that_of_its_forward_passes():
    X, labels = data.blobs(n=100, seed=2)
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    p = edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x))
    L = edf.BCELoss(p, y)
    edf.learning_rate = 0.0   # nothing changes: the epoch's numbers are the full data's
    history = edf.fit(L, x, y, X, labels, epochs=1, batch_size=7, progress=False)
    loss, accuracy = edf.evaluate(L, x, y, X, labels)
    assert history.loss[0] == pytest.approx(loss, rel=1e-6)
    assert history.accuracy[0] == pytest.approx(accuracy)


def test_early_stopping_puts_back_the_best_parameters():
    (X, Xv, Y, Yv), x, y, p, L = digits_mlp()
    # A learning rate far too high: the validation loss stops improving quickly.
    opt = edf.optim.SGD(edf.Parameters, lr=30.0)
    history = edf.fit(L, x, y, X[:300], Y[:300], epochs=40, batch_size=50, optimizer=opt,
                      validation=(Xv, Yv), patience=2, progress=False)
    assert history.stopped_early and history.epochs < 40
    assert history.best_epoch == int(np.argmin(history.val_loss))
    loss, _ = edf.evaluate(L, x, y, Xv, Yv)
    assert loss == pytest.approx(min(history.val_loss), rel=1e-5)


def test_progress_bar_is_shown_when_asked(capsys):
    pytest.importorskip("tqdm", reason="tqdm is in the test extra; progress bars need it")
    X, labels = data.blobs(n=60, seed=3)
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    printed = []
    edf.fit(L, x, y, X, labels, epochs=2, batch_size=10, progress=True,
            on_epoch=lambda epoch, history: printed.append(epoch) or print(f"my line {epoch}"))
    captured = capsys.readouterr()
    # One bar over the whole run (2 epochs of 6 batches), left on screen, ending at the last epoch.
    assert "12/12" in captured.err and "epoch=2/2" in captured.err
    assert captured.err.count("\r") >= 1 and captured.err.endswith("\n")
    assert printed == [1, 2] and "my line 1\nmy line 2\n" in captured.out
    edf.fit(L, x, y, X, labels, epochs=2, batch_size=10)   # None: not a terminal here, so quiet
    assert capsys.readouterr().err == ""


def test_predict_needs_no_labels_and_touches_no_gradient():
    (X, Xv, Y, Yv), x, y, p, L = digits_mlp()
    y.value = Y[:64]
    x.value = X[:64]
    for _ in range(3):   # planned steps with a batch of 64
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    grads = [c.grad.copy() for c in edf.CompNodes]
    y.value = None   # inference needs no labels
    out = edf.predict(p, x, Xv)
    assert out.shape == (len(Xv), 10)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    for c, g in zip(edf.CompNodes, grads):
        np.testing.assert_array_equal(c.grad, g)
    # Training goes on afterwards, with the plan (on the compiled backend) rebuilt for the training batch.
    x.value, y.value = X[:64], Y[:64]
    edf.Forward()
    edf.Backward(L)
    assert (edf.current_graph()._plan is not None) == (edf.get_backend() == "cython")
    chunks = edf.predict(p, x, Xv, batch_size=37)
    np.testing.assert_allclose(chunks, edf.predict(p, x, Xv), rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), epochs=0), "fit: epochs must be a positive integer"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), patience=2), "fit: early stopping .* needs validation data"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(3)), "fit: X has 4 examples but y has 3"),
    (lambda L, x, y: edf.evaluate(L, x, y, np.zeros((4, 2)), np.zeros(3)), "evaluate: X has 4 examples but y has 3"),
    (lambda L, x, y: edf.evaluate(L, x, y, np.zeros((0, 2)), np.zeros(0)), "evaluate: no examples"),
    # Checked before the first epoch, not after it (and named):
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), patience=0, validation=(np.zeros((2, 2)),
                                                                                         np.zeros(2))),
     "fit: patience must be a positive integer, got 0"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), validation=(np.zeros((2, 2)), np.zeros(3))),
     "fit: validation: X has 2 examples but y has 3"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), validation=(np.zeros((2, 2)), [0.5, 1])),
     "fit: validation: y_true must be integral class indices"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.full(4, 2.0 ** 70)),
     "fit: y_true holds the class index 1.18.*e.21, too large to be one"),
    (lambda L, x, y: edf.fit(L, x, y, np.zeros((4, 2)), np.full(4, 2 ** 64 - 1, np.uint64)),
     "fit: y_true holds the class index 18446744073709551615, too large"),
    (lambda L, x, y: edf.predict(edf.Sigmoid(x), x, np.zeros((4, 2)), graph=edf.Graph()), "predict: Sigmoid is not a node of the graph"),
])
def test_bad_arguments_are_named(call, message):
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    with pytest.raises(ValueError, match=message):
        call(L, x, y)


def test_predict_leaves_the_inputs_value_and_skips_unrelated_nodes():
    X, labels = data.blobs(n=50, seed=4)
    x, y, other = edf.Input(), edf.Input(), edf.Input()   # `other` never gets a value
    x.value, y.value = X, labels
    edf.Sigmoid(other)   # a node of the graph that the prediction does not need
    p = edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x))
    L = edf.BCELoss(p, y)
    edf.predict(p, x, np.zeros((7, 2)), batch_size=3)
    assert x.value is X
    other.value = np.zeros(3)
    edf.Forward()   # the training data is still in place
    assert L.value.shape == (50,)


def _hand_written_epochs(make, X, Y, epochs, batch_size, seed, lr):
    """What fit does, written out as the lecture would: shuffled batches, a step each, the epoch's
    mean loss and accuracy from the per-batch values (metrics.accuracy on the loss's probabilities)."""
    L, x, y, p = make()
    rng = np.random.default_rng(seed)
    opt = edf.optim.Adam(edf.Parameters, lr=lr)
    losses, accuracies = [], []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        total = correct = 0.0
        for start in range(0, len(X), batch_size):
            index = order[start:start + batch_size]
            x.value, y.value = X[index], Y[index]
            edf.Forward()
            total += float(np.sum(L.value, dtype=np.float64))
            probabilities = p() if callable(p) else p.value
            correct += metrics.accuracy(Y[index], probabilities) * len(index)
            edf.Backward(L)
            opt.step()
        losses.append(total / len(X))
        accuracies.append(correct / len(X))
    return losses, accuracies, [q.value.copy() for q in edf.Parameters]


@pytest.mark.parametrize("loss", ["ce", "softmax_ce", "bce", "bce_logits"])
@pytest.mark.parametrize("data_dtype, label_dtype", [(np.float32, np.int64), (np.float64, np.int32),
                                                     (np.float32, np.float32)])
def test_fit_is_the_hand_written_loop(loss, data_dtype, label_dtype):
    """fit gathers batches into reused buffers, converts data and labels once and scores each epoch
    once: the same history and parameters as the loop written by hand, batch by batch."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((203, 6)).astype(data_dtype)   # 203: a last batch of 23
    classes = 2 if loss.startswith("bce") else 4
    Y = rng.integers(0, classes, 203).astype(label_dtype)

    def make():
        edf.clear_compgraph()
        edf.DT = np.float32
        np.random.seed(3)
        x, y = edf.Input(), edf.Input()
        h = edf.ReLU(edf.Affine(edf.AffineParams(6, 8), x))
        z = edf.Affine(edf.AffineParams(8, 1 if loss.startswith("bce") else classes), h)
        if loss == "ce":
            p = edf.Softmax(z)
            return edf.CrossEntropyLoss(p, y), x, y, p
        if loss == "softmax_ce":
            L = edf.SoftmaxCrossEntropyLoss(z, y)
            return L, x, y, lambda: L.probabilities
        if loss == "bce":
            p = edf.Sigmoid(z)
            return edf.BCELoss(p, y), x, y, p
        return edf.BCEWithLogitsLoss(z, y), x, y, lambda: 1 / (1 + np.exp(-z.value.astype(np.float64)))

    hand_loss, hand_accuracy, hand_params = _hand_written_epochs(make, X, Y, 3, 30, 11, 1e-2)
    L, x, y, _ = make()
    history = edf.fit(L, x, y, X, Y, epochs=3, batch_size=30, optimizer=edf.optim.Adam(edf.Parameters, lr=1e-2),
                      seed=11, progress=False)
    np.testing.assert_allclose(history.loss, hand_loss, rtol=1e-12)
    assert history.accuracy == hand_accuracy
    for got, expected in zip(edf.Parameters, hand_params):
        np.testing.assert_array_equal(got.value, expected)


def test_fit_checks_every_argument_before_it_trains():
    # on_epoch and validation were first looked at after an epoch of training had changed the
    # parameters; a bad on_epoch failed with Python's own "'int' object is not callable".
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    before = [p.value.copy() for p in edf.Parameters]
    X, Y = np.random.default_rng(0).standard_normal((8, 2)), np.arange(8) % 2
    for kwargs, error, message in (({"on_epoch": 3}, TypeError, "fit: on_epoch must be a function"),
                                   ({"validation": np.zeros((2, 2))}, TypeError, "fit: validation must be a pair"),
                                   ({"validation": (np.zeros((0, 2)), np.zeros(0))}, ValueError,
                                    "fit: validation: no examples")):
        with pytest.raises(error, match=message):
            edf.fit(L, x, y, X, Y, epochs=2, batch_size=4, progress=False, **kwargs)
        for p, b in zip(edf.Parameters, before):
            np.testing.assert_array_equal(p.value, b)


@pytest.mark.parametrize("order", ["C", "F"], ids=["compiled loop", "reference loop"])
@pytest.mark.parametrize("make", [np.int8, np.uint8, np.int64, np.uint64, int])
def test_numpy_integers_count_as_the_same_python_integers(make, order):
    # NumPy's arithmetic on them wraps around or overflows: np.int8(50) as batch_size raised an
    # OverflowError (the number of batches, -300 // 50) and np.uint8 epochs overflowed in the bar.
    rng = np.random.default_rng(3)
    X, Y = np.asarray(rng.standard_normal((300, 2)), order=order), rng.integers(0, 2, 300)
    results = []
    for epochs, batch_size in ((int(3), int(50)), (make(3), make(50))):
        np.random.seed(0)
        with edf.Graph() as g:
            x, y = edf.Input(), edf.Input()
            L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
            h = edf.fit(L, x, y, X, Y, epochs=epochs, batch_size=batch_size, progress=False,
                        validation=(X[:10], Y[:10]), patience=make(5))
            results.append((h.loss, h.accuracy, [p.value.copy() for p in g.Parameters]))
    assert results[0][:2] == results[1][:2]
    for p, q in zip(results[0][2], results[1][2]):
        np.testing.assert_array_equal(p, q)


def test_evaluate_counts_a_logit_of_zero_as_fit_does():
    # evaluate took sigmoid(z) = 0.5 (1 + tanh(z / 2)), which rounds to 0.5 for a tiny negative
    # z: class 1 by its threshold, class 0 by fit's (z >= 0). Both count z >= 0 as class 1 now.
    edf.DT = np.float64
    x, y = edf.Input(), edf.Input()
    p = edf.AffineParams(1, 1)
    L = edf.BCEWithLogitsLoss(edf.Affine(p, x), y)
    p.A.value[...], p.b.value[...] = 1.0, 0.0
    X = np.array([[-1e-17], [1e-17], [0.0], [-3.0]])
    _, accuracy = edf.evaluate(L, x, y, X, np.zeros(4))
    assert accuracy == 0.5   # the second and third are class 1, the first and the last class 0
    _, accuracy = edf.evaluate(L, x, y, X, np.array([0, 1, 1, 0]))
    assert accuracy == 1.0


def test_a_failing_step_closes_the_progress_bar(capsys):
    pytest.importorskip("tqdm")
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    bars = []

    def explode(epoch, history):
        from tqdm import tqdm
        bars.extend(b for b in list(tqdm._instances) if b.desc == "fit")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        edf.fit(L, x, y, np.zeros((8, 2)), np.arange(8) % 2, epochs=3, batch_size=4, progress=True, on_epoch=explode)
    assert len(bars) == 1 and bars[0].disable   # closed (tqdm marks a closed bar disabled)
