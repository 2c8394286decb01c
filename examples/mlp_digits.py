"""The lecture's MLP on scikit-learn's 8x8 digits, trained with Adam by `cedf.fit`.

64 pixels -> 32 sigmoid hidden units -> 10 softmax outputs, with the
cross-entropy loss, exactly the lecture's graph; `cedf.fit` runs the lecture's
Forward/Backward loop over shuffled mini-batches, steps Adam, and measures
the validation accuracy after every epoch.

    python examples/mlp_digits.py [--out DIR] [--epochs N]

writes DIR/training_curves.png (DIR defaults to ./figures).
"""
import argparse
import time
from pathlib import Path

import numpy as np

import cedf as edf
from cedf import data, optim, plot

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("figures"),
                    help="directory for the figure (default: figures/)")
parser.add_argument("--epochs", type=int, default=30, help="passes over the training data (default: 30)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

X_train, X_test, y_train, y_test = data.digits()   # pixels in [0, 1], labels 0-9
nInputs, nHiddens, nLabels = 64, 32, 10

# The lecture's graph.
np.random.seed(0)
edf.clear_compgraph()
x = edf.Input()
y = edf.Input()
params_1 = edf.AffineParams(nInputs, nHiddens)
params_2 = edf.AffineParams(nHiddens, nLabels)
h = edf.Sigmoid(edf.Affine(params_1, x))
p = edf.Softmax(edf.Affine(params_2, h))
L = edf.CrossEntropyLoss(p, y)

start = time.perf_counter()
history = edf.fit(L, x, y, X_train, y_train, epochs=args.epochs, batch_size=32,
                  optimizer=optim.Adam(edf.Parameters, lr=0.01),
                  validation=(X_test, y_test), progress=False)
seconds = time.perf_counter() - start

print(f"trained {nInputs}-{nHiddens}-{nLabels} MLP on {len(X_train)} digits: "
      f"{history.epochs} epochs of Adam in {seconds:.2f} s")
print(f"final training loss {history.loss[-1]:.4f}, accuracy {history.accuracy[-1]:.1%}")
print(f"final validation loss {history.val_loss[-1]:.4f}, accuracy {history.val_accuracy[-1]:.1%} "
      f"({len(X_test)} held-out digits)")

path = args.out / "training_curves.png"
plot.training_curves(history, path=path)
print(f"wrote {path}")
