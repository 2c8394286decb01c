# cython: language_level=3
"""What every Python-callable kernel does before its loop: check shapes, take pointers.

Shared by `_kernels.pyx` and the kernel modules of the node families added
since (`_conv.pyx`, ...): the checks run with the GIL held, on the memoryviews
the kernel was called with, before the loop runs without it.
"""
from libc.limits cimport INT_MAX
from cython cimport floating


cdef inline int _expect(str kernel, str name, tuple got, tuple expected) except -1:
    if got != expected:
        raise ValueError(f"{kernel}: {name} has shape {got}, expected {expected}")
    return 0


cdef inline int _blas_size(str kernel, Py_ssize_t n) except -1:
    # BLAS takes 32-bit int dimensions; refuse rather than wrap around.
    if n > INT_MAX:
        raise ValueError(f"{kernel}: dimension {n} exceeds the BLAS limit {INT_MAX}")
    return <int>n


# Data pointers of (possibly empty) memoryviews: &a[0] is out of bounds when a
# has no element, and then the loops never dereference the pointer anyway.
cdef inline const floating* _in(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline const floating* _in2(const floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] and a.shape[1] else NULL

cdef inline floating* _out(floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] else NULL

cdef inline floating* _out2(floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a is not None and a.shape[0] and a.shape[1] else NULL


