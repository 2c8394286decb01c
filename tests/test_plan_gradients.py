"""The compiled plan's backward pass against central differences, for every node and pass the plan has.

tests/test_plan.py holds the plan's gradients to the reference backend's; here
they are held to the derivative itself, the symmetric difference quotient of
the mean loss (float64), with `gradcheck` running the plan for the backprop and
for every quotient: a fused or folded pass that only the plan has is checked
against the loss it differentiates, not only against another implementation
of the same formulas.

One graph per case, each built so that the plan takes the pass named: the fused
pairs, the unfused ones (the Softmax or Sigmoid read by a second node too), an
Affine's bias added and differentiated in its Sigmoid's passes, an Affine
reading an Input (no gradient for x), and gradients accumulated from two
consumers. With cedf's own nodes, the only ones the plan compiles, a computed
node has one differentiable input, so two consumers can both reach a loss only
through a shared parameter: that is the accumulation case.
"""
import importlib
import pkgutil

import numpy as np
import pytest

import cedf
import cedf as edf
from cedf import _engine, plan

#: What gradcheck's quotients are good to in float64 here: eps = 1e-6 leaves a truncation
#: error of about 1e-12 and a rounding error of about 1e-10 of the loss; the errors found
#: are 1e-10 to 1e-8. A wrong loop is off by far more (a sign, a factor).
TOL = 1e-6

#: The plan's operations, by number (cedf._engine's enum).
OPS = {getattr(_engine, name): name for name in dir(_engine) if name.endswith(("_FWD", "_BWD"))
       or name in ("ADD", "ACCUMULATE")}
# And the operations that kernel modules bring (cedf/_plan_op.pxd), by the names they give them.
for _module in pkgutil.iter_modules(cedf.__path__):
    if _module.name.startswith("_"):
        OPS.update({capsule: name for name, capsule in
                    getattr(importlib.import_module(f"cedf.{_module.name}"), "PLAN_OPS", {}).items()})


@pytest.fixture
def programs(monkeypatch):
    """The operations of every program the plan builds, as names; a backward one that adds into a
    gradient buffer another operation wrote also appears with " +=", an AFFINE_BWD without dX as such,
    a SOFTMAX_FWD adding its Affine's bias and a SOFTMAX_CE_BWD summing its bias gradient with " + bias"."""
    made = set()
    build = plan.Program

    def recording(buffers, ops, messages=None):
        for code, _, _, args, accs, *_ in ops:
            name = OPS.get(code)
            if name is None:
                continue
            made.add(name)
            if name.endswith("_BWD") and any(accs):
                made.add(name + " +=")
            if code == _engine.AFFINE_BWD and args[3] is None:
                made.add("AFFINE_BWD without dX")
            bias_at = {_engine.SOFTMAX_FWD: 2, _engine.SOFTMAX_CE_BWD: 5}.get(code)
            if bias_at is not None and len(args) > bias_at and args[bias_at] is not None:
                made.add(name + " + bias")
        return build(buffers, ops, messages)

    monkeypatch.setattr(plan, "Program", recording)
    return made


BATCH, FEATURES, CLASSES = 8, 4, 3


def data(labels, seed=0):
    """Inputs x (random data) and y (class indices, or 0/1 for labels="binary"); the lecture's seed for the parameters."""
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((BATCH, FEATURES))
    y.value = rng.integers(0, 2, BATCH).astype(np.float64) if labels == "binary" else rng.integers(0, CLASSES, BATCH)
    return x, y


def layer(h, n_in, n_out, params=None):
    return edf.Affine(params or edf.AffineParams(n_in, n_out), h)


def ce_head(h, n_in, y):
    return edf.CrossEntropyLoss(edf.Softmax(layer(h, n_in, CLASSES)), y)


# Each case builds its graph and returns (loss, pre-activations that must stay away from a kink).

def fused_softmax_ce():
    x, y = data("classes")
    return ce_head(x, FEATURES, y), []


def fused_sigmoid_bce():
    x, y = data("binary")
    return edf.BCELoss(edf.Sigmoid(layer(x, FEATURES, 1)), y), []


def hidden_sigmoid():
    x, y = data("classes")
    return ce_head(edf.Sigmoid(layer(x, FEATURES, 5)), 5, y), []


def softmax_and_ce_apart():
    x, y = data("classes")
    p = edf.Softmax(layer(edf.Tanh(layer(x, FEATURES, 5)), 5, CLASSES))
    edf.Tanh(p)   # a second consumer, not upstream of the loss: no fusion
    return edf.CrossEntropyLoss(p, y), []


def sigmoid_and_bce_apart():
    x, y = data("binary")
    s = edf.Sigmoid(layer(edf.Tanh(layer(x, FEATURES, 5)), 5, 1))
    edf.Tanh(s)
    return edf.BCELoss(s, y), []


def tanh():
    x, y = data("classes")
    return ce_head(edf.Tanh(layer(x, FEATURES, 5)), 5, y), []


def leaky_relu():
    x, y = data("classes")
    u = layer(x, FEATURES, 5)
    return ce_head(edf.LeakyReLU(u, slope=0.2), 5, y), [u]


