"""Optimisers: mini-batch steppers with compiled updates, and the slides' full-batch methods.

`SGD` and `Adam` follow PyTorch's update rules exactly (``torch.optim.SGD``
and ``torch.optim.Adam``); after ``Forward(); Backward(L)``, ``opt.step()``
updates every parameter it was given from its ``.grad``, in place, with the
kernels of the backend in use (`cedf.backend`). The lecture's
``UpdateParameters()`` stays plain gradient descent.

`minimize` is for a whole data set at once, as the slides do it: gradient
descent with backtracking line search (``method="gd"``), or any gradient-based
method of `scipy.optimize.minimize` ("L-BFGS-B", "CG", "BFGS", ...) on a flat
vector of all the parameters, stopping when the gradient's largest entry (its
infinity norm, SciPy's ``gtol``) is below `tol`.
"""
import numpy as np

from . import backend
from .graph import graph_of
from .nodes import Parameter, describe


def _parameters(params, owner):
    params = list(params)
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{owner}: params must be Parameters (e.g. cedf.Parameters), got {type(p).__name__}")
    if not params:
        raise ValueError(f"{owner}: no parameters to optimise")
    return params


def _check_rate(owner, name, value, low=0.0, high=None, closed=True):
    ok = value >= low if closed else value > low
    if high is not None:
        ok = ok and value < high
    if not (isinstance(value, (int, float, np.floating)) and ok):
        bound = f"in [{low}, {high})" if high is not None else (f">= {low}" if closed else f"> {low}")
        raise ValueError(f"{owner}: {name} must be {bound}, got {value!r}")
    return float(value)


def _flat(p, owner):
    """The parameter's value and gradient as flat, writable views (the kernels run on 1-D buffers)."""
    value, grad = p.value, p.grad
    if grad is None:
        raise RuntimeError(f"{owner}: {describe(p)} has no gradient; call Backward(L) before step()")
    if not (isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64)
            and value.flags.c_contiguous and value.flags.writeable):
        p.value = value = np.ascontiguousarray(value, dtype=value.dtype if np.asarray(value).dtype.kind == "f"
                                               else np.float64)
    grad = np.asarray(grad, dtype=value.dtype, order="C")
    if grad.shape != value.shape:
        raise ValueError(f"{owner}: a parameter's grad has shape {grad.shape}, its value {value.shape}")
    return value.reshape(-1), grad.reshape(-1)


class SGD:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.params = _parameters(params, "SGD")
        self.lr = _check_rate("SGD", "lr", lr, closed=False)
        self.momentum = _check_rate("SGD", "momentum", momentum)
        self.weight_decay = _check_rate("SGD", "weight_decay", weight_decay)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov needs a momentum above 0")
        self.nesterov = bool(nesterov)
        self._buffers = {}   # id(param) -> momentum buffer

    def step(self):
        for p in self.params:
            value, grad = _flat(p, "SGD")
            buf, first = None, False
            if self.momentum:
                buf = self._buffers.get(id(p))
                if buf is None or buf.shape != value.shape or buf.dtype != value.dtype:
                    buf = self._buffers[id(p)] = np.zeros_like(value)
                    first = True
            backend.kernels.sgd_update(value, grad, buf, self.lr, self.momentum, self.weight_decay,
                                       self.nesterov, first)


