"""The compiled backend, kernel by kernel: the loops of `_loops.pxd` callable from Python.

Same functions, same signatures and same contract as `cedf/reference.py` (read
its docstring first): forward kernels write `out`, backward kernels add into the
gradient buffers they are given and skip those given as None. The tests compare
the two on random inputs; the nodes call these when they run one by one, and
`_engine.pyx` runs the same loops for a whole graph at once.

Every function checks its buffers' dtypes (the memoryview types), layouts and
shapes with the GIL held, before the loop runs without it; class labels, which
decide where a loop reads, are checked as they are copied into a buffer of the
kernel's own (another thread may write the caller's array meanwhile): no call
from Python can make a loop read or write out of bounds.
"""
from cython cimport floating
from libc.stdint cimport int64_t

import numpy as np

cimport cedf._loops as loops
from cedf._args cimport _blas_size, _expect, _in, _in2, _out, _out2
from cedf._blas cimport use_numpy_blas

cdef extern from "build_info.h":
    const int CEDF_SANITIZED
    const int CEDF_OPENMP

# True when the kernels were compiled with AddressSanitizer (setup.py's CEDF_SANITIZE).
SANITIZED = bool(CEDF_SANITIZED)
# True when they were compiled with OpenMP (setup.py's CEDF_OPENMP=1, where the compiler has it).
OPENMP = bool(CEDF_OPENMP)


def _use_numpy_blas(addresses):
    """This module's products call NumPy's BLAS at `addresses`, or SciPy's for None (cedf.backend.set_blas)."""
    use_numpy_blas(addresses)


cdef int64_t[::1] _checked_labels(str kernel, const int64_t[::1] labels, Py_ssize_t n, Py_ssize_t c):
    """A copy of the labels, each checked to be in [0, c) as it was copied.

    The loops index p[i, labels[i]] unchecked, without the GIL: they must read a
    buffer that no other thread can change between the check and the read.
    """
    _expect(kernel, "labels", (labels.shape[0],), (n,))
    cdef int64_t[::1] copy = np.empty(n, np.int64)
    cdef Py_ssize_t bad = -1
    cdef double unused
    if n:
        with nogil:
            bad = loops.copy_class_labels(&labels[0], &copy[0], n, c, &unused)
    if bad >= 0:
        raise ValueError(f"{kernel}: label {copy[bad]} at row {bad} is outside [0, {c})")
    return copy


def affine_forward(const floating[:, ::1] x, const floating[:, ::1] A,
                   const floating[::1] b, floating[:, ::1] out):
    """out = x @ A + b, with x of shape (B, nIn), A (nIn, nOut), b (nOut,)."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = A.shape[1]
    _expect("affine_forward", "A", (A.shape[0], n_out), (n_in, n_out))
    _expect("affine_forward", "b", (b.shape[0],), (n_out,))
    _expect("affine_forward", "out", (out.shape[0], out.shape[1]), (n, n_out))
    cdef int m_ = _blas_size("affine_forward", n), k_ = _blas_size("affine_forward", n_in)
    cdef int n_ = _blas_size("affine_forward", n_out)
    with nogil:
        loops.affine_forward(_in2(x), _in2(A), _in(b), _out2(out), m_, k_, n_)


def affine_backward(const floating[:, ::1] x, const floating[:, ::1] A,
                    const floating[:, ::1] g, floating[:, ::1] gx,
                    floating[:, ::1] gA, floating[::1] gb):
    """Given g = dL/dout: gx += g A^T, gA += x^T g, gb += sum_i g_i (None skips)."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = A.shape[1]
    _expect("affine_backward", "A", (A.shape[0], n_out), (n_in, n_out))
    _expect("affine_backward", "g", (g.shape[0], g.shape[1]), (n, n_out))
    if gx is not None:
        _expect("affine_backward", "gx", (gx.shape[0], gx.shape[1]), (n, n_in))
    if gA is not None:
        _expect("affine_backward", "gA", (gA.shape[0], gA.shape[1]), (n_in, n_out))
    if gb is not None:
        _expect("affine_backward", "gb", (gb.shape[0],), (n_out,))
    cdef int m_ = _blas_size("affine_backward", n), k_ = _blas_size("affine_backward", n_in)
    cdef int n_ = _blas_size("affine_backward", n_out)
    with nogil:
        loops.affine_backward(_in2(x), _in2(A), _in2(g), _out2(gx), True, _out2(gA), True,
                              _out(gb), True, m_, k_, n_)


