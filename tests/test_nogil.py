"""The compiled loops run without the GIL: another Python thread keeps running meanwhile.

Every kernel of `cedf._kernels` and every run of a compiled plan (`cedf._engine`'s
Program.run: a planned Forward, Backward and UpdateParameters) releases the GIL
around its loops; that is what lets two graphs train in two threads at once, and
a user's data loader run beside a step. Nothing else in the suite would notice
if one did not: the results are the same either way.

The measure: a thread that wakes every half millisecond and notes the time (in
Python, so it needs the GIL), while the main thread makes the same compiled call
over and over for 50 ms or more. The switch interval is raised for the test, so
that calls which held the GIL would keep it for the whole loop, between calls
too, as one long call would: the longest stretch without a note would be the
whole loop, the notes only at its two ends. Calls that release it leave
stretches of a few periods. The test asks for no stretch over half the loop,
and tries three times before it fails.

Why not a thread that counts as fast as it can, against its pace during a
sleep: that was tried, and on this 2-core machine beside three busy processes a
call that held the GIL still let it count at 0.2 of its pace (around the call),
and one that released it sometimes let it count not at all (a busy thread waits for a core; one that sleeps is
woken promptly). `test_the_measure_tells_calls_that_hold_the_gil` checks that
this measure tells the two apart.
"""
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest

import cedf as edf
from cedf import _kernels
from conftest import reference_requested

pytestmark = pytest.mark.skipif(reference_requested(), reason="this run asked for the NumPy reference "
                                "(CEDF_BACKEND=numpy): the compiled loops are not what the nodes run")

#: How long the loop of calls lasts at least, in seconds: 100 periods of the ticker. Measured here,
#: five loops of each kernel and plan step: released, the longest stretch without a note was at
#: most 0.08 of the loop on a quiet machine and 0.3 beside three busy processes (0.7 once with 30 ms
#: loops: the main thread descheduled while it held the GIL between two calls); held, always 1.0.
SECONDS = 0.05
PERIOD = 0.0005
#: The longest stretch allowed without a note, as a share of the loop. Held, it is the whole loop.
LONGEST = 0.5
ATTEMPTS = 3
#: Elements of the kernels' buffers: a few megabytes, a fraction of a millisecond per call.
ELEMENTS = 1 << 18


