# cython: language_level=3
"""One operation of a compiled program, as the engine and every kernel module see it.

`cedf._engine` runs a program as a C array of these. The lecture's operations
are cases of the engine's own switch; a family of nodes added later (the
convolutions, the normalisations) brings its operations in its own kernel
module instead, as functions of type `plan_op_fn`, exported to the plan as
PyCapsules (`plan_op`): the node's own file says which one to call on which
buffers (its ``_plan_forward`` / ``_plan_backward``), and nothing central
changes when a node is added.

A plan operation reads everything from the Op: its buffers by index into the
program's table (``arg(op, ptr, i)``, NULL for an index of -1, a gradient
nobody wants), its sizes in ``m, n, k`` and, for what three sizes cannot say
(a convolution's geometry), ``d``; its constants in ``s``; whether each
gradient it writes is the first contribution (write) or a later one (add) in
``acc``. It runs without the GIL and must not fail: every check was made when
the plan was built or when the program bound its arrays. ``f64`` tells the
dtype of its float buffers.
"""
from cpython.pycapsule cimport PyCapsule_New

cdef enum:
    OP_ARGS = 8       # buffers per operation
    OP_ACCS = 4       # gradients per operation
    OP_SCALARS = 4    # constants per operation
    OP_DIMS = 12      # geometry per operation (beyond m, n, k)

cdef struct Op:
    int code
    bint f64
    Py_ssize_t m, n, k
    int a[OP_ARGS]
    bint acc[OP_ACCS]
    double s[OP_SCALARS]
    Py_ssize_t d[OP_DIMS]
    void* fn          # the plan_op_fn of a kernel module's operation (code CALL)

ctypedef void (*plan_op_fn)(const Op* op, void** ptr) noexcept nogil


cdef inline void* arg(const Op* op, void** ptr, int i) noexcept nogil:
    """Buffer `i` of the operation, or NULL when it is absent (index -1)."""
    return ptr[op.a[i]] if op.a[i] >= 0 else NULL


cdef inline object plan_op(plan_op_fn fn):
    """`fn` as the plan's builder takes it: a PyCapsule named "cedf.plan_op"."""
    return PyCapsule_New(<void*>fn, b"cedf.plan_op", NULL)
