"""The steps of an epoch of `cedf.fit`, in C: each mini-batch gathered into fit's buffers and fed,
the graph's Forward, Backward and update called, and the batch's losses and correct
predictions kept, with no Python bytecode in between.

The same function, with the same signature and results, as `cedf.training._epoch_steps`,
which runs where this module is not built (the tests compare the two). Why in C: around a
step of the MNIST-1D MLP (about 90 us, float32), the loop in Python cost 6.5 us a step
besides the graph's calls (this one 1.6 us), and fit's former argmax over the epoch's
(4000, 10) scores 3 us a step.

Each step reads the data's arrays afresh (pointer, shape, layout) with the GIL held: the
graph's calls run Python, and another thread may reshape or replace an array meanwhile;
a step never copies from memory it did not check in that same step, and every index is
checked as it is used.
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy

import numpy as np

cnp.import_array()


cdef const int64_t* _indices(cnp.ndarray a, Py_ssize_t n, str name) except NULL:
    """The data of `a`, after checking that it holds `n` int64 numbers, contiguous, in this
    machine's byte order (fit's own permutation or labels: read afresh at every step, like the
    rest, since the graph's calls run Python in between)."""
    if not (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_DIMS(a)[0] == n and cnp.PyArray_TYPE(a) == cnp.NPY_INT64
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)):
        raise ValueError(f"fit: {name} must be a contiguous int64 array of {n} indices, got shape "
                         f"{(<object>a).shape}, dtype {(<object>a).dtype}")
    return <const int64_t*>cnp.PyArray_DATA(a)


cdef double* _losses(cnp.ndarray a, Py_ssize_t n) except NULL:
    """The data of `losses`, after checking that it takes `n` float64 numbers."""
    if not (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_DIMS(a)[0] == n and cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_ISWRITEABLE(a)):
        raise ValueError(f"fit: losses must be a writeable contiguous float64 array of {n} numbers, got shape "
                         f"{(<object>a).shape}, dtype {(<object>a).dtype}")
    return <double*>cnp.PyArray_DATA(a)


cdef Py_ssize_t _row_bytes(cnp.ndarray src, cnp.ndarray buf, str what, str fed) except -1:
    """The bytes of one example of `src`, after checking that its examples are laid out as those
    of `buf` (the same dtype and example shape, both C-contiguous) and that `buf` takes them."""
    cdef int d, nd = cnp.PyArray_NDIM(src)
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(src)
    # The array's own descriptor, not its `dtype` attribute, which a subclass may say anything in.
    dtype = <object>cnp.PyArray_DESCR(src)
    if not (nd >= 1 and cnp.PyArray_IS_C_CONTIGUOUS(src) and not dtype.hasobject):   # (references are no bytes)
        raise ValueError(f"fit: the training data {what} changed while fit ran (now shape "
                         f"{(<object>src).shape}, dtype {dtype}); fit reads it at every step: leave it as it is")
    ok = (nd == cnp.PyArray_NDIM(buf) and cnp.PyArray_IS_C_CONTIGUOUS(buf) and cnp.PyArray_ISWRITEABLE(buf)
          and dtype == <object>cnp.PyArray_DESCR(buf))
    for d in range(1, nd if ok else 0):
        ok = ok and cnp.PyArray_DIMS(src)[d] == cnp.PyArray_DIMS(buf)[d]
        size *= cnp.PyArray_DIMS(src)[d]
    if not ok:
        raise ValueError(f"fit: the examples of {what} (shape {(<object>src).shape}, dtype {dtype}) no longer fit "
                         f"the batch buffer fit feeds as {fed}.value (shape {(<object>buf).shape}, dtype "
                         f"{(<object>buf).dtype}, writeable {bool(cnp.PyArray_ISWRITEABLE(buf))}): something "
                         f"reshaped, retyped or froze one of them in place while fit ran")
    return size


