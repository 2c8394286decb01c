"""Your own node, written in NumPy as in the lecture, checked against numerical derivatives.

A Softplus node, softplus(z) = log(1 + exp(z)), does what every node does:
`__init__` appends it to edf.CompNodes and keeps its input, `forward` sets
self.value from the input's value, and `backward` passes the gradient on to
its input with addgrad (the chain rule: grad times the derivative, here the
sigmoid). It then works anywhere in a graph, between cedf's compiled nodes,
and `cedf.gradcheck` compares what Backward computes with central differences.

    python examples/custom_node.py [--out DIR]

writes DIR/gradcheck.png (DIR defaults to ./figures).
"""
import argparse
from pathlib import Path

import numpy as np

import cedf as edf
from cedf import plot


class Softplus(edf.CompNode):
    def __init__(self, x):
        edf.CompNodes.append(self)
        self.x = x

    def forward(self):
        self.value = np.logaddexp(0, self.x.value)   # log(1 + exp(z)) without overflow

    def backward(self):
        sigmoid = 0.5 * (1 + np.tanh(self.x.value / 2))   # d softplus(z) / dz
        self.x.addgrad(self.grad * sigmoid)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("figures"),
                    help="directory for the figure (default: figures/)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# A small graph in float64 (in float32 the difference quotient is only good to about 1e-3).
edf.DT = np.float64
np.random.seed(0)
edf.clear_compgraph()
x = edf.Input()
y = edf.Input()
x.value = np.random.randn(8, 3)
y.value = np.random.randint(0, 4, size=8)
h = Softplus(edf.Affine(edf.AffineParams(3, 5, name="layer1"), x))
p = edf.Softmax(edf.Affine(edf.AffineParams(5, 4, name="layer2"), h))
L = edf.CrossEntropyLoss(p, y)

# Every entry of every parameter, and of the input x, nudged by +-eps.
report = edf.gradcheck(L, inputs=[x])
print("Softplus(Affine(x)) -> Affine -> Softmax -> CrossEntropyLoss, batch of 8, float64")
print(report)

path = args.out / "gradcheck.png"
plot.gradcheck_errors(report, path=path)
print(f"wrote {path}")
raise SystemExit(0 if report.passed else 1)