class Ticker:
    """A thread that notes the time every PERIOD seconds, until stopped."""

    def __init__(self):
        self.stamps, self._stop = [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(PERIOD):
            self.stamps.append(time.perf_counter())

    def longest_gap(self, calls):
        """The longest stretch of `calls()` in which this thread did not run, as a share of it."""
        first, start = len(self.stamps), time.perf_counter()
        calls()
        end = time.perf_counter()
        points = [start] + [s for s in self.stamps[first:] if start < s < end] + [end]
        return float(np.max(np.diff(points))) / (end - start)

    def stop(self):
        self._stop.set()
        self.thread.join()


@pytest.fixture
def ticker():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(10.0)   # see the module's docstring
    edf.set_num_threads(1)   # with two BLAS threads, a product would take both cores from the ticker
    t = Ticker()
    yield t
    t.stop()
    edf.set_num_threads(None)
    sys.setswitchinterval(interval)


def repeated(call, seconds=SECONDS):
    """A function that makes `call()` in a Python loop, as often as lasts `seconds` or more."""
    call()   # the first call touches fresh buffers and may allocate
    n = 1
    while True:
        def calls(n=n):
            for _ in range(n):
                call()
        start = time.perf_counter()
        calls()
        took = time.perf_counter() - start
        if took >= seconds:
            return calls
        n = int(n * min(max(1.5 * seconds / max(took, 1e-9), 2), 1000))


def gaps(calls, ticker):
    """`ticker.longest_gap(calls)` per attempt, until one is at most LONGEST."""
    found = []
    for _ in range(ATTEMPTS):
        found.append(ticker.longest_gap(calls))
        if found[-1] <= LONGEST:
            break
    return found


def assert_releases_the_gil(call, ticker, what):
    found = gaps(repeated(call), ticker)
    assert found[-1] <= LONGEST, (f"{what}: another thread could not run for {', '.join(f'{g:.0%}' for g in found)} "
                                  f"of the loop in {len(found)} attempts (at most {LONGEST:.0%} expected): "
                                  f"the GIL is held")


def test_the_measure_tells_calls_that_hold_the_gil(ticker):
    data = bytes(1 << 22)   # bytes.count scans in C without releasing the GIL
    found = gaps(repeated(lambda: data.count(b"\1")), ticker)
    # All of the loop, or nearly: the ticker may note the time only if the main thread lets the GIL go.
    assert len(found) == ATTEMPTS and min(found) > 0.9, f"the ticker ran amid calls that hold the GIL: {found}"


# -- the kernels -----------------------------------------------------------------

C = 16   # classes of the row-wise kernels
N, ROWS = ELEMENTS, ELEMENTS // C


def full(shape, value=0.5):
    return np.full(shape, value)


def classes():
    return np.arange(ROWS, dtype=np.int64) % C


def binary():
    return (np.arange(N) % 2).astype(np.float64)


def matrix(value=0.5):
    """N // 256 rows of 256: an Affine's x, output or their gradients."""
    return np.full((N // 256, 256), value)


def planes(value=0.5, half=False, dtype=np.float64):
    """N values as 64 planes of 64 x 64, a pooling's input, or its output (a quarter) for `half`."""
    side = 32 if half else 64
    return np.full((16, 4, side, side), value, dtype)


def argmax():
    """Where a 2 x 2 MaxPool of `planes()` found its maxima."""
    indices = planes(half=True, dtype=np.int64)
    _kernels.maxpool_forward(np.random.default_rng(0).random((16, 4, 64, 64)), planes(half=True), indices, 2, 2, 2, 2)
    return indices


#: Per kernel, a function that makes its arguments.
KERNELS = {
    "affine_forward": lambda: (matrix(), full((256, 256), 0.01), full(256), matrix()),
    "affine_backward": lambda: (matrix(), full((256, 256), 0.01), matrix(0.1), matrix(0.0), full((256, 256), 0.0),
                                full(256, 0.0)),
    "sigmoid_forward": lambda: (full(N), full(N)),
    "sigmoid_backward": lambda: (full(N), full(N), full(N, 0.0)),
    "softmax_forward": lambda: (full((ROWS, C)), full((ROWS, C))),
    "softmax_backward": lambda: (full((ROWS, C), 1 / C), full((ROWS, C)), full((ROWS, C), 0.0)),
    "cross_entropy_forward": lambda: (full((ROWS, C), 1 / C), classes(), full(ROWS)),
    "cross_entropy_backward": lambda: (full((ROWS, C), 1 / C), classes(), full(ROWS), full((ROWS, C), 0.0)),
    "bce_forward": lambda: (full(N), binary(), full(N)),
    "bce_backward": lambda: (full(N), binary(), full(N), full(N, 0.0)),
    "tanh_forward": lambda: (full(N), full(N)),
    "tanh_backward": lambda: (full(N), full(N), full(N, 0.0)),
    "leaky_relu_forward": lambda: (np.linspace(-1, 1, N), full(N), 0.1),
    "leaky_relu_backward": lambda: (np.linspace(-1, 1, N), full(N), full(N, 0.0), 0.1),
    "cross_entropy_logits_forward": lambda: (full((ROWS, C)), classes(), full((ROWS, C)), full(ROWS)),
    "cross_entropy_logits_backward": lambda: (full((ROWS, C), 1 / C), classes(), full(ROWS), full((ROWS, C), 0.0)),
    "bce_logits_forward": lambda: (full(N), binary(), full(N)),
    "bce_logits_backward": lambda: (full(N), binary(), full(N), full(N, 0.0)),
    "sgd_update": lambda: (full(N), full(N, 1e-9), full(N, 0.0), 0.1, 0.9, 1e-4, True, False),
    "adam_update": lambda: (full(N), full(N, 1e-9), full(N, 0.0), full(N, 0.0), 1e-3, 0.9, 0.999, 1e-8, 1e-4, 1),
    "add_forward": lambda: (full(N), full(N), full(N)),
    "add_backward": lambda: (full(N), full(N, 0.0), full(N, 0.0)),
    # x (4, 16, 32, 32) = N / 4 elements, a 3 x 3 kernel, padding 1.
    "conv_forward": lambda: (full((4, 16, 32, 32)), full((16, 16, 3, 3), 0.01), full(16), full((4, 16, 32, 32)),
                             (1, 1), (1, 1)),
    "conv_backward": lambda: (full((4, 16, 32, 32)), full((16, 16, 3, 3), 0.01), full((4, 16, 32, 32)),
                              full((4, 16, 32, 32), 0.0), full((16, 16, 3, 3), 0.0), full(16, 0.0), (1, 1), (1, 1)),
    "maxpool_forward": lambda: (planes(), planes(half=True), planes(half=True, dtype=np.int64), 2, 2, 2, 2),
    "maxpool_backward": lambda: (planes(half=True), argmax(), planes(0.0)),
    "avgpool_forward": lambda: (planes(), planes(half=True), 2, 2, 2, 2),
    "avgpool_backward": lambda: (planes(half=True), planes(0.0), 2, 2, 2, 2),
    "batch_norm_forward": lambda: (full((ROWS, C, 1)), full(C, 1.0), full(C, 0.0), full(C, 0.0), full(C, 1.0), True,
                                   0.1, 1e-5, full(C), full(C), full((ROWS, C, 1))),
    "batch_norm_backward": lambda: (full((ROWS, C, 1)), full(C, 1.0), full((ROWS, C, 1)), full(C), full(C), True,
                                    full((ROWS, C, 1), 0.0), full(C, 0.0), full(C, 0.0)),
    "layer_norm_forward": lambda: (full((ROWS, C)), full(C, 1.0), full(C, 0.0), 1e-5, full(ROWS), full(ROWS),
                                   full((ROWS, C))),
    "layer_norm_backward": lambda: (full((ROWS, C)), full(C, 1.0), full((ROWS, C)), full(ROWS), full(ROWS),
                                    full((ROWS, C), 0.0), full(C, 0.0), full(C, 0.0)),
    "dropout_forward": lambda: (full(N), np.array([1, 0], np.uint64), 2**52, 2.0, np.empty(N, np.uint8), full(N)),
    "dropout_backward": lambda: (full(N), np.ones(N, np.uint8), 2.0, full(N, 0.0)),
}


def test_every_kernel_is_measured():
    public = {name for name in dir(_kernels) if name.endswith(("_forward", "_backward", "_update"))}
    assert public == set(KERNELS)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_releases_the_gil(name, ticker):
    call = partial(getattr(_kernels, name), *KERNELS[name]())
    assert_releases_the_gil(call, ticker, f"_kernels.{name}")


# -- the compiled plan: Program.run ------------------------------------------------

def mlp(batch, width):
    """x (batch, width) -> Affine -> Sigmoid -> Affine -> Softmax -> CrossEntropyLoss in a graph of its own, planned."""
    np.random.seed(0)
    with edf.Graph() as g:
        x, y = edf.Input(), edf.Input()
        x.value = np.full((batch, width), 0.5, np.float32)
        y.value = np.arange(batch) % 10
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(width, width), x))
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(width, 10), h)), y)
    for _ in range(2):   # the first Forward runs node by node and builds the plan
        g.Forward()
        g.Backward(L)
    assert g._planned
    return g, L