cdef int _gather(cnp.ndarray src, cnp.ndarray buf, const int64_t* index, Py_ssize_t m, str what,
                 str fed) except -1:
    """buf[i] = src[index[i]] for i < m, both arrays and every index checked first."""
    cdef Py_ssize_t i, rows = cnp.PyArray_DIMS(src)[0] if cnp.PyArray_NDIM(src) else 0
    cdef Py_ssize_t size = _row_bytes(src, buf, what, fed)
    cdef char* to = <char*>cnp.PyArray_DATA(buf)
    cdef const char* frm = <const char*>cnp.PyArray_DATA(src)
    if cnp.PyArray_DIMS(buf)[0] < m:
        raise ValueError(f"fit: the batch buffer of {what} holds {cnp.PyArray_DIMS(buf)[0]} examples, not {m}")
    for i in range(m):
        if not 0 <= index[i] < rows:
            raise IndexError(f"fit: example {index[i]} of {rows}")
    if size == 8 and <size_t>to % 8 == 0 and <size_t>frm % 8 == 0:
        # One label of int64 or float64: a call of memcpy would cost more than the copy.
        for i in range(m):
            (<int64_t*>to)[i] = (<const int64_t*>frm)[index[i]]
    else:
        for i in range(m):
            memcpy(to + i * size, frm + index[i] * size, size)
    return 0


cdef Py_ssize_t _argmax_right(const floating* score, Py_ssize_t rows, Py_ssize_t cols, const int64_t* labels,
                              const int64_t* index) noexcept:
    """How many rows' argmax is label[index[row]]; NaN counts as the largest, the first one
    winning, as np.argmax has it. (Pointers, not memoryviews: taking a memoryview of the
    scores cost more than the loop.) The scan has no branch that depends on the data (the
    compiler makes selects of the two updates): with one, 3.3 us a step of fit went to its
    compare-and-jump here (perf, 12,000 steps on shuffled data). A row holding NaN, rare, is scanned again for it."""
    cdef Py_ssize_t i, j, best, right = 0
    cdef floating top, v
    cdef const floating* row
    cdef bint nan
    for i in range(rows):
        row = score + i * cols
        best, top, nan = 0, row[0], row[0] != row[0]
        for j in range(1, cols):
            v = row[j]
            nan |= v != v
            best = j if v > top else best
            top = v if v > top else top
        if nan:
            for j in range(cols):
                if row[j] != row[j]:
                    best = j
                    break
        right += best == labels[index[i]]
    return right


cdef Py_ssize_t _threshold_right(const floating* score, Py_ssize_t rows, double threshold, const int64_t* labels,
                                 const int64_t* index) noexcept:
    """How many examples are class 1 (score >= threshold, compared in the score's dtype, as NumPy
    compares an array with a Python float) exactly when their label is 1."""
    cdef Py_ssize_t i, right = 0
    cdef floating t = <floating>threshold
    for i in range(rows):
        right += (score[i] >= t) == labels[index[i]]
    return right


cdef Py_ssize_t _right(score, threshold, cnp.ndarray labels, cnp.ndarray order, Py_ssize_t n, Py_ssize_t first,
                       Py_ssize_t m) except -1:
    """The batch's correct predictions, from (score, threshold) as `cedf.training._scorer` gives them."""
    cdef cnp.ndarray a
    cdef int typenum
    cdef Py_ssize_t i, cols
    cdef const int64_t* index = _indices(order, n, "order") + first
    cdef const int64_t* classes = _indices(labels, n, "labels")
    for i in range(m):   # the loops below index the labels by these unchecked
        if not 0 <= index[i] < n:
            raise IndexError(f"fit: example {index[i]} of {n}")
    if m == 0:
        return 0
    if cnp.PyArray_Check(score):
        a = <cnp.ndarray>score
        typenum = cnp.PyArray_TYPE(a)
        fast = (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
                and typenum in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) and cnp.PyArray_DIMS(a)[0] == m)
        if fast and threshold is None and cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_DIMS(a)[1] >= 1:
            cols = cnp.PyArray_DIMS(a)[1]
            if typenum == cnp.NPY_FLOAT32:
                return _argmax_right(<float*>cnp.PyArray_DATA(a), m, cols, classes, index)
            return _argmax_right(<double*>cnp.PyArray_DATA(a), m, cols, classes, index)
        if fast and threshold is not None and cnp.PyArray_NDIM(a) == 1 and type(threshold) in (int, float):
            if typenum == cnp.NPY_FLOAT32:
                return _threshold_right(<float*>cnp.PyArray_DATA(a), m, <double>threshold, classes, index)
            return _threshold_right(<double*>cnp.PyArray_DATA(a), m, <double>threshold, classes, index)
    from cedf.training import _correct   # anything else: NumPy's rules
    return _correct(score, threshold, labels[order[first:first + m]])