def sigmoid_forward(const floating[::1] x, floating[::1] out):
    """out = 1 / (1 + exp(-clip(x, -10, 10))), elementwise over flat buffers."""
    _expect("sigmoid_forward", "out", (out.shape[0],), (x.shape[0],))
    with nogil:
        loops.sigmoid_forward(_in(x), _out(out), x.shape[0])


def sigmoid_backward(const floating[::1] s, const floating[::1] g, floating[::1] gx):
    """gx += g * s * (1 - s), with s the forward output."""
    _expect("sigmoid_backward", "g", (g.shape[0],), (s.shape[0],))
    _expect("sigmoid_backward", "gx", (gx.shape[0],), (s.shape[0],))
    with nogil:
        loops.sigmoid_backward(_in(s), _in(g), _out(gx), True, NULL, False, 1, s.shape[0])


def softmax_forward(const floating[:, ::1] x, floating[:, ::1] out):
    """Row-wise softmax of x (B, C): shift by the row max, floor at -10, exponentiate, normalise."""
    _expect("softmax_forward", "out", (out.shape[0], out.shape[1]), (x.shape[0], x.shape[1]))
    if x.shape[0] > 0 and x.shape[1] == 0:
        raise ValueError("softmax_forward: x has no columns")
    with nogil:
        loops.softmax_forward(_in2(x), <floating*>NULL, _out2(out), x.shape[0], x.shape[1])


def softmax_backward(const floating[:, ::1] p, const floating[:, ::1] g, floating[:, ::1] gx):
    """gx += p * (g - sum_j p_j g_j) per row, with p the forward output."""
    _expect("softmax_backward", "g", (g.shape[0], g.shape[1]), (p.shape[0], p.shape[1]))
    _expect("softmax_backward", "gx", (gx.shape[0], gx.shape[1]), (p.shape[0], p.shape[1]))
    with nogil:
        loops.softmax_backward(_in2(p), _in2(g), _out2(gx), True, p.shape[0], p.shape[1])


def cross_entropy_forward(const floating[:, ::1] p, const int64_t[::1] labels, floating[::1] out):
    """out_i = -log p[i, labels_i] for probabilities p (B, C) and int64 labels (B,)."""
    labels = _checked_labels("cross_entropy_forward", labels, p.shape[0], p.shape[1])
    _expect("cross_entropy_forward", "out", (out.shape[0],), (p.shape[0],))
    with nogil:
        loops.cross_entropy_forward(_in2(p), &labels[0] if labels.shape[0] else NULL, _out(out),
                                    p.shape[0], p.shape[1])


def cross_entropy_backward(const floating[:, ::1] p, const int64_t[::1] labels,
                           const floating[::1] g, floating[:, ::1] gp):
    """gp[i, labels_i] += -g_i / p[i, labels_i]; every other entry of row i gets nothing."""
    labels = _checked_labels("cross_entropy_backward", labels, p.shape[0], p.shape[1])
    _expect("cross_entropy_backward", "g", (g.shape[0],), (p.shape[0],))
    _expect("cross_entropy_backward", "gp", (gp.shape[0], gp.shape[1]), (p.shape[0], p.shape[1]))
    with nogil:
        loops.cross_entropy_backward(_in2(p), &labels[0] if labels.shape[0] else NULL, _in(g),
                                     _out2(gp), True, p.shape[0], p.shape[1])


