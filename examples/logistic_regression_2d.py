"""Logistic regression in the plane, fit by L-BFGS on the whole data set, and its graph drawn.

The slides' two Gaussian blobs and the model p(y = 1 | x) = sigmoid(x A + b),
its mean binary cross-entropy minimised in float64 by `cedf.optim.minimize`
until the gradient vanishes. The figure shows the probability over the plane
and its 0.5 contour, the decision boundary.

    python examples/logistic_regression_2d.py [--out DIR]

writes DIR/decision_boundary_2d.png and DIR/logistic_regression_2d.dot (and
DIR/logistic_regression_2d.png when Graphviz's `dot` is installed).
"""
import argparse
import shutil
from pathlib import Path

import numpy as np

import cedf as edf
from cedf import data, metrics, optim, plot

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("figures"),
                    help="directory for the figures (default: figures/)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

X, labels = data.blobs(n=200, seed=0)   # X (200, 2), labels in {0, 1}

# float64, so that the optimiser can drive the gradient to (almost) zero.
edf.DT = np.float64
np.random.seed(0)
edf.clear_compgraph()
x = edf.Input()
y = edf.Input()
x.value, y.value = X, labels
params = edf.AffineParams(2, 1, name="logreg")   # named: the drawn graph shows logreg.A, logreg.b
z = edf.Affine(params, x)           # the logit w0 + w1 x1 + w2 x2
p = edf.Sigmoid(z)                  # its probability, for the figure
# The loss straight from the logit: the exact gradient of the exact loss, for
# every z (the lecture's Sigmoid clips z to [-10, 10], which well separated
# points reach, and there its gradient is no longer the loss's).
L = edf.BCEWithLogitsLoss(z, y)

result = optim.minimize(L, method="L-BFGS-B", tol=1e-8)
A, b = params.A.value[:, 0], params.b.value[0]
print(f"L-BFGS-B: {result.nit} iterations, mean loss {result.fun:.4f}, gradient norm {result.grad_norm:.1e}")
print(f"p(y = 1 | x) = sigmoid({A[0]:.3f} x1 {A[1]:+.3f} x2 {b:+.3f}); "
      f"training accuracy {metrics.accuracy(labels, p.value):.1%}")

# The graph that L depends on, in Graphviz's DOT language (p is not part of it).
dot_path = args.out / "logistic_regression_2d.dot"
dot_path.write_text(edf.draw(L))
print(f"wrote {dot_path}")
if shutil.which("dot"):
    png_path = args.out / "logistic_regression_2d.png"
    edf.draw(L, png_path)
    print(f"wrote {png_path}")
else:
    print(f"Graphviz's `dot` is not on PATH, so the graph is not rendered (install graphviz, "
          f"or render the DOT file elsewhere: dot -Tpng -O {dot_path})")

path = args.out / "decision_boundary_2d.png"
plot.decision_boundary(p, x, X, labels, path=path)
print(f"wrote {path}")