def test_planned_forward_releases_the_gil(ticker):
    g, _ = mlp(512, 256)

    def forward():
        g.Forward()
        assert g._planned
    assert_releases_the_gil(forward, ticker, "a planned Forward")


def test_planned_backward_releases_the_gil(ticker):
    g, L = mlp(512, 256)

    def backward():
        g.Backward(L)
        assert g._planned   # a Backward that left the plan would have run node by node
    assert_releases_the_gil(backward, ticker, "a planned Backward")


def test_planned_update_releases_the_gil(ticker, monkeypatch):
    g, _ = mlp(1, 1024)   # one example, a wide layer: the update's loops are most of the step

    def refuse(self):   # the nodes' update is NumPy's, which releases the GIL too: it must not be what ran
        raise AssertionError("UpdateParameters ran node by node, not the plan")
    monkeypatch.setattr(edf.Parameter, "UpdateParameters", refuse)
    assert_releases_the_gil(g.UpdateParameters, ticker, "a planned UpdateParameters")


@pytest.mark.parametrize("optimiser", [partial(edf.optim.SGD, lr=0.1, momentum=0.9), partial(edf.optim.Adam, lr=1e-3)],
                         ids=["SGD", "Adam"])
def test_optimiser_step_releases_the_gil(optimiser, ticker):
    p = edf.Parameter(np.full(ELEMENTS, 0.5))
    p.grad = np.full(ELEMENTS, 1e-9, np.float32)
    assert_releases_the_gil(optimiser([p]).step, ticker, "an optimiser's step")