class Adam:
    """Adam (Kingma and Ba), with PyTorch's bias correction and L2 weight decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = _parameters(params, "Adam")
        self.lr = _check_rate("Adam", "lr", lr, closed=False)
        self.beta1 = _check_rate("Adam", "betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = _check_rate("Adam", "betas[1]", betas[1], 0.0, 1.0)
        self.eps = _check_rate("Adam", "eps", eps)
        self.weight_decay = _check_rate("Adam", "weight_decay", weight_decay)
        self._state = {}   # id(param) -> [step, m, v]

    def step(self):
        for p in self.params:
            value, grad = _flat(p, "Adam")
            state = self._state.get(id(p))
            if state is None or state[1].shape != value.shape or state[1].dtype != value.dtype:
                state = self._state[id(p)] = [0, np.zeros_like(value), np.zeros_like(value)]
            state[0] += 1
            backend.kernels.adam_update(value, grad, state[1], state[2], self.lr, self.beta1, self.beta2,
                                        self.eps, self.weight_decay, state[0])


class MinimizeResult(dict):
    """What `minimize` found: x (the flat parameters), fun (mean loss), grad_norm (largest entry),
    nit, success (grad_norm <= tol), message."""

    __getattr__ = dict.__getitem__


def _objective(graph, loss, params):
    """f(θ) and its gradient, by one Forward and Backward with the parameters set to θ."""
    shapes = [p.value.shape for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    splits = np.cumsum(sizes)[:-1]

    def set_parameters(theta):
        for p, part, shape in zip(params, np.split(theta, splits), shapes):
            p.value[...] = part.reshape(shape)

    def fun(theta):
        set_parameters(theta)
        graph.Forward()
        graph.Backward(loss)
        grad = np.concatenate([np.asarray(p.grad, dtype=np.float64).reshape(-1) for p in params])
        return float(np.mean(np.asarray(loss.value, dtype=np.float64))), grad

    return fun, set_parameters


def _gradient_descent(fun, theta, tol, max_iter, step=1.0, shrink=0.5, c=1e-4):
    """The slides' gradient descent: from step 1, halve until the Armijo condition holds."""
    f, g = fun(theta)
    for nit in range(max_iter):
        if np.max(np.abs(g), initial=0.0) <= tol:
            return theta, f, g, nit, "gradient below tol"
        t, squared = step, float(g @ g)
        while True:
            candidate = theta - t * g
            f_new, g_new = fun(candidate)
            if f_new <= f - c * t * squared or t < 1e-20:
                break
            t *= shrink
        theta, f, g = candidate, f_new, g_new
        step = min(1.0, 2 * t)   # start the next search near where this one ended
    return theta, f, g, max_iter, "maximum number of iterations reached"


def minimize(loss, method="L-BFGS-B", tol=1e-6, max_iter=1000, params=None, graph=None):
    """Minimise the mean of ``loss.value`` over all parameters of its graph, full batch.

    `method`: "gd" (gradient descent with backtracking line search, as on the
    slides) or a gradient-based method of `scipy.optimize.minimize`. Stops when
    the gradient's norm is below `tol` (for "L-BFGS-B", its largest entry).
    Leaves the parameters at the minimiser found and returns a MinimizeResult,
    whose `success` says whether the gradient got below `tol`. (The lecture's
    Sigmoid clips its input at +-10, where its gradient is not the loss's:
    use `BCEWithLogitsLoss` for an exact optimum.)
    """
    graph = graph_of(loss, graph, "minimize", "the loss ")
    params = _parameters(graph.Parameters if params is None else params, "minimize")
    for p in params:
        if not (isinstance(p.value, np.ndarray) and p.value.dtype.kind == "f" and p.value.flags.writeable):
            p.value = np.array(p.value, dtype=np.float64)
    fun, set_parameters = _objective(graph, loss, params)
    theta0 = np.concatenate([p.value.astype(np.float64).reshape(-1) for p in params])

    if method == "gd":
        theta, f, g, nit, message = _gradient_descent(fun, theta0, tol, max_iter)
    else:
        from scipy.optimize import minimize as scipy_minimize

        options = {"maxiter": max_iter, "gtol": tol}
        if method.upper() == "L-BFGS-B":
            options["ftol"] = 0.0   # stop on the gradient, as the slides do, not on a small decrease
        res = scipy_minimize(fun, theta0, jac=True, method=method, options=options)
        theta, nit, message = res.x, res.nit, str(res.message)
        f, g = fun(theta)
    set_parameters(theta)
    graph.Forward()
    grad_norm = float(np.max(np.abs(g), initial=0.0))
    return MinimizeResult(x=theta, fun=f, grad_norm=grad_norm, nit=nit, success=grad_norm <= tol, message=message)
