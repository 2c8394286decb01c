"""The training loop: epochs of mini-batches (`fit`) and inference (`predict`).

`fit` is the lecture's loop, ``Forward(); Backward(L); UpdateParameters()``,
over shuffled mini-batches of a data set, with what people add to it by hand
every time: the loss and accuracy of each epoch on the training data (from
the forward passes that training makes anyway) and on validation data, a
progress bar (tqdm, when installed and writing to a terminal), and early
stopping on the validation loss that puts back the best parameters.
"""
import contextlib
import operator
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import data, metrics, nodes
from .conv import Conv
from .graph import graph_of


@dataclass
class History:
    """Per epoch: mean training loss and accuracy, and the same on validation data when given."""

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    best_epoch: int = None      # the epoch whose parameters were kept (early stopping)
    stopped_early: bool = False

    @property
    def epochs(self):
        return len(self.loss)


def _scorer(loss):
    """A function giving what the loss node judged in the last batch, and how the classes follow
    from it: (scores, None) for the argmax of each row, (scores, t) for class 1 where a score is
    >= t. Chosen once per fit (or evaluate), called once per step: both count by the same rule."""
    if type(loss) is nodes.SoftmaxCrossEntropyLoss:
        def softmax():   # its probabilities, the buffer its forward writes (no property, no copy)
            p = loss._p_buf
            return (p, None) if p.shape[1] >= 2 else (p.reshape(len(p)), 0.5)
        return softmax
    if isinstance(loss, nodes.BCEWithLogitsLoss):
        def logits():
            z = np.asarray(loss.x.value)
            return z.reshape(len(z)), 0   # sigmoid(z) >= 0.5 where z >= 0: no sigmoid needed
        return logits

    def probabilities():   # a subclass of the softmax loss's, or a loss of probabilities (BCELoss)
        p = np.asarray(loss.probabilities if isinstance(loss, nodes.SoftmaxCrossEntropyLoss) else loss.x.value)
        if p.ndim == 2 and p.shape[1] >= 2:
            return p, None
        return p.reshape(len(p)), 0.5
    return probabilities


def _parameter_dtype(node):
    """The dtype of a layer that converts its input to its parameters' dtype (Affine, Conv), else None."""
    params = getattr(node, "params", None)
    weights = getattr(params, "A", None) if isinstance(node, nodes.Affine) else (
        getattr(params, "W", None) if isinstance(node, Conv) else None)
    return getattr(getattr(weights, "value", None), "dtype", None)


def _as_fed(graph, x, X):
    """X in the dtype the graph computes in, when every node reading `x` is an Affine or a Conv.

    Each step would convert its batch to that dtype (those layers compute in
    their parameters' dtype); converting the data once instead gives the same
    numbers. Anything else (X beyond the dtype's range, another reader) is left
    to the step.
    """
    readers = [c for c in graph.CompNodes if getattr(c, "x", None) is x]
    dtypes = {_parameter_dtype(c) for c in readers}
    if len(dtypes) != 1 or None in dtypes:
        return X
    dtype = dtypes.pop()
    if dtype not in (np.float32, np.float64) or X.dtype == dtype or X.dtype.kind not in "biuf":
        return X
    try:
        with np.errstate(over="raise"):
            return np.ascontiguousarray(X, dtype=dtype)
    except FloatingPointError:
        return X


def _as_labels(Y):
    """Integer labels as int64, which the compiled plan reads as they are (exactly the same values)."""
    if Y.dtype.kind in "biu" and Y.dtype != np.int64 and np.can_cast(Y.dtype, np.int64):
        return Y.astype(np.int64)
    return Y


