"""The compiled plan of a graph: a flat list of loops run in one call without the GIL.

Running a graph node by node costs a Python call, a few array checks and a
memoryview per array per node: tens of microseconds per step, more than the
arithmetic of the small models people learn with. `cedf.plan` therefore turns a
graph of cedf's own nodes into a `Program`: a C array of operations (which loop
of `_loops.pxd`, on which buffers, with which sizes) over a table of buffers.

Buffers are either fixed (a node's value or gradient buffer, allocated by the
plan) or bound: an attribute of a Python object (``x.value`` of an Input, ``A.value``
and ``A.grad`` of a Parameter) that is read and checked again at every run,
because the user may replace it at any time. Checking a bound array that has
not changed costs an identity test and a few C field reads; anything
unexpected goes to the binding's Python `convert` function, which either
returns a usable array (a contiguous copy, another dtype) or raises `Replan`
so that the caller rebuilds the plan through the nodes' own checks, which
raise the clear errors.
"""
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_get_thread_ident, PyThread_release_lock,
                               PyThread_type_lock)
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.math cimport pow
from libc.string cimport memcpy

cimport cedf._loops as loops
from cedf._plan_op cimport OP_ACCS, OP_ARGS, OP_DIMS, OP_SCALARS, Op, plan_op_fn
from cedf._blas cimport use_numpy_blas

from cedf.backend import Replan

cnp.import_array()

# Subnormals flushed to zero during a run (why: csrc/denormals.h).
cdef extern from "denormals.h" nogil:
    unsigned int cedf_flush_denormals_begin()
    void cedf_flush_denormals_end(unsigned int saved)

cdef extern from "Python.h":
    # Borrowed references, compared as pointers only.
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    Py_ssize_t PyList_GET_SIZE(object)
    Py_ssize_t PyTuple_GET_SIZE(object)


def _use_numpy_blas(addresses):
    """This module's products call NumPy's BLAS at `addresses`, or SciPy's for None (cedf.backend.set_blas)."""
    use_numpy_blas(addresses)