def bce_forward(const floating[::1] p, const floating[::1] y, floating[::1] out):
    """out_i = -y_i log p_i - (1 - y_i) log(1 - p_i) for hard labels y_i in {0, 1}."""
    _expect("bce_forward", "y", (y.shape[0],), (p.shape[0],))
    _expect("bce_forward", "out", (out.shape[0],), (p.shape[0],))
    with nogil:
        loops.bce_forward(_in(p), _in(y), _out(out), p.shape[0])


def bce_backward(const floating[::1] p, const floating[::1] y, const floating[::1] g,
                 floating[::1] gp):
    """gp_i += g_i * (p_i - y_i) / (p_i (1 - p_i)), branch by branch as in the forward."""
    _expect("bce_backward", "y", (y.shape[0],), (p.shape[0],))
    _expect("bce_backward", "g", (g.shape[0],), (p.shape[0],))
    _expect("bce_backward", "gp", (gp.shape[0],), (p.shape[0],))
    with nogil:
        loops.bce_backward(_in(p), _in(y), _in(g), _out(gp), True, p.shape[0])


def sgd_update(floating[::1] value, const floating[::1] grad, floating[::1] buf, double lr,
               double momentum, double weight_decay, bint nesterov, bint first):
    """SGD step in place: g = grad + wd value; with momentum, buf = g (first step) or
    momentum buf + g, and g = buf (or g + momentum buf, Nesterov); value -= lr g."""
    _expect("sgd_update", "grad", (grad.shape[0],), (value.shape[0],))
    if buf is not None:
        _expect("sgd_update", "buf", (buf.shape[0],), (value.shape[0],))
    with nogil:
        loops.sgd_momentum(_out(value), _in(grad), _out(buf), value.shape[0], lr, momentum,
                           weight_decay, nesterov, first)


def adam_update(floating[::1] value, const floating[::1] grad, floating[::1] m, floating[::1] v,
                double lr, double beta1, double beta2, double eps, double weight_decay, long step):
    """Adam step `step` (1, 2, ...) in place, bias-corrected moments m and v updated alongside."""
    for name, buf in (("grad", grad), ("m", m), ("v", v)):
        _expect("adam_update", name, (buf.shape[0],), (value.shape[0],))
    if step < 1:
        raise ValueError(f"adam_update: step must be 1 or more, got {step}")
    with nogil:
        loops.adam(_out(value), _in(grad), _out(m), _out(v), value.shape[0], lr, beta1, beta2, eps,
                   weight_decay, 1 - beta1 ** step, 1 - beta2 ** step)


def tanh_forward(const floating[::1] x, floating[::1] out):
    """out = tanh(x)."""
    _expect("tanh_forward", "out", (out.shape[0],), (x.shape[0],))
    with nogil:
        loops.tanh_forward(_in(x), _out(out), x.shape[0])


def tanh_backward(const floating[::1] t, const floating[::1] g, floating[::1] gx):
    """gx += g * (1 - t^2), with t the forward output."""
    _expect("tanh_backward", "g", (g.shape[0],), (t.shape[0],))
    _expect("tanh_backward", "gx", (gx.shape[0],), (t.shape[0],))
    with nogil:
        loops.tanh_backward(_in(t), _in(g), _out(gx), True, t.shape[0])


def leaky_relu_forward(const floating[::1] x, floating[::1] out, double slope):
    """out = x where x >= 0, slope * x where x < 0 (ReLU: slope 0, and then exactly 0)."""
    _expect("leaky_relu_forward", "out", (out.shape[0],), (x.shape[0],))
    with nogil:
        loops.leaky_relu_forward(_in(x), _out(out), x.shape[0], slope)


def leaky_relu_backward(const floating[::1] x, const floating[::1] g, floating[::1] gx, double slope):
    """gx += g where x > 0, slope * g elsewhere."""
    _expect("leaky_relu_backward", "g", (g.shape[0],), (x.shape[0],))
    _expect("leaky_relu_backward", "gx", (gx.shape[0],), (x.shape[0],))
    with nogil:
        loops.leaky_relu_backward(_in(x), _in(g), _out(gx), True, x.shape[0], slope)