cdef int _record(values, cnp.ndarray losses, Py_ssize_t n, Py_ssize_t first, Py_ssize_t m) except -1:
    """losses[first:first + m] = values (a loss node's per-example values)."""
    cdef cnp.ndarray a
    cdef double* out
    cdef Py_ssize_t i
    if cnp.PyArray_Check(values):
        a = <cnp.ndarray>values
        if (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_DIMS(a)[0] == m and cnp.PyArray_IS_C_CONTIGUOUS(a)
                and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
                and cnp.PyArray_TYPE(a) in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
            out = _losses(losses, n) + first
            if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
                for i in range(m):
                    out[i] = (<float*>cnp.PyArray_DATA(a))[i]
            else:
                memcpy(out, cnp.PyArray_DATA(a), m * sizeof(double))
            return 0
    _losses(losses, n)
    losses[first:first + m] = values   # another shape or dtype: NumPy's rules (broadcast or raise)
    return 0


def epoch_steps(cnp.ndarray X, cnp.ndarray Y, cnp.ndarray order, Py_ssize_t start, Py_ssize_t stop,
                Py_ssize_t batch, cnp.ndarray xb, cnp.ndarray yb, x, y, forward, backward, loss, update,
                scores_of, cnp.ndarray losses, cnp.ndarray labels):
    """The training steps over the examples at positions [start, stop) of `order`, `batch` at a
    time (the last batch may be shorter); returns how many of them the graph classified right.

    See `cedf.training._epoch_steps`, the reference.
    """
    cdef Py_ssize_t first, m, right = 0, n
    cdef const int64_t* index
    if cnp.PyArray_NDIM(order) != 1:
        raise ValueError(f"fit: order must be a 1-D array of indices, got shape {(<object>order).shape}")
    n = cnp.PyArray_DIMS(order)[0]
    _indices(order, n, "order")
    _indices(labels, n, "labels")
    _losses(losses, n)
    if not (0 <= start <= stop <= n and batch >= 1):
        raise ValueError(f"fit: positions [{start}, {stop}) in batches of {batch} do not fit {n} examples")
    for a, b in ((xb, X), (yb, Y), (xb, yb), (losses, X), (losses, Y), (losses, xb), (losses, yb)):
        if np.may_share_memory(a, b):   # the copies would read what they wrote
            raise ValueError("fit: the batch buffers, the data and the losses must not overlap")
    for first in range(start, stop, batch):
        m = min(batch, stop - first)
        Xb = xb if cnp.PyArray_DIMS(xb)[0] == m else xb[:m]
        Yb = yb if cnp.PyArray_DIMS(yb)[0] == m else yb[:m]
        index = _indices(order, n, "order") + first   # (nothing between the two gathers runs user code)
        _gather(X, Xb, index, m, "X", "x")
        _gather(Y, Yb, index, m, "y", "y")
        x.value = Xb
        y.value = Yb
        forward()
        _record(loss.value, losses, n, first, m)
        score, threshold = scores_of()
        right += _right(score, threshold, labels, order, n, first, m)
        backward(loss)
        update()
    return right