# Operations. Buffers are named by their index in the program's table.
cpdef enum:
    AFFINE_FWD          # a: x, A, b, out                      m, n, k = B, nIn, nOut
                        # (b absent: the Sigmoid that follows adds it, BIAS_SIGMOID_FWD)
    AFFINE_BWD          # a: x, A, g, gx, gA, gb, At; acc: gx, gA, gb (At: room for A^T, so that
                        # gx = g @ A^T runs untransposed; absent: BLAS transposes)
    SIGMOID_FWD         # a: x, out                            m = size
    BIAS_SIGMOID_FWD    # a: u, b, s, b_copy                   m, n = rows, columns
                        # (s = sigmoid(u + b); b is copied to b_copy, from which the
                        # Affine's value u + b is made if someone reads it)
    SIGMOID_BWD         # a: s, g, gx, gb; acc: gx, gb         m, n = rows, columns (gb optional:
                        # the bias gradient of the Affine before, summed in the same pass)
    SOFTMAX_FWD         # a: x, out, b, b_copy                 m, n = rows, classes
                        # (b optional: the softmax of x + b, b copied as by BIAS_SIGMOID_FWD)
    SOFTMAX_BWD         # a: p, g, gx; acc: gx
    CE_FWD              # a: p, labels, out
    CE_BWD              # a: p, labels, g, gp; acc: gp
    SOFTMAX_CE_BWD      # a: p, labels, g, gx, gp, gb; acc: gx, gb (gp, the Softmax's gradient, is written;
                        # gb optional: the bias gradient of the Affine before, summed in the same pass)
    BCE_FWD             # a: p, y, out                         m = batch
    BCE_BWD             # a: p, y, g, gp; acc: gp
    SIGMOID_BCE_BWD     # a: p, y, g, gx, gp; acc: gx (gp, the Sigmoid's gradient, is written)
    FILL                # a: dst; s: value                     m = size
    SGD                 # a: value, grad; the learning rate is given to run()
    SGD_STEP            # a: value, grad, buffer (absent without momentum), state; m = size
                        # s: momentum, weight decay, nesterov (0 or 1); state (float64[1]):
                        # 0 before the first step (the buffer starts as the gradient), then 1
    ADAM_STEP           # a: value, grad, m, v, state; s: beta1, beta2, eps, weight decay
                        # state (float64[1]): the steps taken, counted here
    CLASS_LABELS        # a: y (int64, float32 or float64), staged (int64)   m, n = batch, classes
    BINARY_LABELS       # a: y (int64, float32 or float64), staged (the float dtype)   m = batch
                        # (both: every label checked as it is copied into `staged`)
    COPY                # a: src, dst                          m = bytes
    TANH_FWD            # a: x, out                            m = size
    TANH_BWD            # a: t, g, gx; acc: gx
    LEAKY_FWD           # a: x, out; s: slope                  m = size
    LEAKY_BWD           # a: x, g, gx; acc: gx; s: slope
    BIAS_LEAKY_FWD      # a: u, b, out, b_copy; s: slope       m, n = rows, columns
                        # (out = leaky_relu(u + b), b copied as by BIAS_SIGMOID_FWD)
    LEAKY_BIAS_BWD      # a: y, g, gx, gb; acc: gx, gb; s: slope   m, n = rows, columns
                        # (from the output y, slope >= 0; gb: the bias gradient of the Affine before)
    CE_LOGITS_FWD       # a: z, labels, p, out                 m, n = batch, classes
    CE_LOGITS_BWD       # a: p, labels, g, gz; acc: gz
    ADD                 # a: x, y, out                         m = size (out = x + y)
    ACCUMULATE          # a: src, dst; acc: dst                m = size (dst = src, or dst += src)
    CALL                # a kernel module's own operation (cedf/_plan_op.pxd): its node says
                        # which, in its _plan_forward / _plan_backward


cdef class StepLock:
    """A graph's lock: reentrant, like threading.RLock, and cheap to take from a program's run.

    A graph's steps take turns on it (`cedf.graph`); a program run takes it in C,
    with no Python call (a `with` of an RLock cost 115 ns here, three times a
    step). Owner and count are read and written with the GIL held; only the wait
    for another thread's step releases the GIL.
    """

    cdef PyThread_type_lock lock
    cdef long owner
    cdef long count

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int take(self) except -1:
        cdef long me = PyThread_get_thread_ident()
        if self.count and self.owner == me:
            self.count += 1
            return 0
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)   # a wait with WAIT_LOCK always ends holding it
        self.owner, self.count = me, 1
        return 0

    cdef void give(self) noexcept:
        self.count -= 1
        if self.count == 0:
            self.owner = 0
            PyThread_release_lock(self.lock)

    def acquire(self, blocking=True):
        """Take the lock (again, in the thread that holds it); with blocking=False, only if it is free."""
        if not blocking and not (self.count and self.owner == PyThread_get_thread_ident()):
            if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
                return False
            self.owner, self.count = PyThread_get_thread_ident(), 1
            return True
        self.take()
        return True

    def release(self):
        if not (self.count and self.owner == PyThread_get_thread_ident()):
            raise RuntimeError("StepLock.release: this thread does not hold the lock")
        self.give()

    def __enter__(self):
        self.take()
        return self

    def __exit__(self, *exc_info):
        self.give()
        return False


#: The most dimensions a bound array may have (NumPy's own limit is 32 or 64).
MAX_DIMS = 8