def cross_entropy_logits_forward(const floating[:, ::1] z, const int64_t[::1] labels,
                                 floating[:, ::1] p, floating[::1] out):
    """p = softmax(z) and out_i = logsumexp(z_i) - z[i, y_i], for logits z (B, C)."""
    if z.shape[1] == 0 and z.shape[0]:
        raise ValueError("cross_entropy_logits_forward: z has no classes")
    labels = _checked_labels("cross_entropy_logits_forward", labels, z.shape[0], z.shape[1])
    _expect("cross_entropy_logits_forward", "p", (p.shape[0], p.shape[1]), (z.shape[0], z.shape[1]))
    _expect("cross_entropy_logits_forward", "out", (out.shape[0],), (z.shape[0],))
    with nogil:
        loops.cross_entropy_logits_forward(_in2(z), &labels[0] if labels.shape[0] else NULL, _out2(p),
                                           _out(out), z.shape[0], z.shape[1])


def cross_entropy_logits_backward(const floating[:, ::1] p, const int64_t[::1] labels,
                                  const floating[::1] g, floating[:, ::1] gz):
    """gz += g_i (p_i - onehot(y_i)), with p the forward's probabilities."""
    labels = _checked_labels("cross_entropy_logits_backward", labels, p.shape[0], p.shape[1])
    _expect("cross_entropy_logits_backward", "g", (g.shape[0],), (p.shape[0],))
    _expect("cross_entropy_logits_backward", "gz", (gz.shape[0], gz.shape[1]), (p.shape[0], p.shape[1]))
    with nogil:
        loops.cross_entropy_logits_backward(_in2(p), &labels[0] if labels.shape[0] else NULL, _in(g),
                                            _out2(gz), True, p.shape[0], p.shape[1])


def bce_logits_forward(const floating[::1] z, const floating[::1] y, floating[::1] out):
    """out_i = max(z_i, 0) - z_i y_i + log(1 + exp(-|z_i|)), for y in [0, 1]."""
    _expect("bce_logits_forward", "y", (y.shape[0],), (z.shape[0],))
    _expect("bce_logits_forward", "out", (out.shape[0],), (z.shape[0],))
    with nogil:
        loops.bce_logits_forward(_in(z), _in(y), _out(out), z.shape[0])


def bce_logits_backward(const floating[::1] z, const floating[::1] y, const floating[::1] g,
                        floating[::1] gz):
    """gz += g_i (sigmoid(z_i) - y_i)."""
    _expect("bce_logits_backward", "y", (y.shape[0],), (z.shape[0],))
    _expect("bce_logits_backward", "g", (g.shape[0],), (z.shape[0],))
    _expect("bce_logits_backward", "gz", (gz.shape[0],), (z.shape[0],))
    with nogil:
        loops.bce_logits_backward(_in(z), _in(y), _in(g), _out(gz), True, z.shape[0])


def add_forward(const floating[::1] x, const floating[::1] y, floating[::1] out):
    """out = x + y, elementwise over flat buffers of one length."""
    _expect("add_forward", "y", (y.shape[0],), (x.shape[0],))
    _expect("add_forward", "out", (out.shape[0],), (x.shape[0],))
    with nogil:
        loops.add(_in(x), _in(y), _out(out), x.shape[0])


def add_backward(const floating[::1] g, floating[::1] gx, floating[::1] gy):
    """gx += g and gy += g (None skips)."""
    if gx is not None:
        _expect("add_backward", "gx", (gx.shape[0],), (g.shape[0],))
    if gy is not None:
        _expect("add_backward", "gy", (gy.shape[0],), (g.shape[0],))
    with nogil:
        if gx is not None:
            loops.accumulate(_in(g), _out(gx), True, g.shape[0])
        if gy is not None:
            loops.accumulate(_in(g), _out(gy), True, g.shape[0])
from cedf._conv import conv_backward, conv_forward
from cedf._pooling import avgpool_backward, avgpool_forward, maxpool_backward, maxpool_forward
from cedf._normalization import batch_norm_backward, batch_norm_forward, layer_norm_backward, layer_norm_forward
from cedf._dropout import dropout_backward, dropout_forward
