"""Optimisers: mini-batch steppers with compiled updates, and the slides' full-batch methods.

`SGD` and `Adam` follow PyTorch's update rules exactly (``torch.optim.SGD``
and ``torch.optim.Adam``); after ``Forward(); Backward(L)``, ``opt.step()``
updates every parameter it was given from its ``.grad``, in place: on the
compiled backend all of them in one compiled call, as ``UpdateParameters()``
does, else with the kernels of the backend in use (`cedf.backend`) one
parameter at a time. The lecture's ``UpdateParameters()`` stays plain
gradient descent.

`minimize` is for a whole data set at once, as the slides do it: gradient
descent with backtracking line search (``method="gd"``), or any gradient-based
method of `scipy.optimize.minimize` ("L-BFGS-B", "CG", "BFGS", ...) on a flat
vector of all the parameters, stopping when the gradient's largest entry (its
infinity norm, SciPy's ``gtol``) is below `tol`.
"""
import threading

import numpy as np

from . import backend
from .backend import Replan, _engine
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
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    ok = number and np.isfinite(value) and (value >= low if closed else value > low)
    if ok and high is not None:
        ok = value < high
    if not ok:
        bound = f"in [{low}, {high})" if high is not None else (f">= {low}" if closed else f"> {low}")
        raise ValueError(f"{owner}: {name} must be {bound}, a finite number, got {value!r}")
    return float(value)


def _flat(p, owner):
    """The parameter's value and gradient as flat, writable views (the kernels run on 1-D buffers).

    A value that is no C-contiguous float32 or float64 array of this machine's byte
    order (a list, a Fortran or big-endian array, integers) is replaced by one; a
    read-only one is refused: the step updates values in place.
    """
    value, grad = p.value, p.grad
    if grad is None:
        raise RuntimeError(f"{owner}: {describe(p)} has no gradient; call Backward(L) before step()")
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        raise ValueError(f"{owner}: {describe(p)} has a read-only .value; step() updates it in place "
                         f"(give it a writable array, e.g. p.value = p.value.copy())")
    if not (isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64)
            and value.dtype.isnative and value.flags.c_contiguous):
        arr = np.asarray(value)
        dtype = arr.dtype.newbyteorder("=") if arr.dtype.kind == "f" and arr.dtype.itemsize in (4, 8) else np.float64
        p.value = value = np.ascontiguousarray(arr, dtype=dtype)
    grad = np.asarray(grad, dtype=value.dtype, order="C")
    if grad.shape != value.shape:
        raise ValueError(f"{owner}: a parameter's grad has shape {grad.shape}, its value {value.shape}")
    return value.reshape(-1), grad.reshape(-1)


