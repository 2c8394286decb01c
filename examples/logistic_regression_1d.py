"""Logistic regression in one dimension, trained by the lecture's gradient descent loop.

The slides' example: points on a line with labels 0 and 1, and the model
p(y = 1 | x) = sigmoid(w x + b), trained with Forward(), Backward(L) and
UpdateParameters() on the whole data set at every step.

    python examples/logistic_regression_1d.py [--out DIR]

writes DIR/logistic_regression_1d.png (DIR defaults to ./figures).
"""
import argparse
from pathlib import Path

import numpy as np

import cedf as edf
from cedf import data, metrics, plot

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("figures"),
                    help="directory for the figure (default: figures/)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# The data: x is (n, 1), one feature per row; labels are 0 or 1.
X, labels = data.logistic_1d(n=40, seed=0)

# The graph, as on the slides: p = sigmoid(x w + b), L = binary cross-entropy.
np.random.seed(0)
edf.clear_compgraph()
x = edf.Input()
y = edf.Input()
x.value, y.value = X, labels
params = edf.AffineParams(1, 1)
p = edf.Sigmoid(edf.Affine(params, x))
L = edf.BCELoss(p, y)

# The lecture's gradient descent loop.
edf.learning_rate = 0.5
for step in range(500):
    edf.Forward()
    edf.Backward(L)
    edf.UpdateParameters()

edf.Forward()
w, b = params.A.value.item(), params.b.value.item()
print(f"trained 500 steps of gradient descent (learning rate {edf.learning_rate}) on {len(X)} points")
print(f"p(y = 1 | x) = sigmoid({w:.3f} x {b:+.3f}); mean loss {np.mean(L.value):.4f}, "
      f"accuracy {metrics.accuracy(labels, p.value):.1%}")

path = args.out / "logistic_regression_1d.png"
plot.logistic_regression_1d(X, labels, w, b, path=path)
print(f"wrote {path}")