def relu():
    x, y = data("classes", seed=3)
    u = layer(x, FEATURES, 5)
    return ce_head(edf.ReLU(u), 5, y), [u]


def leaky_relu_negative_slope():
    # A slope < 0 makes the output positive where the input is negative: the backward reads the input.
    x, y = data("classes")
    u = layer(x, FEATURES, 5)
    return ce_head(edf.LeakyReLU(u, slope=-0.3), 5, y), [u]


def relu_of_an_affine_read_twice():
    # The Affine's value is read by the Add too: it is made with its bias, and the ReLU reads it.
    x, y = data("classes", seed=3)
    u = layer(x, FEATURES, 5)
    return ce_head(edf.Add(edf.ReLU(u), u), 5, y), [u]


def softmax_cross_entropy_loss():
    x, y = data("classes")
    return edf.SoftmaxCrossEntropyLoss(layer(edf.Tanh(layer(x, FEATURES, 5)), 5, CLASSES), y), []


def shared_parameters():
    x, y = data("classes")
    shared = edf.AffineParams(FEATURES, FEATURES)
    h = edf.Sigmoid(layer(edf.Sigmoid(layer(x, FEATURES, FEATURES, shared)), FEATURES, FEATURES, shared))
    return ce_head(h, FEATURES, y), []


def residual():
    x, y = data("classes")
    h = edf.Tanh(layer(x, FEATURES, 6))
    r = edf.Add(h, edf.Tanh(layer(h, 6, 6)))
    both = edf.Add(r, r)   # one input as both terms: its gradient twice
    return ce_head(edf.Flatten(edf.Reshape(both, (2, 3))), 6, y), []


def conv_1d_and_2d():
    # A 1-D Conv reading an Input (no dx), a Conv reading a node (dx by col2im), a 2-D pair of them;
    # Tanh between them (ReLU's kink would need data kept away from it).
    x, y = data("classes")
    x.value = x.value.reshape(BATCH, 1, FEATURES)
    seq = edf.Tanh(edf.Conv(edf.ConvParams(1, 3, 3), x, padding=1))
    seq = edf.Tanh(edf.Conv(edf.ConvParams(3, 2, 2), seq, stride=2, padding=1))
    img = edf.Conv(edf.ConvParams(2, 2, (2, 2)), edf.Reshape(seq, (2, 1, 3)), stride=(1, 2), padding=(1, 0))
    img = edf.Conv(edf.ConvParams(2, 2, (2, 1)), edf.Tanh(img), padding=(0, 1))
    return ce_head(edf.Flatten(img), 2 * 3, y), []


def conv_shared_kernel():
    # One ConvParams read by two Convs (its gradients accumulated), the second reading the first.
    x, y = data("classes")
    shared = edf.ConvParams(2, 2, 3)
    h = edf.Reshape(x, (2, 2))
    h = edf.Tanh(edf.Conv(shared, edf.Tanh(edf.Conv(shared, h, padding=1)), padding=1))
    return ce_head(edf.Flatten(h), 4, y), []


def pooled(pool, size, stride, shape):
    """Affine -> Tanh -> Reshape to (C, L) or (C, H, W) -> pool -> Flatten -> the head: the pool's
    gradient reaches the first layer's parameters."""
    x, y = data("classes")
    r = edf.Reshape(edf.Tanh(layer(x, FEATURES, int(np.prod(shape)))), shape)
    p = pool(r, size, stride=stride)
    edf.Forward()
    return ce_head(edf.Flatten(p), int(np.prod(p.value.shape[1:])), y), []


def max_and_avg_pools():
    """One input read by a MaxPool and an AvgPool, added: the second backward adds into the first's."""
    x, y = data("classes")
    r = edf.Reshape(edf.Tanh(layer(x, FEATURES, 12)), (2, 6))
    both = edf.Add(edf.MaxPool(r, 3, stride=1), edf.AvgPool(r, 3, stride=1))
    return ce_head(edf.Flatten(both), 8, y), []


def batch_norm():
    """BatchNorm in training mode, per feature of (N, F) and per channel of (N, C, L) and (N, C, H, W)."""
    x, y = data("classes")
    h = edf.BatchNorm(edf.Tanh(layer(x, FEATURES, 6)), num_features=6, momentum=0.2)
    h.weight.value[...] = np.linspace(0.5, 1.5, 6)
    h.bias.value[...] = np.linspace(-0.3, 0.3, 6)
    c = edf.BatchNorm(edf.Reshape(h, (3, 2)), num_features=3)
    c = edf.BatchNorm(edf.Reshape(c, (2, 3, 1)), num_features=2)
    return ce_head(edf.Flatten(c), 6, y), []


def layer_norm():
    x, y = data("classes")
    h = edf.LayerNorm(edf.Tanh(layer(x, FEATURES, 6)), num_features=6)
    h.weight.value[...] = np.linspace(0.5, 1.5, 6)
    h.bias.value[...] = np.linspace(-0.3, 0.3, 6)
    return ce_head(edf.Flatten(edf.LayerNorm(edf.Reshape(h, (2, 3)), num_features=3)), 6, y), []


