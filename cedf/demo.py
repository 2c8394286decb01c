"""The main job: the lecture's two models trained on the compiled engine, with pictures.

    python -m cedf.demo [--out DIR] [--epochs N]      (or the console script cedf-demo)

1. Logistic regression on the slides' 2-D data (two Gaussian blobs), by the
   lecture's gradient descent: Forward, Backward, UpdateParameters.
2. The lecture's MLP (sigmoid hidden layer, softmax and cross-entropy) on
   scikit-learn's bundled 8x8 digits, with `cedf.fit`.

Prints the loss and accuracy per epoch (training and held-out data; a
progress bar on a terminal), the time of one training step of each model on
both backends, and writes the figures (decision boundary, training curves,
the 1-D logistic regression sequence, the graph in DOT) into a folder that it
names at the end. Needs the examples extra: ``pip install "cedf[examples]"``.
"""
import argparse
import os
import shutil
import time

import numpy as np

import cedf as edf
from cedf import data, plot


def time_per_step(step, seconds=0.3):
    """Median seconds of `step()` over about `seconds` of calls, after a warm-up."""
    for _ in range(5):
        step()
    times, spent = [], 0.0
    while spent < seconds or len(times) < 20:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return float(np.median(times))


def timings(step):
    """Time `step` on each backend: {name: seconds or None}."""
    before, out = edf.get_backend(), {}
    for name in ("cython", "numpy"):
        try:
            edf.set_backend(name)
        except RuntimeError:
            out[name] = None
            continue
        out[name] = time_per_step(step)
    edf.set_backend(before)
    return out


def report_timings(what, times):
    fast, slow = times.get("cython"), times.get("numpy")
    parts = [f"{name} {t * 1e6:8.1f} us" for name, t in times.items() if t is not None]
    ratio = f"  ({slow / fast:.0f}x faster compiled)" if fast and slow else ""
    print(f"  {what:<34} " + " | ".join(parts) + ratio)


def print_epoch(epoch, history):
    line = f"  epoch {epoch:3d}  loss {history.loss[-1]:.4f}  accuracy {history.accuracy[-1]:6.1%}"
    if history.val_loss:
        line += f"  held-out loss {history.val_loss[-1]:.4f}  accuracy {history.val_accuracy[-1]:6.1%}"
    print(line)


def training_step(graph, L):
    """One step of the lecture's loop on `graph`."""
    def step():
        graph.Forward()
        graph.Backward(L)
        graph.UpdateParameters()
    return step


def logistic_regression(out, steps):
    """The slides' 2-D logistic regression, trained by the lecture's loop; returns its training step."""
    X, labels = data.blobs(n=400, seed=0)
    np.random.seed(0)
    edf.DT = np.float32
    with edf.Graph() as g:   # each model in a graph of its own
        x, y = edf.Input(), edf.Input()
        x.value, y.value = X, labels
        params = edf.AffineParams(2, 1, name="logistic")
        p = edf.Sigmoid(edf.Affine(params, x))
        L = edf.BCELoss(p, y)
        edf.learning_rate = 1.0
        print(f"\n1. logistic regression on the slides' 2-D data ({len(X)} points), "
              f"{steps} steps of gradient descent")
        for i in range(1, steps + 1):
            edf.Forward()
            edf.Backward(L)
            edf.UpdateParameters()
            if i in (1, 10, 100) or i == steps:
                print(f"  step {i:4d}  loss {np.mean(L.value):.4f}  "
                      f"accuracy {edf.metrics.accuracy(labels, p.value):6.1%}")
    # Drawn first: the decision boundary's grid goes through the same nodes, which then hold its shapes.
    with open(os.path.join(out, "logistic_regression_graph.dot"), "w") as f:
        f.write(edf.draw(L, values=True))
    if shutil.which("dot"):   # Graphviz renders the drawing too, when it is installed
        edf.draw(L, path=os.path.join(out, "logistic_regression_graph.png"), values=True)
    plot.decision_boundary(p, x, X, labels, path=os.path.join(out, "decision_boundary_2d.png"))
    x.value, y.value = X, labels
    return training_step(g, L)


