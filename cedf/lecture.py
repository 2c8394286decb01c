"""The lecture's EDF as the slides show it, in plain NumPy: what cedf is tested and measured against.

Global lists, fresh arrays every step, `DT(value)` for parameters: nothing of
cedf's engine is used here. Softmax floors its shifted logits at -10 and
Sigmoid clips at +-10 as the lecture's framework does; BCELoss follows the
slides' formula. The tests check that cedf's numbers agree with this module's,
and `benchmarks/compare.py` times it as the baseline.
"""
import numpy as np

DT = np.float32
learning_rate = 0.001
CompNodes = []
Parameters = []


def clear_compgraph():
    global CompNodes, Parameters
    CompNodes = []
    Parameters = []


class Input:
    def __init__(self):
        pass

    def addgrad(self, delta):
        pass


class Parameter:
    def __init__(self, value):
        self.value = DT(value)
        Parameters.append(self)

    def addgrad(self, delta):
        self.grad += np.sum(delta, axis=0)

    def UpdateParameters(self):
        self.value -= learning_rate * self.grad


class CompNode:
    def addgrad(self, delta):
        self.grad += delta


class AffineParams:
    def __init__(self, nInputs, nOutputs):
        bound = np.sqrt(3 / nInputs)
        self.A = Parameter(np.random.uniform(-bound, bound, (nInputs, nOutputs)))
        self.b = Parameter(np.zeros(nOutputs))


class Affine(CompNode):
    def __init__(self, params, x):
        CompNodes.append(self)
        self.params = params
        self.x = x

    def forward(self):
        self.value = np.matmul(self.x.value, self.params.A.value) + self.params.b.value

    def backward(self):
        self.x.addgrad(np.matmul(self.grad, self.params.A.value.T))
        self.params.b.addgrad(self.grad)
        self.params.A.addgrad(self.x.value[:, :, np.newaxis] * self.grad[:, np.newaxis, :])


class Sigmoid(CompNode):
    def __init__(self, x):
        CompNodes.append(self)
        self.x = x

    def forward(self):
        bounded = np.maximum(-10, np.minimum(10, self.x.value))
        self.value = 1 / (1 + np.exp(-bounded))

    def backward(self):
        self.x.addgrad(self.grad * self.value * (1 - self.value))


class Softmax(CompNode):
    def __init__(self, x):
        CompNodes.append(self)
        self.x = x

    def forward(self):
        lmax = np.max(self.x.value, axis=-1, keepdims=True)
        ex = np.exp(np.maximum(-10, self.x.value - lmax))
        self.value = ex / np.sum(ex, axis=-1, keepdims=True)

    def backward(self):
        gvdot = np.sum(self.grad * self.value, axis=-1, keepdims=True)
        self.x.addgrad(self.value * (self.grad - gvdot))


class CrossEntropyLoss(CompNode):
    def __init__(self, x, y):
        CompNodes.append(self)
        self.x = x
        self.y = y

    def forward(self):
        rows = np.arange(len(self.y.value))
        self.value = -np.log(self.x.value[rows, self.y.value])

    def backward(self):
        rows = np.arange(len(self.y.value))
        delta = np.zeros(self.x.value.shape, dtype=DT)
        delta[rows, self.y.value] = -self.grad / self.x.value[rows, self.y.value]
        self.x.addgrad(delta)


class BCELoss(CompNode):
    def __init__(self, x, y):
        CompNodes.append(self)
        self.x = x
        self.y = y

    def forward(self):
        p, y = self.x.value.reshape(-1), self.y.value
        self.value = -y * np.log(p) - (1 - y) * np.log(1 - p)

    def backward(self):
        p, y = self.x.value.reshape(-1), self.y.value
        self.x.addgrad((self.grad * (p - y) / (p * (1 - p))).reshape(self.x.value.shape))


def Forward():
    for c in CompNodes:
        c.forward()


def Backward(loss):
    for c in CompNodes + Parameters:
        c.grad = np.zeros(c.value.shape, dtype=DT)
    loss.grad = np.ones(loss.value.shape) / len(loss.value)
    for c in CompNodes[::-1]:
        c.backward()


def UpdateParameters():
    for p in Parameters:
        p.UpdateParameters()