cdef class Binding:
    """An array that a program reads from ``getattr(owner, attr)`` at every run.

    Or, made by `following`, the array another program's binding read at its last
    run: a backward program differentiates the forward that ran, on the arrays that
    forward read, as each node's own backward does with what its forward saved,
    whatever the user has assigned since.
    """

    cdef readonly object owner, attr
    cdef object convert
    cdef Binding leader          # following: read leader.array instead of the attribute
    cdef int ndim, n_types
    cdef Py_ssize_t dims[8]
    cdef int typenums[4]
    cdef bint writable
    cdef bint column           # an (n, 1) array fits a binding of (n,) too: the same layout
    cdef readonly object array   # what the last run read: held, so that it stays alive
    cdef object previous         # what the run before read, while `changed`: a refused run
    cdef bint changed            # puts it back (Program._run), so followers never see its arrays

    def __init__(self, owner, attr, shape, dtypes, convert, writable=False, column=False):
        self.owner, self.attr, self.convert = owner, attr, convert
        self.column = column
        self.ndim = len(shape)
        if self.ndim > MAX_DIMS:
            raise ValueError(f"Binding: at most {MAX_DIMS} dimensions")
        for i, d in enumerate(shape):
            self.dims[i] = d
        if not 0 < len(dtypes) <= 4:
            raise ValueError("Binding: one to four dtypes")
        self.n_types = len(dtypes)
        for i, t in enumerate(dtypes):
            self.typenums[i] = cnp.dtype(t).num
        self.writable = writable
        self.array = None

    cdef bint fits(self, object obj):
        cdef cnp.ndarray arr
        cdef int i
        if not cnp.PyArray_Check(obj):
            return False
        arr = <cnp.ndarray>obj
        if cnp.PyArray_NDIM(arr) != self.ndim and not (
                self.column and cnp.PyArray_NDIM(arr) == self.ndim + 1 and cnp.PyArray_DIMS(arr)[self.ndim] == 1):
            return False
        for i in range(self.ndim):
            if cnp.PyArray_DIMS(arr)[i] != self.dims[i]:
                return False
        # Byte-swapped data has the same type number: without this test a
        # big-endian array would be read as garbage.
        if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
                and cnp.PyArray_ISNOTSWAPPED(arr)):
            return False
        if self.writable and not cnp.PyArray_ISWRITEABLE(arr):
            return False
        for i in range(self.n_types):
            if cnp.PyArray_TYPE(arr) == self.typenums[i]:
                return True
        return False

    def following(self):
        """A binding of the same array as this one's last run read (see the class)."""
        follower = Binding(self.owner, self.attr, tuple(self.dims[i] for i in range(self.ndim)),
                           [cnp.PyArray_DescrFromType(self.typenums[i]) for i in range(self.n_types)],
                           self.convert, self.writable, self.column)
        follower.leader = self
        return follower

    cdef int refresh(self) except -1:
        if self.leader is not None:
            # What the leader read was checked then, and is held by it until its next run.
            obj = self.leader.array
            if obj is None or not self.fits(obj):
                raise Replan(self.attr)
            self.array = obj
            return 0
        obj = getattr(self.owner, self.attr)
        if obj is self.array and self.fits(obj):
            self.changed = False
            return 0
        if not self.fits(obj):
            obj = self.convert(obj)
            if not self.fits(obj):
                raise Replan(self.attr)
        self.previous, self.array, self.changed = self.array, obj, True
        return 0

    cdef void revert(self) noexcept:
        """Hold again what the run before read (the run that just refreshed this one was refused)."""
        if self.changed:
            self.array, self.previous, self.changed = self.previous, None, False