def logistic_regression_1d(out):
    """The slides' 1-D example, fit by L-BFGS, and its four panels."""
    X, labels = data.logistic_1d(seed=0)
    edf.DT = np.float64
    with edf.Graph() as g:   # kept: nodes hold their graph only weakly
        x, y = edf.Input(), edf.Input()
        x.value, y.value = X, labels
        params = edf.AffineParams(1, 1)
        L = edf.BCELoss(edf.Sigmoid(edf.Affine(params, x)), y)
    edf.optim.minimize(L, method="L-BFGS-B", tol=1e-6, graph=g)
    plot.logistic_regression_1d(X, labels, params.A.value, params.b.value,
                                path=os.path.join(out, "logistic_regression_1d.png"))


def mlp_digits(out, epochs, batch_size, hidden):
    """The lecture's MLP on the digits, trained with cedf.fit; returns its training step."""
    X_train, X_test, y_train, y_test = data.digits()
    np.random.seed(1234)
    edf.DT = np.float32
    edf.learning_rate = 0.5
    with edf.Graph() as g:
        x, y = edf.Input(), edf.Input()
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(64, hidden, name="hidden"), x))
        p = edf.Softmax(edf.Affine(edf.AffineParams(hidden, 10, name="output"), h))
        L = edf.CrossEntropyLoss(p, y)

    print(f"\n2. the lecture's MLP 64-{hidden}-10 on {len(X_train)} training and {len(X_test)} held-out digits, "
          f"{epochs} epochs of mini-batches of {batch_size}")
    history = edf.fit(L, x, y, X_train, y_train, epochs=epochs, batch_size=batch_size,
                      validation=(X_test, y_test), on_epoch=print_epoch)
    plot.training_curves(history, path=os.path.join(out, "training_curves.png"))
    confusion = edf.metrics.confusion_matrix(y_test, edf.predict(p, x, X_test))
    worst = np.argmax(confusion.sum(axis=1) - np.diag(confusion))
    print(f"  held-out accuracy {history.val_accuracy[-1]:.1%}; most confused digit: {worst}")

    x.value, y.value = X_train[:batch_size], y_train[:batch_size]
    return training_step(g, L)


def positive_int(text):
    """argparse's type for counts: a refusal names the value, before anything runs."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cedf.demo", description="The lecture's two models trained on cedf's compiled engine, with pictures.",
        epilog="Trains the slides' logistic regression and the lecture's MLP on the compiled engine, prints "
               "the loss and accuracy per epoch and the time of a step on both backends, and writes the "
               "figures. Needs pip install 'cedf[examples]'.")
    parser.add_argument("--version", action="version", version=f"cedf {edf.__version__}")
    parser.add_argument("--out", default="cedf-demo-figures", metavar="DIR",
                        help="folder for the figures, created if missing (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=20, metavar="N",
                        help="passes of the MLP over the training digits (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="examples per mini-batch of the MLP (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=32, metavar="N",
                        help="sigmoid units of the MLP's hidden layer (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=300, metavar="N",
                        help="gradient descent steps of the logistic regression (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"cedf's demo needs {exc.name}: pip install 'cedf[examples]'") from None
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    print(f"cedf {edf.__version__}, backend {edf.get_backend()}, numpy {np.__version__}")

    logistic_step = logistic_regression(args.out, args.steps)
    logistic_regression_1d(args.out)
    mlp_step = mlp_digits(args.out, args.epochs, args.batch_size, args.hidden)

    print("\n3. time of one training step (Forward, Backward, UpdateParameters), median:")
    report_timings("logistic regression, batch 400", timings(logistic_step))
    report_timings(f"MLP on digits, batch {args.batch_size}", timings(mlp_step))

    print(f"\nfigures written to {os.path.abspath(args.out)}:")
    for name in sorted(os.listdir(args.out)):
        print(f"  {name}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
