"""MNIST-1D's table reproduced with cedf alone: logistic regression, an MLP and a CNN.

Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D" (ICML 2024),
report test accuracies of 32 % (logistic regression), 68 % (MLP) and 94 %
(CNN) on their 4000/1000 split; their notebook's runs gave 31.5, 64.6 and
92.3 %. The three models are theirs, trained as they train them: Adam at
lr 1e-2, batches of 100, 6000 steps each, no weight decay.

- logistic regression: 40 -> 10;
- MLP: h1 = relu(W1 x), h2 = h1 + relu(W2 h1) (a residual connection), W3 h2,
  hidden width 100;
- CNN: three 1-D convolutions of 25 channels (kernel 5, stride 2, padding 1;
  then kernel 3, stride 2, padding 1, twice), each followed by a ReLU, then
  125 -> 10.

Each model is trained from three seeds (initial parameters and batches): the
accuracy printed is their mean, with the lowest and highest, since one run
varies by about a point either way (their notebook's single runs included).

    python examples/mnist1d_table.py [--steps N] [--seeds K]

Needs the data set's generator: ``pip install 'cedf[mnist1d]'``.
"""
import argparse
import time

import numpy as np

import cedf as edf
from cedf import data, optim

PAPER = {"logistic regression": 32, "MLP": 68, "CNN": 94}   # their Table 1, test accuracy in %

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=6000, help="training steps per model (default: 6000, the paper's)")
parser.add_argument("--seeds", type=int, default=3, help="runs per model, seeds 0, 1, ... (default: 3)")
args = parser.parse_args()
if args.steps < 1 or args.seeds < 1:
    parser.error("--steps and --seeds must be at least 1")

start = time.perf_counter()
X_train, X_test, y_train, y_test = data.mnist1d()
BATCH = 100
epochs = -(-args.steps * BATCH // len(X_train))   # 6000 steps of 100 = 150 passes over the 4000 examples


def logistic(x):
    return edf.Affine(edf.AffineParams(40, 10), x)


def mlp(x):
    h1 = edf.ReLU(edf.Affine(edf.AffineParams(40, 100), x))
    h2 = edf.Add(h1, edf.ReLU(edf.Affine(edf.AffineParams(100, 100), h1)))
    return edf.Affine(edf.AffineParams(100, 10), h2)


def cnn(x):
    h = edf.ReLU(edf.Conv(edf.ConvParams(1, 25, 5), x, stride=2, padding=1))     # (N, 25, 19)
    h = edf.ReLU(edf.Conv(edf.ConvParams(25, 25, 3), h, stride=2, padding=1))    # (N, 25, 10)
    h = edf.ReLU(edf.Conv(edf.ConvParams(25, 25, 3), h, stride=2, padding=1))    # (N, 25, 5)
    return edf.Affine(edf.AffineParams(125, 10), edf.Flatten(h))


def train(model, channels_first, seed):
    """Test accuracy (%) and training seconds of `model`, trained from a fresh graph."""
    np.random.seed(seed)
    edf.clear_compgraph()
    x, y = edf.Input(), edf.Input()
    L = edf.SoftmaxCrossEntropyLoss(model(x), y)
    X, Xt = (X_train[:, None, :], X_test[:, None, :]) if channels_first else (X_train, X_test)
    began = time.perf_counter()
    edf.fit(L, x, y, X, y_train, epochs=epochs, batch_size=BATCH, optimizer=optim.Adam(edf.Parameters, lr=1e-2),
            seed=seed, progress=False)
    seconds = time.perf_counter() - began
    _, accuracy = edf.evaluate(L, x, y, Xt, y_test)
    return 100 * accuracy, seconds


print(f"MNIST-1D: {len(X_train)} training and {len(X_test)} test examples of length {X_train.shape[1]}; "
      f"{epochs * len(X_train) // BATCH} steps of {BATCH} per model, Adam lr 1e-2")
print(f"{'model':<22}{'paper':>8}{'cedf':>8}{'(lowest-highest)':>18}{'train, per run':>16}")
for name, model, channels_first in (("logistic regression", logistic, False), ("MLP", mlp, False),
                                    ("CNN", cnn, True)):
    accuracies, seconds = zip(*(train(model, channels_first, seed) for seed in range(args.seeds)))
    spread = f"({min(accuracies):.1f}-{max(accuracies):.1f})"
    print(f"{name:<22}{PAPER[name]:>7}%{np.mean(accuracies):>7.1f}%{spread:>18}{np.mean(seconds):>15.2f}s")
print(f"total {time.perf_counter() - start:.1f} s (data included)")