#: case -> (graph, the plan's operations it must run).
CASES = {
    "Affine of an Input -> Softmax -> CrossEntropyLoss, fused":
        (fused_softmax_ce, {"AFFINE_BWD without dX", "SOFTMAX_FWD + bias", "SOFTMAX_CE_BWD + bias"}),
    "Affine -> Sigmoid -> BCELoss, fused, the bias added by the Sigmoid":
        (fused_sigmoid_bce, {"BIAS_SIGMOID_FWD", "SIGMOID_BCE_BWD", "AFFINE_BWD without dX"}),
    "hidden Sigmoid summing its Affine's bias gradient":
        (hidden_sigmoid, {"BIAS_SIGMOID_FWD", "SIGMOID_BWD", "AFFINE_BWD", "SOFTMAX_FWD + bias",
                          "SOFTMAX_CE_BWD + bias"}),
    "Softmax and CrossEntropyLoss apart":
        (softmax_and_ce_apart, {"SOFTMAX_FWD + bias", "SOFTMAX_BWD", "CE_BWD", "TANH_BWD"}),
    "Sigmoid and BCELoss apart":
        (sigmoid_and_bce_apart, {"BIAS_SIGMOID_FWD", "SIGMOID_BWD", "BCE_BWD"}),
    "Tanh": (tanh, {"TANH_FWD", "TANH_BWD"}),
    "LeakyReLU, slope 0.2, summing its Affine's bias gradient": (leaky_relu, {"BIAS_LEAKY_FWD", "LEAKY_BIAS_BWD"}),
    "ReLU summing its Affine's bias gradient": (relu, {"BIAS_LEAKY_FWD", "LEAKY_BIAS_BWD"}),
    "LeakyReLU, slope -0.3, apart from its Affine": (leaky_relu_negative_slope, {"LEAKY_FWD", "LEAKY_BWD"}),
    "ReLU of an Affine read twice, apart from it": (relu_of_an_affine_read_twice, {"LEAKY_FWD", "LEAKY_BWD", "ADD"}),
    "SoftmaxCrossEntropyLoss": (softmax_cross_entropy_loss, {"CE_LOGITS_FWD", "CE_LOGITS_BWD"}),
    "residual Add (an input as both terms), Reshape, Flatten": (residual, {"ADD", "ACCUMULATE"}),
    "Conv 1-D and 2-D, reading an Input and reading nodes": (conv_1d_and_2d, {"CONV_FWD", "CONV_BWD"}),
    "one ConvParams read by two Convs": (conv_shared_kernel, {"CONV_FWD", "CONV_BWD", "CONV_BWD +="}),


    "MaxPool 1-D, overlapping windows": (lambda: pooled(edf.MaxPool, 3, 1, (2, 7)), {"MAXPOOL_FWD", "MAXPOOL_BWD"}),
    "MaxPool 2-D, (2, 3) at strides (1, 2)":
        (lambda: pooled(edf.MaxPool, (2, 3), (1, 2), (2, 4, 5)), {"MAXPOOL_FWD", "MAXPOOL_BWD"}),
    "AvgPool 1-D, positions no window covers": (lambda: pooled(edf.AvgPool, 2, 3, (2, 8)), {"AVGPOOL_FWD", "AVGPOOL_BWD"}),
    "AvgPool 2-D, overlapping": (lambda: pooled(edf.AvgPool, 2, 1, (1, 3, 4)), {"AVGPOOL_FWD", "AVGPOOL_BWD"}),
    "MaxPool and AvgPool of one input, added": (max_and_avg_pools, {"MAXPOOL_BWD +=", "AVGPOOL_BWD", "ADD"}),
    "BatchNorm in training mode, (N, F), (N, C, L), (N, C, H, W)": (batch_norm, {"BATCH_NORM_FWD", "BATCH_NORM_BWD"}),
    "LayerNorm, (N, F) and (N, L, F)": (layer_norm, {"LAYER_NORM_FWD", "LAYER_NORM_BWD"}),
    "one parameter read by two layers":
        (shared_parameters, {"AFFINE_BWD +=", "SIGMOID_BWD +=", "AFFINE_BWD without dX"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_planned_gradients_agree_with_central_differences(case, programs):
    build, ops = CASES[case]
    edf.set_backend("cython")
    edf.DT = np.float64
    L, kinks = build()
    for _ in range(2):   # the first Forward runs node by node and builds the plan
        edf.Forward()
    assert edf.current_graph()._planned
    for u in kinks:
        # ReLU's kink: an input within a nudge of 0 would make the quotient straddle it.
        assert np.min(np.abs(u.value)) > 1e-3, "choose data away from the kink"
    result = edf.gradcheck(L, tol=TOL)
    assert result.planned_backprop and result.planned_quotients, str(result)
    assert result.passed, str(result)
    missing = ops - programs
    assert not missing, f"the plan did not run {sorted(missing)}; it ran {sorted(programs)}"