cdef class Program:
    """Operations over a table of buffers, run in order by one call of `run`."""

    cdef Op* ops
    cdef int n_ops
    cdef void** ptr
    cdef int* typenum
    cdef int n_buffers
    cdef list buffers        # index -> ndarray (fixed) or Binding
    cdef list bindings       # the Binding entries
    cdef int* binding_index  # and their indices in the table
    cdef list messages       # op index -> error message template, or None
    cdef public list after   # (dict, key, value): stored after each good run (a lazy value's function, a flag)
    cdef list nodes, parameters          # the graph's lists, and what they held when the program was built:
    cdef tuple built_nodes, built_parameters   # a graph that grew or was rewired needs a new plan
    cdef bint running          # a run is under way (a graph's lock serialises them; see `run`)
    cdef StepLock lock         # the graph's, taken for each run (None: not taken)
    cdef bint stale            # the graph dropped this program (`retire`): it runs no more
    cdef Py_ssize_t bad_row
    cdef double bad_value      # what a label check found (float labels)

    def __cinit__(self, buffers, ops, messages=None):
        self.n_buffers = len(buffers)
        self.n_ops = len(ops)
        self.ptr = <void**>malloc(max(self.n_buffers, 1) * sizeof(void*))
        self.typenum = <int*>malloc(max(self.n_buffers, 1) * sizeof(int))
        self.ops = <Op*>malloc(max(self.n_ops, 1) * sizeof(Op))
        self.binding_index = <int*>malloc(max(self.n_buffers, 1) * sizeof(int))
        if self.ptr == NULL or self.typenum == NULL or self.ops == NULL or self.binding_index == NULL:
            raise MemoryError()

    def __init__(self, buffers, ops, messages=None):
        """`buffers`: ndarrays and Bindings; `ops`: tuples (code, f64, (m, n, k), args, accs, scalars[, geometry]),
        `code` an operation of the enum above or a kernel module's PyCapsule (`cedf._plan_op`)."""
        cdef int i
        self.buffers = list(buffers)
        self.bindings = []
        for i, buf in enumerate(self.buffers):
            if isinstance(buf, Binding):
                self.binding_index[len(self.bindings)] = i
                self.bindings.append(buf)
                self.ptr[i] = NULL
            else:
                self._set(i, buf)
        for i, op in enumerate(ops):
            self._set_op(&self.ops[i], tuple(op) + ((),) * (7 - len(op)))
        self.messages = list(messages) if messages is not None else [None] * self.n_ops
        self.after = []
        self.nodes = self.parameters = None

    cdef _set_op(self, Op* op, tuple spec):
        """`spec`: (code, f64, dims, args, accs, scalars, geometry)."""
        cdef int j
        code, f64, dims, args, accs, scalars, geometry = spec
        if PyCapsule_IsValid(code, b"cedf.plan_op"):
            op.code, op.fn = CALL, PyCapsule_GetPointer(code, b"cedf.plan_op")
        else:
            op.code, op.fn = code, NULL
        op.f64 = f64
        op.m, op.n, op.k = (tuple(dims) + (0, 0, 0))[:3]
        args, accs, scalars, geometry = tuple(args), tuple(accs), tuple(scalars), tuple(geometry)
        for what, got, most in (("buffers", args, OP_ARGS), ("gradients", accs, OP_ACCS),
                                ("constants", scalars, OP_SCALARS), ("sizes", geometry, OP_DIMS)):
            if len(got) > most:
                raise ValueError(f"Program: at most {most} {what} per operation, got {len(got)}")
        for j in range(OP_ARGS):
            index = args[j] if j < len(args) and args[j] is not None else -1
            if not -1 <= index < self.n_buffers:   # the loops index the table unchecked
                raise IndexError(f"Program: an operation names buffer {index}; the table has {self.n_buffers}")
            op.a[j] = index
        for j in range(OP_ACCS):
            op.acc[j] = accs[j] if j < len(accs) else False
        for j in range(OP_SCALARS):
            op.s[j] = scalars[j] if j < len(scalars) else 0.0
        for j in range(OP_DIMS):
            op.d[j] = geometry[j] if j < len(geometry) else 0

    def guard(self, list nodes, list parameters):
        """Refuse to run (Replan) once `nodes` or `parameters` no longer hold what they hold now."""
        self.nodes, self.parameters = nodes, parameters
        self.built_nodes, self.built_parameters = tuple(nodes), tuple(parameters)

    def serialise(self, StepLock lock):
        """Take `lock` (the graph's) for every run, and check, once it is held, that the program is current."""
        self.lock = lock

    def retire(self):
        """Refuse every later run (Replan): the graph changed under this program (`Graph.release_plan`)."""
        self.stale = True

    cdef bint _graph_changed(self):
        return self.nodes is not None and (_list_changed(self.nodes, self.built_nodes)
                                           or _list_changed(self.parameters, self.built_parameters))

    def __dealloc__(self):
        free(self.binding_index)
        free(self.ops)
        free(self.ptr)
        free(self.typenum)

    cdef inline void _set(self, int i, cnp.ndarray arr):
        self.ptr[i] = cnp.PyArray_DATA(arr)
        self.typenum[i] = cnp.PyArray_TYPE(arr)

    def run(self, double lr=0):
        """Refresh the bound arrays, then run every operation; `lr` is the SGD step.

        The bindings hold every array the operations read until the next run, so
        an array that the user replaces meanwhile stays alive. Two runs of one
        program at once would replace them under each other's loops: the graph
        serialises its steps with a lock (`cedf.graph.Graph`), and a run that
        finds another under way (the program called from elsewhere) is refused.
        """
        if self.lock is None:
            return self._run(lr)
        self.lock.take()
        try:
            return self._run(lr)
        finally:
            self.lock.give()

    cdef _run(self, double lr):
        cdef int i = 0, failed = -1
        cdef unsigned int saved_csr
        cdef bint ok, done = False
        cdef Py_ssize_t refreshed = 0
        cdef Binding b
        if self.running:
            raise RuntimeError("cedf: a compiled program was started while it ran (again from the thread running "
                               "it, or from another without the graph's lock); run a graph through its "
                               "Forward/Backward/UpdateParameters, which take turns")
        # Checked with the lock held: a change that retired the program waited for it.
        if self.stale or self._graph_changed():
            raise Replan("graph")
        self.running = True
        try:
            # A refused run puts back the arrays its bindings held (`Binding.revert`): a backward
            # program follows what the last good forward read, not what a refused one found.
            for i in range(len(self.bindings)):
                b = <Binding>self.bindings[i]
                refreshed = i + 1
                b.refresh()
                self._set(self.binding_index[i], b.array)
            with nogil:
                saved_csr = cedf_flush_denormals_begin()
                for i in range(self.n_ops):
                    if self.ops[i].f64:
                        ok = _execute(<double>0, &self.ops[i], self.ptr, self.typenum, lr,
                                      &self.bad_row, &self.bad_value)
                    else:
                        ok = _execute(<float>0, &self.ops[i], self.ptr, self.typenum, lr,
                                      &self.bad_row, &self.bad_value)
                    if not ok:
                        failed = i
                        break
                cedf_flush_denormals_end(saved_csr)
            if failed >= 0:
                raise ValueError(self.messages[failed](self._bad_label(&self.ops[failed])))
            for state, key, value in self.after:
                # Into the dict itself: no Python __setattr__ (a node's, cedf.nodes) runs per step.
                (<dict>state)[key] = value
            done = True
        finally:
            if not done:
                for i in range(refreshed):
                    (<Binding>self.bindings[i]).revert()
            self.running = False

    cdef object _bad_label(self, Op* op):
        """The label a failed check found, as a Python number: an int for int64 labels."""
        if op.code == CLASS_LABELS and self.typenum[op.a[0]] == cnp.NPY_INT64:
            return (<int64_t*>self.ptr[op.a[1]])[self.bad_row]
        return self.bad_value

    def bound(self, int index):
        """The array that buffer `index` was bound to at the last run."""
        if not 0 <= index < len(self.buffers):   # checked: this module indexes without bounds checks
            raise IndexError(f"Program.bound: no buffer {index}; the program has {len(self.buffers)}")
        buf = self.buffers[index]
        return buf.array if isinstance(buf, Binding) else buf