class _Progress:
    """One tqdm bar over the whole run (epochs x batches), the epoch and its running loss in its
    postfix, redrawn at most four times a second and kept on screen at the end; or nothing.

    `enabled`: True, False, or None (only when tqdm is installed and stderr is a terminal).
    """

    INTERVAL = 0.25   # seconds between redraws: a step of tens of microseconds must not pay for one

    def __init__(self, enabled, epochs, batches):
        self.bar = None
        if enabled is False or (enabled is None and not sys.stderr.isatty()):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if enabled:
                raise ImportError("fit(progress=True) needs tqdm: pip install 'cedf[progress]'") from None
            return
        # Not one bar per epoch: a demo's epoch lasts milliseconds, and such a bar is gone before anyone sees it.
        self.bar = tqdm(total=epochs * batches, desc="fit", unit="batch", leave=True)
        self.epochs, self.epoch, self.steps, self.shown = epochs, 1, 0, time.perf_counter()

    def step(self, losses, done):
        """One batch more; `losses[:done]` are this epoch's losses so far."""
        if self.bar is None:
            return
        self.steps += 1
        now = time.perf_counter()
        if now - self.shown >= self.INTERVAL:
            self.shown = now
            self._show(np.sum(losses[:done]) / done)

    def _show(self, loss):
        self.bar.set_postfix(epoch=f"{self.epoch}/{self.epochs}", loss=f"{loss:.4f}", refresh=False)
        self.bar.update(self.steps - self.bar.n)

    def end_epoch(self, loss):
        """The epoch ended with mean loss `loss`; the next one starts."""
        if self.bar is not None:
            self._show(loss)
            self.epoch += 1

    def aside(self):
        """A context in which printing leaves the bar intact (tqdm clears it, then draws it again below)."""
        return contextlib.nullcontext() if self.bar is None else self.bar.external_write_mode()

    def close(self):
        if self.bar is not None:
            self.bar.update(self.steps - self.bar.n)
            self.bar.close()


def _correct(score, threshold, labels):
    """How many of a batch's examples the graph classified right: (score, threshold) as `_scorer`
    gives them, `labels` the batch's class indices."""
    predicted = np.argmax(score, axis=1) if threshold is None else np.asarray(score) >= threshold
    return int(np.count_nonzero(predicted == labels))


def _epoch_steps(X, Y, order, start, stop, batch, xb, yb, x, y, forward, backward, loss, update, scores_of,
                 losses, labels):
    """The training steps over the examples at positions [start, stop) of `order`, `batch` at a
    time (the last batch may be shorter); returns how many of them the graph classified right.

    Each batch, ``X[order[...]]`` and ``Y[order[...]]``, is gathered into `xb` and `yb` (or the
    first rows of them) and fed to Inputs `x` and `y`; then ``forward()``, the loss's values
    into `losses` at the batch's positions, ``scores_of()`` counted against `labels`,
    ``backward(loss)``, ``update()``. The reference of `cedf._fit.epoch_steps`, which runs
    the same in C (`_steps_for`).
    """
    right = 0
    for first in range(start, stop, batch):
        index = order[first:min(first + batch, stop)]
        m = len(index)
        Xb, Yb = (xb, yb) if m == len(xb) else (xb[:m], yb[:m])
        np.take(X, index, axis=0, out=Xb)
        np.take(Y, index, axis=0, out=Yb)
        x.value, y.value = Xb, Yb
        forward()
        losses[first:first + m] = loss.value
        score, threshold = scores_of()
        right += _correct(score, threshold, labels[index])
        backward(loss)
        update()
    return right


def _steps_for(X, Y):
    """The epoch's steps for data (X, Y): `cedf._fit.epoch_steps` where it is built and can
    copy the examples as bytes (C-contiguous arrays of numbers), else `_epoch_steps`; and
    (X, Y) as they read them (the labels made contiguous, a copy of little size)."""
    Y = np.ascontiguousarray(Y)
    try:
        from . import _fit
    except ImportError:
        return _epoch_steps, X, Y
    if X.flags.c_contiguous and not X.dtype.hasobject and not Y.dtype.hasobject:
        return _fit.epoch_steps, X, Y
    return _epoch_steps, X, Y


def _distributed_epoch(comm, graph, steps, X, Y, order, batch_size, xb, yb, x, y, loss, scores_of, update, losses,
                       labels, bar):
    """One epoch of `fit(..., distributed=True)`: each global batch shared out over the ranks, this
    rank's share run by `steps` (see `_epoch_steps`) with the allreduce before each update;
    returns the loss summed over every rank's examples and how many of them were right."""
    from . import distributed as dist

    rank, size, n = comm.Get_rank(), comm.Get_size(), len(X)
    losses[...] = 0   # only this rank's positions are written below
    right = 0
    for first in range(0, n, batch_size):
        whole = min(batch_size, n - first)   # the global batch, shared out over the ranks
        lo, hi = dist.share(whole, rank, size)
        if lo == hi:   # no example of this batch here: this rank's gradients count for nothing
            dist.allreduce_gradients(graph, batch=0, total=whole)
            update()
            continue

        def reduced_update():
            dist.allreduce_gradients(graph, total=whole)
            update()
        right += steps(X, Y, order, first + lo, first + hi, hi - lo, xb, yb, x, y, graph.Forward, graph.Backward,
                       loss, reduced_update, scores_of, losses, labels)
        bar.step(losses, first + whole)
    return dist.reduce_sum(np.sum(losses), right)


