"""The main job: the lecture's MLP trained on scikit-learn's bundled 8x8 digits.

Run ``cedf-demo`` (or ``python -m cedf.demo`` from outside the source tree).
Prints the loss per epoch, the held-out accuracy and the time of one training
step on each backend. Needs scikit-learn for the data: ``pip install "cedf[examples]"``.
"""
import argparse
import time

import numpy as np

import cedf as edf


def load_digits_split(seed=0):
    """The digits scaled to [0, 1], three quarters for training and one for testing."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise SystemExit("cedf-demo needs scikit-learn for its data: pip install 'cedf[examples]'") from exc
    digits = load_digits()
    return train_test_split(digits.data / 16.0, digits.target, test_size=0.25,
                            random_state=seed, stratify=digits.target)


def time_per_step(step, repeat=200):
    """Median seconds of `step()`, after a warm-up."""
    for _ in range(10):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    X_train, X_test, y_train, y_test = load_digits_split()
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # The lecture's code, unchanged.
    edf.clear_compgraph()
    x = edf.Input()
    y = edf.Input()
    params_1 = edf.AffineParams(X_train.shape[1], args.hidden)
    params_2 = edf.AffineParams(args.hidden, 10)
    h = edf.Sigmoid(edf.Affine(params_1, x))
    p = edf.Softmax(edf.Affine(params_2, h))
    L = edf.CrossEntropyLoss(p, y)
    edf.learning_rate = args.learning_rate

    def step():
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()

    print(f"cedf {edf.__version__}, backend {edf.get_backend()}: MLP {X_train.shape[1]}-{args.hidden}-10 "
          f"on {len(X_train)} training and {len(X_test)} held-out digits")
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(X_train))
        losses = []
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            x.value, y.value = X_train[batch], y_train[batch]
            step()
            losses.append(float(np.mean(L.value)))
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}")

    x.value, y.value = X_test, y_test
    edf.Forward()
    accuracy = np.mean(np.argmax(p.value, axis=1) == y_test)
    print(f"held-out accuracy: {accuracy:.1%}")

    # Time one step on a fixed batch, on each backend (the parameters keep training; it does not matter here).
    x.value, y.value = X_train[:args.batch_size], y_train[:args.batch_size]
    backend = edf.get_backend()
    for name in ("cython", "numpy"):
        try:
            edf.set_backend(name)
        except RuntimeError as exc:
            print(f"time per step ({name}): unavailable ({exc})")
            continue
        print(f"time per step ({name}, batch {args.batch_size}): {time_per_step(step) * 1e6:.1f} us")
    edf.set_backend(backend)


if __name__ == "__main__":
    main()