class _Optimizer:
    """What SGD and Adam share: their state, and one compiled update of all their parameters.

    On the compiled backend ``step()`` runs one program (`cedf.plan.update_program`):
    every parameter updated in one call without the GIL, no Python per parameter.
    A parameter whose value or gradient that program cannot take as it is (a
    list, a Fortran array, another dtype) makes the step go through the kernels
    one parameter at a time, as on the NumPy backend, which convert or raise;
    the next step compiles again. Both ways read and write the same state
    buffers, allocated when a parameter is first stepped and again when its
    shape or dtype changes. Setting a hyperparameter drops the program, so the
    next step uses it (the learning rate is read at every step). A step takes
    the lock of the parameters' graph, as the graph's own steps do.
    """

    _NAME = ""
    _CODE = None    # the update's operation in cedf._engine
    _CHECKS = {}    # hyperparameter -> what _check_rate checks it against, as the constructor does

    def __init__(self, params):
        self.params = _parameters(params, self._NAME)
        self._state = {}   # id(param) -> [buffers of the rule (None: not in use)..., step count (float64[1])]
        self._program = None
        graph = self.params[0]._graph
        if graph is not None:
            self._lock = graph.lock
        else:
            self._lock = _engine.StepLock() if _engine is not None else threading.RLock()

    def __setattr__(self, name, value):
        if name in self._CHECKS:
            label, low, high, closed = self._CHECKS[name]
            value = _check_rate(self._NAME, label, value, low, high, closed)
        object.__setattr__(self, name, value)
        if name[0] != "_" and name != "lr":
            object.__setattr__(self, "_program", None)

    def step(self):
        """Update every parameter from its ``.grad`` (call ``Backward(L)`` first)."""
        if backend.kernels is backend._kernels:
            program = self._program if self._program is not None else self._compile()
            if program is not None:
                try:
                    program.run(self.lr)   # takes the lock itself
                    return
                except Replan:
                    pass
        with self._lock:
            self._program = None
            # Every parameter checked (and converted) before any is updated: a refused step updates none.
            flat = [_flat(p, self._NAME) for p in self.params]
            for p, (value, grad) in zip(self.params, flat):
                self._update(value, grad, self._state_of(p, value))

    def _state_of(self, p, value):
        """The state buffers of parameter `p` (flat `value`), made anew when it does not fit."""
        state = self._state.get(id(p))
        if state is None or not self._fits(state) or any(
                s is not None and (s.shape != value.shape or s.dtype != value.dtype) for s in state[:-1]):
            state = self._state[id(p)] = self._new_state(value) + [np.zeros(1)]
            self._program = None
        return state

    def _fits(self, state):
        """Whether `state` is one of this rule's, as its hyperparameters now are."""
        return True

    def _compile(self):
        from .plan import update_program

        for p in self.params:
            if not (isinstance(p.value, np.ndarray) and p.value.dtype.kind == "f"):
                return None   # the kernels one by one say what is wrong, or convert
            self._state_of(p, p.value.reshape(-1))
        self._program = update_program(self.params, self._CODE, lambda p: self._state[id(p)], self._constants())
        if self._program is not None:
            self._program.serialise(self._lock)
            self._program.guard([], self.params)   # opt.params changed in place: compile again
        return self._program


class SGD(_Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

    _NAME = "SGD"
    _CODE = _engine.SGD_STEP if _engine is not None else None
    _CHECKS = {"lr": ("lr", 0.0, None, False), "momentum": ("momentum", 0.0, None, True),
               "weight_decay": ("weight_decay", 0.0, None, True)}

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay   # checked by __setattr__
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov needs a momentum above 0")
        self.nesterov = bool(nesterov)

    def _new_state(self, value):
        return [np.zeros_like(value) if self.momentum else None]   # the momentum buffer

    def _fits(self, state):
        return (state[0] is None) == (self.momentum == 0)   # momentum switched on or off: start again

    def _constants(self):
        return self.momentum, self.weight_decay, float(self.nesterov)

    def _update(self, value, grad, state):
        buf, steps = state
        backend.kernels.sgd_update(value, grad, buf, self.lr, self.momentum, self.weight_decay,
                                   self.nesterov, steps[0] == 0)
        steps[0] = 1


class Adam(_Optimizer):
    """Adam (Kingma and Ba), with PyTorch's bias correction and L2 weight decay."""

    _NAME = "Adam"
    _CODE = _engine.ADAM_STEP if _engine is not None else None
    _CHECKS = {"lr": ("lr", 0.0, None, False), "beta1": ("betas[0]", 0.0, 1.0, True),
               "beta2": ("betas[1]", 0.0, 1.0, True), "eps": ("eps", 0.0, None, True),
               "weight_decay": ("weight_decay", 0.0, None, True)}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.beta1, self.beta2 = lr, betas[0], betas[1]   # each checked by __setattr__
        self.eps, self.weight_decay = eps, weight_decay

    def _new_state(self, value):
        return [np.zeros_like(value), np.zeros_like(value)]   # the moments m and v

    def _constants(self):
        return self.beta1, self.beta2, self.eps, self.weight_decay

    def _update(self, value, grad, state):
        m, v, steps = state
        steps[0] += 1
        backend.kernels.adam_update(value, grad, m, v, self.lr, self.beta1, self.beta2,
                                    self.eps, self.weight_decay, int(steps[0]))


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