def _examples(name, X, Y):
    """(X, Y) as arrays of as many examples, at least one."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim == 0 or Y.ndim == 0:
        raise ValueError(f"{name}: X and y must be arrays of examples, got shapes {X.shape} and {Y.shape}")
    if len(X) == 0:
        raise ValueError(f"{name}: no examples")
    if len(X) != len(Y):
        raise ValueError(f"{name}: X has {len(X)} examples but y has {len(Y)}")
    return X, Y


def _count(name, value, allow_none=False):
    """A positive integer argument as a Python int (NumPy's wrap around, and C takes no larger than 2**63 - 1)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
        raise ValueError(f"fit: {name} must be a positive integer, got {value!r}")
    return operator.index(value)


def evaluate(loss, x, y, X, Y, batch_size=256, graph=None):
    """Mean loss and accuracy of the graph on (X, Y), forward passes only, in evaluation mode.

    The accuracy counts as `fit` counts its own (a logit >= 0 is class 1 for BCEWithLogitsLoss).
    """
    graph = graph_of(loss, graph, "evaluate", "the loss ")
    X, Y = _examples("evaluate", X, Y)
    labels = metrics.class_indices("evaluate", Y)
    scores_of = _scorer(loss)
    total, correct, start = 0.0, 0, 0
    with graph.evaluating():
        for Xb, Yb in data.batches(X, Y, batch_size, shuffle=False):
            x.value, y.value = Xb, Yb
            graph.Forward()
            total += float(np.sum(loss.value, dtype=np.float64))
            correct += _correct(*scores_of(), labels[start:start + len(Xb)])
            start += len(Xb)
    return total / len(X), correct / len(X)


def fit(loss, x, y, X, Y, epochs=10, batch_size=32, optimizer=None, validation=None,
        patience=None, shuffle=True, seed=0, progress=None, on_epoch=None, graph=None, distributed=False):
    """Train the graph of `loss` on (X, Y), feeding Inputs `x` and `y`; returns a History.

    Each epoch runs ``Forward(); Backward(loss)`` and an update on every
    mini-batch (`cedf.data.batches`): ``optimizer.step()`` when an optimiser
    (e.g. `cedf.optim.Adam`) is given, else the lecture's ``UpdateParameters()``
    with ``cedf.learning_rate``. `validation` = (X_val, Y_val) is evaluated after
    every epoch; with `patience`, training stops once the validation loss has
    not improved for that many epochs, and the parameters of the best epoch are
    put back. `progress`: True, False, or None (a bar when on a terminal).
    `on_epoch(epoch, history)` is called after each epoch (epoch counts from 1).
    Afterwards the nodes hold the values of fit's last Forward: with
    `validation`, those of the last chunk of the validation data (so does
    ``L.probabilities``), else those of the last training batch; use
    `predict` or `evaluate` for the values on data of your choice.

    With ``distributed=True`` (after `cedf.distributed.init`, under mpiexec), every
    rank is given the whole of (X, Y) and the same `seed`: each global mini-batch
    of `batch_size` is split over the ranks (`cedf.distributed.share`), the
    gradients are averaged over the global batch before each update, and the
    epoch's loss and accuracy are summed over the ranks; the parameters are
    broadcast from rank 0 first. The History is the same on every rank, and the
    training the same as one process's on the same data, up to summation order.
    """
    graph = graph_of(loss, graph, "fit", "the loss ")
    # Every argument checked before the first step, not after an epoch of training.
    epochs, batch_size, patience = _count("epochs", epochs), _count("batch_size", batch_size), \
        _count("patience", patience, allow_none=True)
    if patience is not None and validation is None:
        raise ValueError("fit: early stopping (patience) needs validation data")
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"fit: on_epoch must be a function on_epoch(epoch, history), got {type(on_epoch).__name__}")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("fit: validation must be a pair (X_val, y_val)")
        validation = _examples("fit: validation", *validation)
        metrics.class_indices("fit: validation", validation[1])
    X, Y = _examples("fit", X, Y)
    X, Y = _as_fed(graph, x, X), _as_labels(Y)
    labels = metrics.class_indices("fit", Y)   # checked once: the accuracy compares with these
    update = optimizer.step if optimizer is not None else graph.UpdateParameters
    rng = np.random.default_rng(seed)
    history = History()
    n = len(X)
    batch_size = min(batch_size, n)   # the same batches; a size beyond C's integers is no error
    if distributed:
        from . import distributed as dist

        comm = dist._comm("fit")
        dist.broadcast_parameters(graph)
        if comm.Get_rank() != 0:
            progress = False
    # Per epoch, not per step: each step's losses land in this, and the epoch's loss is their sum.
    losses = np.zeros(n)
    forward, backward, scores_of = graph.Forward, graph.Backward, _scorer(loss)   # once: the loop is the hot path
    bar = _Progress(progress, epochs, -(-n // batch_size))
    steps, X, Y = _steps_for(X, Y)
    # Each batch is gathered into these and fed: the same arrays at every step (a shorter batch
    # is a view of their first rows). No batch is larger than the data (batch_size <= n).
    xb, yb = np.empty((batch_size,) + X.shape[1:], X.dtype), np.empty((batch_size,) + Y.shape[1:], Y.dtype)
    # With a bar, a call per batch, so that it moves; else one call per epoch.
    chunk = batch_size if bar.bar is not None else n
    best, best_loss, waited = None, np.inf, 0
    with contextlib.closing(bar):   # (closed when a step raises, too: no bar left half drawn)
        for epoch in range(epochs):
            order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64, copy=False)
            if distributed:
                total, correct = _distributed_epoch(comm, graph, steps, X, Y, order, batch_size, xb, yb, x, y, loss,
                                                    scores_of, update, losses, labels, bar)
            else:
                correct = 0
                for start in range(0, n, chunk):
                    stop = min(start + chunk, n)
                    correct += steps(X, Y, order, start, stop, batch_size, xb, yb, x, y, forward, backward, loss,
                                     update, scores_of, losses, labels)
                    bar.step(losses, stop)
                total = np.sum(losses)
            history.loss.append(float(total) / n)
            history.accuracy.append(float(correct) / n)
            bar.end_epoch(history.loss[-1])
            if validation is not None:
                val_loss, val_accuracy = evaluate(loss, x, y, *validation, graph=graph)
                history.val_loss.append(val_loss)
                history.val_accuracy.append(val_accuracy)
            if on_epoch is not None:
                with bar.aside():   # what on_epoch prints goes above the bar
                    on_epoch(epoch + 1, history)
            if patience is None:
                continue
            if val_loss < best_loss:
                best_loss, waited, history.best_epoch = val_loss, 0, epoch
                best = [p.value.copy() for p in graph.Parameters]
            else:
                waited += 1
                if waited >= patience:
                    history.stopped_early = True
                    break
    if best is not None:
        for p, value in zip(graph.Parameters, best):
            p.value[...] = value
    return history


def predict(output, x, X, batch_size=None, graph=None):
    """The value of node `output` for data X fed to Input `x`: inference only, in evaluation mode.

    Runs only the nodes that `output` depends on (not the loss, so no labels
    are needed) and no Backward: no gradient buffer is touched. With `batch_size`,
    X goes through in chunks and the results are stacked. Returns a copy.
    """
    graph = graph_of(output, graph, "predict")
    upto = next(i for i, c in enumerate(graph.CompNodes) if c is output)
    needed = {id(node) for node in nodes.upstream(output)}
    path = [c for c in graph.CompNodes[:upto + 1] if id(c) in needed]
    X = np.asarray(X)
    chunks = [X] if batch_size is None else [X[i:i + batch_size] for i in range(0, len(X), batch_size)]
    with graph.lock, graph.evaluating():   # a step of another thread's waits
        graph.release_plan()   # the nodes run one by one here, into buffers the plan would not know
        graph._predicted = True   # ... and their values are no training Forward's (Graph.Backward)
        results, before = [], x.value
        try:
            for chunk in chunks:
                x.value = chunk
                for c in path:
                    c.forward()
                results.append(np.array(output.value))
        finally:
            x.value = before   # the training data stays where it was
    return np.concatenate(results) if len(results) > 1 else results[0]
