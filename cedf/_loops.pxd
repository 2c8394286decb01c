# cython: language_level=3
"""The loops of cedf's kernels, over raw C-contiguous buffers, without the GIL.

Shared by `_kernels.pyx` (one Python-callable function per kernel, which checks
its arguments and calls the loop) and `_engine.pyx` (the compiled plan of a
whole graph, which checks its buffers once and calls many loops in one go).
Nothing here checks anything but labels: callers guarantee the shapes, and
the loops that index by class label read labels that `copy_class_labels` has
checked and copied out of the user's reach (see there).

Conventions:
- `floating` is float or double; one loop serves both.
- A gradient loop *writes* its result when `acc` is false and *adds* it when
  `acc` is true: the first contribution to a buffer writes, so a buffer never
  needs zeroing before one write (the reference always adds, the lecture's
  ``+=``; the plan knows which contribution comes first).
- Output pointers may be NULL: that gradient is not wanted (an Input's).
- The per-element maths is in `csrc/pointwise.h`.
"""
from cython cimport floating
from libc.math cimport exp, fabs, log, log1p
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from cedf._blas cimport axpy, gemm

cdef extern from "pointwise.h" nogil:
    void cedf_sigmoid_array_f32(const float* x, float* out, Py_ssize_t n)
    void cedf_sigmoid_array_f64(const double* x, double* out, Py_ssize_t n)
    void cedf_bias_sigmoid_f32(const float* u, const float* b, float* s, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_bias_sigmoid_f64(const double* u, const double* b, double* s, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_sigmoid_backward_f32(const float* s, const float* g, float* gx, int acc, float* gb, int acc_b,
                                   Py_ssize_t rows, Py_ssize_t cols)
    void cedf_sigmoid_backward_f64(const double* s, const double* g, double* gx, int acc, double* gb, int acc_b,
                                   Py_ssize_t rows, Py_ssize_t cols)
    void cedf_column_sums_f32(const float* g, float* out, int acc, Py_ssize_t n, Py_ssize_t c)
    void cedf_column_sums_f64(const double* g, double* out, int acc, Py_ssize_t n, Py_ssize_t c)
    void cedf_sigmoid_bce_backward_f32(const float* p, const float* y, const float* g, float* gx, int acc,
                                       float* gp, Py_ssize_t n)
    void cedf_sigmoid_bce_backward_f64(const double* p, const double* y, const double* g, double* gx, int acc,
                                       double* gp, Py_ssize_t n)
    void cedf_tanh_array_f32(const float* x, float* out, Py_ssize_t n)
    void cedf_tanh_array_f64(const double* x, double* out, Py_ssize_t n)
    void cedf_softmax_exp_f32(float* x, Py_ssize_t n)
    void cedf_softmax_exp_f64(double* x, Py_ssize_t n)
    void cedf_logits_exp_f32(float* x, Py_ssize_t n)
    void cedf_logits_exp_f64(double* x, Py_ssize_t n)
    void cedf_fill_rows_f32(const float* b, float* out, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_fill_rows_f64(const double* b, double* out, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_shift_by_max_f32(const float* x, const float* b, float* o, float* top, Py_ssize_t rows,
                               Py_ssize_t cols)
    void cedf_shift_by_max_f64(const double* x, const double* b, double* o, double* top, Py_ssize_t rows,
                               Py_ssize_t cols)
    void cedf_normalize_rows_f32(float* o, float* loss, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_normalize_rows_f64(double* o, double* loss, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_softmax_ce_backward_f32(const float* p, const int64_t* labels, const float* g, float* gx,
                                      int acc, float* gp, float* gb, int acc_b, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_softmax_ce_backward_f64(const double* p, const int64_t* labels, const double* g, double* gx,
                                      int acc, double* gp, double* gb, int acc_b, Py_ssize_t rows,
                                      Py_ssize_t cols)
    void cedf_logits_ce_backward_f32(const float* p, const int64_t* labels, const float* g, float* gz,
                                     int acc, Py_ssize_t rows, Py_ssize_t cols)
    void cedf_logits_ce_backward_f64(const double* p, const int64_t* labels, const double* g, double* gz,
                                     int acc, Py_ssize_t rows, Py_ssize_t cols)
    double cedf_bce(double p, double y)
    double cedf_bce_grad(double p, double y, double g)
    void cedf_leaky_relu_array_f32(const float* x, float* out, Py_ssize_t n, double slope)
    void cedf_leaky_relu_array_f64(const double* x, double* out, Py_ssize_t n, double slope)
    void cedf_leaky_relu_grad_array_f32(const float* x, const float* g, float* gx, int acc, Py_ssize_t n,
                                        double slope)
    void cedf_leaky_relu_grad_array_f64(const double* x, const double* g, double* gx, int acc, Py_ssize_t n,
                                        double slope)
    void cedf_bias_leaky_relu_f32(const float* u, const float* b, float* out, Py_ssize_t rows, Py_ssize_t cols,
                                  double slope)
    void cedf_bias_leaky_relu_f64(const double* u, const double* b, double* out, Py_ssize_t rows, Py_ssize_t cols,
                                  double slope)
    void cedf_leaky_relu_grad_rows_f32(const float* x, const float* g, float* gx, int acc, float* gb, int acc_b,
                                       Py_ssize_t rows, Py_ssize_t cols, double slope)
    void cedf_leaky_relu_grad_rows_f64(const double* x, const double* g, double* gx, int acc, double* gb,
                                       int acc_b, Py_ssize_t rows, Py_ssize_t cols, double slope)
    double cedf_bce_logits(double z, double y)
    double cedf_sigmoid_exact(double z)


ctypedef fused label_t:
    int64_t
    float
    double


# -- labels: checked while they are copied -----------------------------------------------
# The user's label array may be changed by another thread while a loop runs
# without the GIL, so a check before the loop proves nothing about what the
# loop reads next. Each label is read once, checked, and written to a buffer
# that only cedf holds; the loops that index p[i, label] read that copy. The
# loops themselves are in csrc/labels.h (vectorised).

cdef extern from "transpose.h" nogil:
    void cedf_transpose_f32(const float* src, float* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)
    void cedf_transpose_f64(const double* src, double* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)

cdef extern from "labels.h" nogil:
    Py_ssize_t cedf_class_labels_i64(const int64_t* y, int64_t* out, Py_ssize_t n, Py_ssize_t c, double* bad)
    Py_ssize_t cedf_class_labels_f32(const float* y, int64_t* out, Py_ssize_t n, Py_ssize_t c, double* bad)
    Py_ssize_t cedf_class_labels_f64(const double* y, int64_t* out, Py_ssize_t n, Py_ssize_t c, double* bad)
    Py_ssize_t cedf_binary_labels_i64_f32(const int64_t* y, float* out, Py_ssize_t n, double* bad)
    Py_ssize_t cedf_binary_labels_f32_f32(const float* y, float* out, Py_ssize_t n, double* bad)
    Py_ssize_t cedf_binary_labels_f64_f32(const double* y, float* out, Py_ssize_t n, double* bad)
    Py_ssize_t cedf_binary_labels_i64_f64(const int64_t* y, double* out, Py_ssize_t n, double* bad)
    Py_ssize_t cedf_binary_labels_f32_f64(const float* y, double* out, Py_ssize_t n, double* bad)
    Py_ssize_t cedf_binary_labels_f64_f64(const double* y, double* out, Py_ssize_t n, double* bad)


cdef inline Py_ssize_t copy_class_labels(const label_t* y, int64_t* out, Py_ssize_t n, Py_ssize_t c,
                                         double* bad_value) noexcept nogil:
    """out = y as int64 class indices; -1, or the first row whose label is not a whole number in
    [0, c) (its value in out[row] for int64 labels, in bad_value for float ones)."""
    if label_t is int64_t:
        return cedf_class_labels_i64(y, out, n, c, bad_value)
    elif label_t is float:
        return cedf_class_labels_f32(y, out, n, c, bad_value)
    else:
        return cedf_class_labels_f64(y, out, n, c, bad_value)


cdef inline Py_ssize_t copy_binary_labels(const label_t* y, floating* out, Py_ssize_t n,
                                          double* bad_value) noexcept nogil:
    """out = y in the loss's float dtype; -1, or the first row whose label, so rounded, is not 0 or 1."""
    if floating is float:
        if label_t is int64_t:
            return cedf_binary_labels_i64_f32(y, out, n, bad_value)
        elif label_t is float:
            return cedf_binary_labels_f32_f32(y, out, n, bad_value)
        else:
            return cedf_binary_labels_f64_f32(y, out, n, bad_value)
    else:
        if label_t is int64_t:
            return cedf_binary_labels_i64_f64(y, out, n, bad_value)
        elif label_t is float:
            return cedf_binary_labels_f32_f64(y, out, n, bad_value)
        else:
            return cedf_binary_labels_f64_f64(y, out, n, bad_value)


cdef inline void fill(floating* dst, floating value, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if value == 0:
        memset(dst, 0, n * sizeof(floating))
    else:
        for i in range(n):
            dst[i] = value


cdef inline void add(const floating* x, const floating* y, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = x[i] + y[i]


cdef inline void accumulate(const floating* src, floating* dst, bint acc, Py_ssize_t n) noexcept nogil:
    """dst = src, or dst += src: a gradient passed on unchanged (a sum's, a reshape's)."""
    cdef Py_ssize_t i
    if not acc:
        memcpy(dst, src, n * sizeof(floating))
        return
    for i in range(n):
        dst[i] += src[i]


cdef inline void affine_forward(const floating* x, const floating* A, const floating* b,
                                floating* out, int n, int n_in, int n_out) noexcept nogil:
    # The bias is copied into every row first, then BLAS adds x @ A on top
    # (beta = 1): one pass over `out` less than adding the bias afterwards.
    # With b NULL the product is written alone (beta = 0): a Sigmoid that
    # reads `out` adds the bias in its own pass (bias_sigmoid_forward).
    if b != NULL:   # in C: a loop compiled per instruction set (csrc/pointwise.h)
        if floating is float:
            cedf_fill_rows_f32(b, out, n, n_out)
        else:
            cedf_fill_rows_f64(b, out, n, n_out)
    if n > 0 and n_in > 0 and n_out > 0:
        gemm(False, False, n, n_out, n_in, 1, x, n_in, A, n_out, b != NULL, out, n_out)
    elif b == NULL:
        fill(out, <floating>0, <Py_ssize_t>n * n_out)


cdef inline double long_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """The sum of a[:n] in double, in eight partial sums, so that the additions need not wait for
    each other (and vectorise): one serial chain cost 47 us for the 47,500 numbers of MNIST-1D's
    first convolution's bias gradient here."""
    cdef double s[8]
    cdef Py_ssize_t i, j
    for j in range(8):
        s[j] = 0
    for i in range(0, n - n % 8, 8):
        for j in range(8):
            s[j] += a[i + j]
    for i in range(n - n % 8, n):
        s[0] += a[i]
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline void column_sums(const floating* g, floating* out, bint acc, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    """out (+)= the sums of the c columns of g (n x c): a bias gradient."""
    if c == 1:
        out[0] = <floating>(out[0] + long_sum(g, n) if acc else long_sum(g, n))
        return
    # In C: a loop compiled per instruction set (see csrc/pointwise.h).
    if floating is float:
        cedf_column_sums_f32(g, out, acc, n, c)
    else:
        cedf_column_sums_f64(g, out, acc, n, c)


cdef inline void affine_backward(const floating* x, const floating* A, const floating* g,
                                 floating* gx, bint acc_x, floating* gA, bint acc_A,
                                 floating* gb, bint acc_b,
                                 int n, int n_in, int n_out, floating* At=NULL) noexcept nogil:
    # With At (room for n_out x n_in numbers), gx (+)= g @ At after At = A^T: an untransposed
    # product, which OpenBLAS runs in its small-matrix kernels on this thread up to
    # 100 x 100 x 100, where g @ A^T takes its general path (packing, and its threads). See
    # cedf.plan, which gives At to the small layers.
    cdef bint nonempty = n > 0 and n_in > 0 and n_out > 0
    if gx != NULL:
        if nonempty and At != NULL:
            if floating is float:
                cedf_transpose_f32(A, At, n_in, n_out, 0)
            else:
                cedf_transpose_f64(A, At, n_in, n_out, 0)
            gemm(False, False, n, n_in, n_out, 1, g, n_out, At, n_in, acc_x, gx, n_in)
        elif nonempty:   # gx (+)= g @ A^T
            gemm(False, True, n, n_in, n_out, 1, g, n_out, A, n_out, acc_x, gx, n_in)
        elif not acc_x:
            fill(gx, <floating>0, <Py_ssize_t>n * n_in)
    if gA != NULL:
        if nonempty:   # gA (+)= x^T @ g
            gemm(True, False, n_in, n_out, n, 1, x, n_in, g, n_out, acc_A, gA, n_out)
        elif not acc_A:
            fill(gA, <floating>0, <Py_ssize_t>n_in * n_out)
    if gb != NULL:
        column_sums(g, gb, acc_b, n, n_out)


cdef inline void sigmoid_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # In C: a loop compiled per instruction set (see csrc/pointwise.h).
    if floating is float:
        cedf_sigmoid_array_f32(x, out, n)
    else:
        cedf_sigmoid_array_f64(x, out, n)


cdef inline void bias_sigmoid_forward(const floating* u, const floating* b, floating* s,
                                      Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """s = sigmoid(u + b), b added to every row: an Affine's bias, added by the Sigmoid that reads it."""
    if floating is float:
        cedf_bias_sigmoid_f32(u, b, s, rows, cols)
    else:
        cedf_bias_sigmoid_f64(u, b, s, rows, cols)


cdef inline void sigmoid_backward(const floating* s, const floating* g, floating* gx, bint acc,
                                  floating* gb, bint acc_b, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # The lecture's local gradient s (1 - s), written in terms of the output. With gb, the
    # bias gradient of the Affine before the Sigmoid (the column sums of gx) is summed in
    # the same pass. In C: a loop compiled per instruction set (see csrc/pointwise.h).
    if floating is float:
        cedf_sigmoid_backward_f32(s, g, gx, acc, gb, acc_b, rows, cols)
    else:
        cedf_sigmoid_backward_f64(s, g, gx, acc, gb, acc_b, rows, cols)


cdef inline void shift_by_max(const floating* x, const floating* b, floating* o, floating* top, Py_ssize_t n,
                              Py_ssize_t c) noexcept nogil:
    """o = x - max(x) row by row (n rows of c), x + b for x unless b is NULL; the maxima into top
    unless it is NULL."""
    if floating is float:
        cedf_shift_by_max_f32(x, b, o, top, n, c)
    else:
        cedf_shift_by_max_f64(x, b, o, top, n, c)


cdef inline void normalize_rows(floating* o, floating* loss, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    """o = o / sum(o) row by row; with loss (z_y - max), loss = log(sum) - loss."""
    if floating is float:
        cedf_normalize_rows_f32(o, loss, n, c)
    else:
        cedf_normalize_rows_f64(o, loss, n, c)


cdef inline void softmax_forward(const floating* x, const floating* b, floating* out, Py_ssize_t n,
                                 Py_ssize_t c) noexcept nogil:
    # Three passes: shift each row by its max, exponentiate the whole buffer in
    # one vectorised call, normalise each row (in C: csrc/pointwise.h). With b,
    # the softmax of x + b: the bias of the Affine x, added here.
    shift_by_max(x, b, out, <floating*>NULL, n, c)
    if floating is float:
        cedf_softmax_exp_f32(out, n * c)
    else:
        cedf_softmax_exp_f64(out, n * c)
    normalize_rows(out, <floating*>NULL, n, c)


cdef inline void softmax_backward(const floating* p, const floating* g, floating* gx, bint acc,
                                  Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i, j, k
    cdef double dot
    for i in range(n):
        dot = 0
        for j in range(c):
            dot += p[i * c + j] * g[i * c + j]
        for j in range(c):
            k = i * c + j
            gx[k] = (gx[k] if acc else 0) + <floating>(p[k] * (g[k] - dot))


cdef inline void cross_entropy_forward(const floating* p, const int64_t* labels, floating* out,
                                       Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>(-log(p[i * c + labels[i]]))


cdef inline void cross_entropy_backward(const floating* p, const int64_t* labels, const floating* g,
                                        floating* gp, bint acc, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i, k
    if not acc:
        fill(gp, <floating>0, n * c)
    for i in range(n):
        k = i * c + labels[i]
        gp[k] += <floating>(-g[i] / <double>p[k])


cdef inline void softmax_cross_entropy_backward(const floating* p, const int64_t* labels,
                                                const floating* g, floating* gx, bint acc,
                                                floating* gp, floating* gb, bint acc_b,
                                                Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    # Softmax followed by cross-entropy, differentiated together:
    # d(-log p_y)/dx_j = p_j - [j == y], one pass instead of two. The Softmax's
    # own gradient gp (the cross-entropy's -1/p_y at the label, zero elsewhere)
    # is written too, so that it is there to read, at the cost of a memset. With
    # gb, the bias gradient of the Affine before the Softmax, summed in the same pass.
    if floating is float:
        cedf_softmax_ce_backward_f32(p, labels, g, gx, acc, gp, gb, acc_b, n, c)
    else:
        cedf_softmax_ce_backward_f64(p, labels, g, gx, acc, gp, gb, acc_b, n, c)


cdef inline void bce_forward(const floating* p, const floating* y, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>cedf_bce(p[i], y[i])


cdef inline void bce_backward(const floating* p, const floating* y, const floating* g, floating* gp,
                              bint acc, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gp[i] = (gp[i] if acc else 0) + <floating>cedf_bce_grad(p[i], y[i], g[i])


cdef inline void sigmoid_bce_backward(const floating* p, const floating* y, const floating* g,
                                      floating* gx, bint acc, floating* gp, Py_ssize_t n) noexcept nogil:
    # Sigmoid followed by BCE, differentiated together: the lecture's local
    # gradients (p - y) / (p (1 - p)) and p (1 - p) multiply to p - y. The
    # Sigmoid's own gradient gp, the first factor, is written too (in C:
    # csrc/pointwise.h).
    if floating is float:
        cedf_sigmoid_bce_backward_f32(p, y, g, gx, acc, gp, n)
    else:
        cedf_sigmoid_bce_backward_f64(p, y, g, gx, acc, gp, n)


cdef inline void sgd(floating* value, const floating* grad, floating lr, Py_ssize_t n) noexcept nogil:
    # value -= lr grad, the lecture's update, as BLAS's axpy (see _blas.axpy).
    # OpenBLAS returns at once when alpha is 0, leaving the value of an inf or
    # NaN gradient as it was; the lecture's update makes it NaN (0 * inf).
    cdef Py_ssize_t i
    if lr == 0:
        for i in range(n):
            value[i] -= lr * grad[i]
    else:
        axpy(n, -lr, grad, value)


# -- optimisers (cedf.optim): PyTorch's update rules, in the parameter's precision ------

cdef extern from "optim.h" nogil:
    void cedf_sgd_f32(float* value, const float* grad, float* buf, Py_ssize_t n, double lr, double momentum,
                      double weight_decay, int nesterov, int first)
    void cedf_sgd_f64(double* value, const double* grad, double* buf, Py_ssize_t n, double lr, double momentum,
                      double weight_decay, int nesterov, int first)
    void cedf_adam_f32(float* value, const float* grad, float* m, float* v, Py_ssize_t n, double lr, double beta1,
                       double beta2, double eps, double weight_decay, double correction1, double correction2)
    void cedf_adam_double(double* value, const double* grad, double* m, double* v, Py_ssize_t n, double lr,
                          double beta1, double beta2, double eps, double weight_decay, double correction1,
                          double correction2)


cdef inline void sgd_momentum(floating* value, const floating* grad, floating* buf, Py_ssize_t n,
                              double lr, double momentum, double weight_decay, bint nesterov,
                              bint first) noexcept nogil:
    # buf is None (NULL) without momentum; on the first step it starts as the gradient.
    if floating is float:
        cedf_sgd_f32(value, grad, buf, n, lr, momentum, weight_decay, nesterov, first)
    else:
        cedf_sgd_f64(value, grad, buf, n, lr, momentum, weight_decay, nesterov, first)


cdef inline void adam(floating* value, const floating* grad, floating* m, floating* v, Py_ssize_t n,
                      double lr, double beta1, double beta2, double eps, double weight_decay,
                      double correction1, double correction2) noexcept nogil:
    if floating is float:
        cedf_adam_f32(value, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, correction1, correction2)
    else:
        cedf_adam_double(value, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, correction1, correction2)


# -- more activations and losses on logits: each element in double, rounded once -------
# (but tanh, in the buffer's precision as the sigmoid)

cdef inline void tanh_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # In C, in the buffer's precision, vectorised like the sigmoid (csrc/pointwise.h), within
    # 1.6 ulp: libm's tanh, a call per element, took 14 ns an element here, this 1.07 (double)
    # or 0.52 (float); a 64-32-10 Tanh MLP's step went from 50 to 21 us (float32).
    if floating is float:
        cedf_tanh_array_f32(x, out, n)
    else:
        cedf_tanh_array_f64(x, out, n)


cdef inline void tanh_backward(const floating* t, const floating* g, floating* gx, bint acc,
                               Py_ssize_t n) noexcept nogil:
    # The local gradient 1 - t^2 as (1 - t)(1 + t), in the buffer's precision as the
    # sigmoid's: where 1 - t^2 cancels (|t| >= 1/2) the factor 1 -+ t is exact, so it
    # is within 1.5 ulp of the exact 1 - t^2 of the rounded t. The double version
    # (1 - t * t in double, for floats too) converted every float and lost the
    # digits of t * t near |t| = 1; floats went from 0.40 to 0.13 ns per element here.
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = (gx[i] if acc else 0) + g[i] * ((<floating>1 - t[i]) * (<floating>1 + t[i]))


cdef inline void leaky_relu_forward(const floating* x, floating* out, Py_ssize_t n, double slope) noexcept nogil:
    # In C: a loop compiled per instruction set (see csrc/pointwise.h).
    if floating is float:
        cedf_leaky_relu_array_f32(x, out, n, slope)
    else:
        cedf_leaky_relu_array_f64(x, out, n, slope)


cdef inline void leaky_relu_backward(const floating* x, const floating* g, floating* gx, bint acc,
                                     Py_ssize_t n, double slope) noexcept nogil:
    if floating is float:
        cedf_leaky_relu_grad_array_f32(x, g, gx, acc, n, slope)
    else:
        cedf_leaky_relu_grad_array_f64(x, g, gx, acc, n, slope)


cdef inline void bias_leaky_relu_forward(const floating* u, const floating* b, floating* out, Py_ssize_t rows,
                                         Py_ssize_t cols, double slope) noexcept nogil:
    """out = leaky_relu(u + b), b added to every row: an Affine's bias, added by the ReLU that reads it."""
    if floating is float:
        cedf_bias_leaky_relu_f32(u, b, out, rows, cols, slope)
    else:
        cedf_bias_leaky_relu_f64(u, b, out, rows, cols, slope)


cdef inline void leaky_relu_bias_backward(const floating* y, const floating* g, floating* gx, bint acc,
                                          floating* gb, bint acc_b, Py_ssize_t rows, Py_ssize_t cols,
                                          double slope) noexcept nogil:
    # From the ReLU's output y (a slope >= 0: positive where the input is), with the bias
    # gradient of the Affine before it summed in the same pass (see csrc/pointwise.h).
    if floating is float:
        cedf_leaky_relu_grad_rows_f32(y, g, gx, acc, gb, acc_b, rows, cols, slope)
    else:
        cedf_leaky_relu_grad_rows_f64(y, g, gx, acc, gb, acc_b, rows, cols, slope)


cdef inline void cross_entropy_logits_forward(const floating* z, const int64_t* labels, floating* p,
                                              floating* out, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    # As softmax_forward, three passes: the max-shifted logits into p, their exp for
    # the whole batch in one vectorised call (csrc/pointwise.h: for any x <= 0, as
    # the shifted logits are unbounded below), then per row the sum (in double),
    # p = e / sum and logsumexp(z) - z_y = log(sum) - (z_y - max).
    cdef Py_ssize_t i
    if c == 0:
        return
    shift_by_max(z, <floating*>NULL, p, out, n, c)   # the row maxima into out
    for i in range(n):
        # z_y - max, kept in out: the loss, log(sum) - this, is at least as large, so rounding
        # it here costs the loss at most half an ulp.
        out[i] = <floating>(<double>z[i * c + labels[i]] - out[i])
    if floating is float:
        cedf_logits_exp_f32(p, n * c)
    else:
        cedf_logits_exp_f64(p, n * c)
    normalize_rows(p, out, n, c)


cdef inline void cross_entropy_logits_backward(const floating* p, const int64_t* labels, const floating* g,
                                               floating* gz, bint acc, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    if floating is float:
        cedf_logits_ce_backward_f32(p, labels, g, gz, acc, n, c)
    else:
        cedf_logits_ce_backward_f64(p, labels, g, gz, acc, n, c)


cdef inline void bce_logits_forward(const floating* z, const floating* y, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>cedf_bce_logits(z[i], y[i])


cdef inline void bce_logits_backward(const floating* z, const floating* y, const floating* g, floating* gz,
                                     bint acc, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gz[i] = <floating>((gz[i] if acc else 0) + <double>g[i] * (cedf_sigmoid_exact(z[i]) - y[i]))
