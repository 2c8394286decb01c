"""A 2-D CNN on scikit-learn's 8x8 digits: convolution, pooling, convolution, dense.

Each digit is an image of one channel, (1, 8, 8). A 3x3 convolution of 16
channels (padding 1 keeps the 8x8) and a ReLU, 2x2 max pooling to 4x4, a 3x3
convolution of 32 channels and a ReLU, then the 512 features to the 10 classes
with the softmax cross-entropy; Adam, batches of 32. The lecture's MLP on the
same data (examples/mlp_digits.py) ends near 97 %; the convolutions, which
see neighbouring pixels together, reach 98 % or more.

    python examples/cnn_digits.py [--epochs N]
"""
import argparse
import time

import numpy as np

import cedf as edf
from cedf import data, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20, help="passes over the training data (default: 20)")
args = parser.parse_args()
if args.epochs < 1:
    parser.error("--epochs must be at least 1")

X_train, X_test, y_train, y_test = data.digits()   # rows of 64 pixels in [0, 1]
X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)   # (N, channels, height, width)

np.random.seed(0)
edf.clear_compgraph()
x, y = edf.Input(), edf.Input()
h = edf.ReLU(edf.Conv(edf.ConvParams(1, 16, (3, 3)), x, padding=1))      # (N, 16, 8, 8)
h = edf.MaxPool(h, 2)                                                    # (N, 16, 4, 4)
h = edf.ReLU(edf.Conv(edf.ConvParams(16, 32, (3, 3)), h, padding=1))     # (N, 32, 4, 4)
L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(32 * 4 * 4, 10), edf.Flatten(h)), y)

start = time.perf_counter()
history = edf.fit(L, x, y, X_train, y_train, epochs=args.epochs, batch_size=32,
                  optimizer=optim.Adam(edf.Parameters, lr=3e-3), progress=False)
seconds = time.perf_counter() - start
test_loss, test_accuracy = edf.evaluate(L, x, y, X_test, y_test)

print(f"trained conv-pool-conv-dense CNN on {len(X_train)} digits: {history.epochs} epochs of Adam in {seconds:.2f} s")
print(f"final training loss {history.loss[-1]:.4f}, accuracy {history.accuracy[-1]:.1%}")
print(f"test loss {test_loss:.4f}, accuracy {test_accuracy:.1%} ({len(X_test)} held-out digits)")