cdef bint _list_changed(list now, tuple built) noexcept:
    """Whether `now` grew, shrank or had an entry replaced since it held `built`: an identity
    test per entry, on the pointers (a few nanoseconds for a graph's nodes)."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(built)
    if PyList_GET_SIZE(now) != n:
        return True
    for i in range(n):
        if PyList_GET_ITEM(now, i) != PyTuple_GET_ITEM(built, i):
            return True
    return False


cdef inline void* _p(void** ptr, int i) noexcept nogil:
    return ptr[i] if i >= 0 else NULL


cdef bint _execute(floating dtype, Op* op, void** ptr, int* typenum, double lr,
                   Py_ssize_t* bad_row, double* bad_value) noexcept nogil:
    """Run one operation (`dtype` only picks the float type); False, with the offending
    row (and value, for float labels), when a label is invalid."""
    cdef int* a = op.a
    cdef Py_ssize_t row = -1
    cdef double* state
    if op.code == CALL:
        (<plan_op_fn>op.fn)(op, ptr)
    elif op.code == AFFINE_FWD:
        loops.affine_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>_p(ptr, a[2]),
                             <floating*>ptr[a[3]], op.m, op.n, op.k)
    elif op.code == AFFINE_BWD:
        loops.affine_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]],
                              <floating*>_p(ptr, a[3]), op.acc[0], <floating*>_p(ptr, a[4]), op.acc[1],
                              <floating*>_p(ptr, a[5]), op.acc[2], op.m, op.n, op.k, <floating*>_p(ptr, a[6]))
    elif op.code == SIGMOID_FWD:
        loops.sigmoid_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], op.m)
    elif op.code == BIAS_SIGMOID_FWD:
        memcpy(ptr[a[3]], ptr[a[1]], op.n * sizeof(floating))
        loops.bias_sigmoid_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.m, op.n)
    elif op.code == SIGMOID_BWD:
        loops.sigmoid_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.acc[0],
                               <floating*>_p(ptr, a[3]), op.acc[1], op.m, op.n)
    elif op.code == SOFTMAX_FWD:
        if a[2] >= 0:
            memcpy(ptr[a[3]], ptr[a[2]], op.n * sizeof(floating))
        loops.softmax_forward(<floating*>ptr[a[0]], <floating*>_p(ptr, a[2]), <floating*>ptr[a[1]], op.m, op.n)
    elif op.code == SOFTMAX_BWD:
        loops.softmax_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]],
                               op.acc[0], op.m, op.n)
    elif op.code == CE_FWD:
        loops.cross_entropy_forward(<floating*>ptr[a[0]], <int64_t*>ptr[a[1]], <floating*>ptr[a[2]], op.m, op.n)
    elif op.code == CE_BWD:
        loops.cross_entropy_backward(<floating*>ptr[a[0]], <int64_t*>ptr[a[1]], <floating*>ptr[a[2]],
                                     <floating*>ptr[a[3]], op.acc[0], op.m, op.n)
    elif op.code == SOFTMAX_CE_BWD:
        loops.softmax_cross_entropy_backward(<floating*>ptr[a[0]], <int64_t*>ptr[a[1]], <floating*>ptr[a[2]],
                                             <floating*>ptr[a[3]], op.acc[0], <floating*>ptr[a[4]],
                                             <floating*>_p(ptr, a[5]), op.acc[1], op.m, op.n)
    elif op.code == BCE_FWD:
        loops.bce_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.m)
    elif op.code == BCE_BWD:
        loops.bce_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]],
                           <floating*>ptr[a[3]], op.acc[0], op.m)
    elif op.code == SIGMOID_BCE_BWD:
        loops.sigmoid_bce_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]],
                                   <floating*>ptr[a[3]], op.acc[0], <floating*>ptr[a[4]], op.m)
    elif op.code == FILL:
        loops.fill(<floating*>ptr[a[0]], <floating>op.s[0], op.m)
    elif op.code == SGD:
        loops.sgd(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating>lr, op.m)
    elif op.code == SGD_STEP:
        state = <double*>ptr[a[3]]
        loops.sgd_momentum(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>_p(ptr, a[2]), op.m, lr,
                           op.s[0], op.s[1], op.s[2] != 0, state[0] == 0)
        state[0] = 1
    elif op.code == ADAM_STEP:
        # PyTorch's rule, as cedf.optim.Adam's node-by-node step: the corrections
        # 1 - beta^t of this parameter's step t, computed once per parameter and step.
        state = <double*>ptr[a[4]]
        state[0] += 1
        loops.adam(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], <floating*>ptr[a[3]], op.m,
                   lr, op.s[0], op.s[1], op.s[2], op.s[3], 1 - pow(op.s[0], state[0]), 1 - pow(op.s[1], state[0]))
    elif op.code == TANH_FWD:
        loops.tanh_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], op.m)
    elif op.code == TANH_BWD:
        loops.tanh_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.acc[0], op.m)
    elif op.code == LEAKY_FWD:
        loops.leaky_relu_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], op.m, op.s[0])
    elif op.code == LEAKY_BWD:
        loops.leaky_relu_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.acc[0],
                                  op.m, op.s[0])
    elif op.code == BIAS_LEAKY_FWD:
        memcpy(ptr[a[3]], ptr[a[1]], op.n * sizeof(floating))
        loops.bias_leaky_relu_forward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.m, op.n,
                                      op.s[0])
    elif op.code == LEAKY_BIAS_BWD:
        loops.leaky_relu_bias_backward(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.acc[0],
                                       <floating*>ptr[a[3]], op.acc[1], op.m, op.n, op.s[0])
    elif op.code == CE_LOGITS_FWD:
        loops.cross_entropy_logits_forward(<floating*>ptr[a[0]], <int64_t*>ptr[a[1]], <floating*>ptr[a[2]],
                                           <floating*>ptr[a[3]], op.m, op.n)
    elif op.code == CE_LOGITS_BWD:
        loops.cross_entropy_logits_backward(<floating*>ptr[a[0]], <int64_t*>ptr[a[1]], <floating*>ptr[a[2]],
                                            <floating*>ptr[a[3]], op.acc[0], op.m, op.n)
    elif op.code == CLASS_LABELS:
        if typenum[a[0]] == cnp.NPY_INT64:
            row = loops.copy_class_labels(<int64_t*>ptr[a[0]], <int64_t*>ptr[a[1]], op.m, op.n, bad_value)
        elif typenum[a[0]] == cnp.NPY_FLOAT32:
            row = loops.copy_class_labels(<float*>ptr[a[0]], <int64_t*>ptr[a[1]], op.m, op.n, bad_value)
        else:
            row = loops.copy_class_labels(<double*>ptr[a[0]], <int64_t*>ptr[a[1]], op.m, op.n, bad_value)
    elif op.code == BINARY_LABELS:
        if typenum[a[0]] == cnp.NPY_INT64:
            row = loops.copy_binary_labels(<int64_t*>ptr[a[0]], <floating*>ptr[a[1]], op.m, bad_value)
        elif typenum[a[0]] == cnp.NPY_FLOAT32:
            row = loops.copy_binary_labels(<float*>ptr[a[0]], <floating*>ptr[a[1]], op.m, bad_value)
        else:
            row = loops.copy_binary_labels(<double*>ptr[a[0]], <floating*>ptr[a[1]], op.m, bad_value)
    elif op.code == COPY:
        memcpy(ptr[a[1]], ptr[a[0]], op.m)
    elif op.code == ADD:
        loops.add(<floating*>ptr[a[0]], <floating*>ptr[a[1]], <floating*>ptr[a[2]], op.m)
    elif op.code == ACCUMULATE:
        loops.accumulate(<floating*>ptr[a[0]], <floating*>ptr[a[1]], op.acc[0], op.m)
    if row >= 0:
        bad_row[0] = row
        return False
    return True
