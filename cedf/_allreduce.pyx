# cython: language_level=3
"""The per-step work of `cedf.distributed` in C: the check that the fused buffers still hold every
``.grad``, and the allreduce among ranks on one machine, through memory they share.

`cedf.distributed` allocates an MPI shared-memory window (MPI_Win_allocate_shared
over the ranks of the machine) in which every rank has two slots, each the size
of its fused gradient buffer (the batch in the last entry), and rank 0's part
starts with a counter of arrivals. `SharedSum.run` is one step:

1. copy this rank's buffer into its slot of the step's parity;
2. add one to the counter and wait until it reaches (steps so far) x ranks, that
   is until every rank has written its slot of this step;
3. sum every rank's slot, weighed by its share of the global batch, into the
   buffer: every rank reads the same slots in the same order, so all get the
   same bits.

One wait per step suffices because the slots alternate: a rank writes its slot
of step t only once every rank has arrived at step t - 1, which each does only
after it finished reading the slots of step t - 2.

Why not MPI_Allreduce: between two ranks on this 2-core machine, MPICH's took
5.9 us for the 9.6 kB of mlp_digits' gradients and MPI_Barrier alone 3.4 us,
against a 25 us step; `SharedSum.run` between two ranks took 0.3 us for 2
numbers and 1.2 us for those 2,411, the wait included.
"""
cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np

cnp.import_array()

cdef extern from "shared_sum.h" nogil:
    void cedf_arrive(uint64_t* counter)
    int cedf_wait_arrivals(uint64_t* counter, uint64_t target, long rounds)
    void cedf_weighed_sum_f32(float* out, float* const* slot, const double* w, Py_ssize_t ranks, Py_ssize_t n)
    void cedf_weighed_sum_f64(double* out, double* const* slot, const double* w, Py_ssize_t ranks, Py_ssize_t n)


def fusion_state(parameters, tuple params, tuple views):
    """0 when `parameters` (a graph's list) holds exactly `params`, each ``.grad`` is its entry of
    `views` and each ``.value`` has its view's shape and dtype; 1 when the list changed or a value
    did not (a new fusion is needed); 2 when only some ``.grad`` is another array (to be adopted
    again). One pass in C: in Python the same checks took 0.5-0.8 us for four parameters, against
    2.0-3.9 us for the whole of `allreduce_gradients` of two ranks."""
    cdef Py_ssize_t i, d, n = len(params)
    cdef cnp.ndarray value, view
    cdef int state = 0
    if len(parameters) != n or len(views) != n:
        return 1
    for i in range(n):
        if parameters[i] is not params[i]:
            return 1
    for i in range(n):
        obj, view = getattr(params[i], "value", None), <cnp.ndarray>views[i]
        if not cnp.PyArray_Check(obj):
            return 1
        value = <cnp.ndarray>obj
        if (cnp.PyArray_NDIM(value) != cnp.PyArray_NDIM(view) or cnp.PyArray_TYPE(value) != cnp.PyArray_TYPE(view)
                or not cnp.PyArray_ISNOTSWAPPED(value)):
            return 1
        for d in range(cnp.PyArray_NDIM(view)):
            if cnp.PyArray_DIMS(value)[d] != cnp.PyArray_DIMS(view)[d]:
                return 1
        if getattr(params[i], "grad", None) is not view:
            state = 2
    return state


cdef class SharedSum:
    """The weighed sum over the ranks of one fused gradient buffer, through a shared window.

    `buffer`: this rank's fused buffer, (n,) float32 or float64, its gradients
    and then its batch (kept, and used at every `run`: the fusion's own array,
    of which the ``.grad``s are views); `slots`: 2 x ranks arrays like it in
    the window (parity 0's slots of ranks 0, 1, ..., then parity 1's);
    `counter`: a uint64 array (1,) in the window, zero before any rank's first
    run; `rank`: this rank's index among them. The arrays are kept alive with
    this object; the window itself is the caller's to keep (and to free).
    """

    cdef object _keep
    cdef void* _buffer
    cdef void** _slots
    cdef double* _weights
    cdef uint64_t* _counter
    cdef Py_ssize_t _n, _ranks, _rank
    cdef uint64_t _steps
    cdef bint _double

    def __cinit__(self, buffer, slots, counter, Py_ssize_t rank):
        slots = list(slots)
        if len(slots) % 2 or not slots:
            raise ValueError(f"SharedSum: expected two slots per rank, got {len(slots)}")
        dtype, n = buffer.dtype, buffer.shape[0]
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"SharedSum: a float32 or float64 buffer expected, got {dtype}")
        for s in [buffer] + slots:
            if s.dtype != dtype or s.shape != (n,) or not s.flags.c_contiguous or not s.flags.writeable:
                raise ValueError(f"SharedSum: the buffer and every slot must be writeable contiguous ({n},) "
                                 f"{dtype} arrays")
        if counter.dtype != np.uint64 or counter.shape != (1,) or not counter.flags.writeable:
            raise ValueError("SharedSum: the counter must be a writeable uint64 array of one entry")
        self._ranks = len(slots) // 2
        if not 0 <= rank < self._ranks:
            raise ValueError(f"SharedSum: rank {rank} is not one of the {self._ranks} ranks")
        self._slots = <void**>malloc(len(slots) * sizeof(void*))
        self._weights = <double*>malloc(self._ranks * sizeof(double))
        if self._slots == NULL or self._weights == NULL:
            raise MemoryError()
        for i, s in enumerate(slots):
            self._slots[i] = <void*><size_t>s.ctypes.data
        self._buffer = <void*><size_t>buffer.ctypes.data
        self._counter = <uint64_t*><size_t>counter.ctypes.data
        self._keep = (buffer, slots, counter)   # nothing else may resize the buffer: its views hold it
        self._n, self._rank, self._steps, self._double = n, rank, 0, dtype == np.float64

    def __dealloc__(self):
        free(self._slots)
        free(self._weights)

    def run(self, double batch):
        """Make the buffer (this rank's gradients but its last entry, the mean over `batch`
        examples) the weighed sum of every rank's; returns the global batch (then in the last
        entry), 0 when no rank had an example."""
        if self._double:
            return self._run[double](<double*>self._buffer, batch)
        return self._run[float](<float*>self._buffer, batch)

    cdef double _run(self, floating* buffer, double batch) except -1:
        cdef Py_ssize_t n = self._n, ranks = self._ranks, s
        cdef void** slots = self._slots + (self._steps % 2) * ranks
        cdef uint64_t target = (self._steps + 1) * <uint64_t>ranks
        cdef double total = 0
        cdef int arrived = 0
        buffer[n - 1] = <floating>batch
        with nogil:
            memcpy(slots[self._rank], buffer, n * sizeof(floating))
            cedf_arrive(self._counter)
            arrived = cedf_wait_arrivals(self._counter, target, 100000)
        self._steps += 1
        while not arrived:
            PyErr_CheckSignals()   # a rank that never comes must not make Ctrl-C wait too
            with nogil:
                arrived = cedf_wait_arrivals(self._counter, target, 100000)
        for s in range(ranks):
            total += (<floating*>slots[s])[n - 1]
        if total > 0:
            for s in range(ranks):
                self._weights[s] = (<floating*>slots[s])[n - 1] / total
            with nogil:
                if floating is float:
                    cedf_weighed_sum_f32(buffer, <float* const*>slots, self._weights, ranks, n - 1)
                else:
                    cedf_weighed_sum_f64(buffer, <double* const*>slots, self._weights, ranks, n - 1)
        buffer[n - 1] = <floating>total
        return total
