"""The reference backend: every kernel of cedf in plain NumPy.

This module is the specification. `cedf/_kernels.pyx` implements the same
functions, with the same signatures, as compiled loops; the tests run both on
the same inputs and compare. `cedf.set_backend("numpy")` runs the whole engine
on this module.

The contract that both backends share (the nodes in `cedf.nodes` check it
before calling, so that the compiled loops never see a bad buffer):

- arrays are C-contiguous, float32 or float64, one dtype per call; class
  labels are int64 and lie in range;
- `*_forward` functions write their result into `out`;
- `*_backward` functions *add* into the gradient buffers they are given
  (`gx`, `gA`, ...), exactly as the lecture's ``addgrad`` does (`+=`), so a node
  with several consumers sums what they send. A gradient buffer given as
  ``None`` is not computed (an `Input` takes no gradient);
- elementwise kernels (sigmoid, BCE) take 1-D buffers: the node passes flat
  views of arrays of any shape;
- matrix products and the optimisers' updates run in the arrays' dtype (the
  updates as PyTorch runs them); everything else is computed in double and
  rounded once into the buffer (`_f64`), as the compiled point functions do. A float32 sigmoid close to 1 leaves 1 - s with few significant
  bits, so two backends that rounded s differently would disagree on its
  gradient by far more than float32's precision.
"""
import numpy as np

SIGMOID_CLIP = 10.0    # the lecture clips sigmoid inputs to [-10, 10]
SOFTMAX_FLOOR = -10.0  # and floors the max-shifted softmax logits at -10


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def affine_forward(x, A, b, out):
    """out = x @ A + b, with x of shape (B, nIn), A (nIn, nOut), b (nOut,)."""
    np.matmul(x, A, out=out)
    out += b


def affine_backward(x, A, g, gx, gA, gb):
    """Gradients of out = x @ A + b given g = dL/dout: gx += g A^T, gA += x^T g, gb += sum_i g_i."""
    if gx is not None:
        gx += g @ A.T
    if gA is not None:
        gA += x.T @ g
    if gb is not None:
        gb += g.sum(axis=0)


def sigmoid_forward(x, out):
    """out = 1 / (1 + exp(-clip(x, -10, 10))), as 1 - t or t with t = e / (1 + e), e = exp(-|x|).

    The same formula as the compiled loop (csrc/pointwise.h says why): rounding
    1 + e first would lose the digits of a small e that decide 1 - s.
    """
    x = np.clip(_f64(x), -SIGMOID_CLIP, SIGMOID_CLIP)
    e = np.exp(-np.abs(x))
    t = e / (1 + e)
    out[...] = np.where(x < 0, t, 1 - t)


def sigmoid_backward(s, g, gx):
    """gx += g * s * (1 - s), with s the forward output."""
    s = _f64(s)
    gx += g * s * (1 - s)


def softmax_forward(x, out):
    """Row-wise softmax of x (B, C): shift by the row max, floor at -10, exponentiate, normalise."""
    x = _f64(x)
    with np.errstate(over="ignore"):   # x - max of huge logits of opposite signs: -inf, floored anyway
        shifted = np.maximum(x - x.max(axis=1, keepdims=True), SOFTMAX_FLOOR)
    e = np.exp(shifted)
    out[...] = e / e.sum(axis=1, keepdims=True)


def softmax_backward(p, g, gx):
    """gx += p * (g - sum_j p_j g_j) per row, with p the forward output."""
    p, g = _f64(p), _f64(g)
    gx += p * (g - np.sum(p * g, axis=1, keepdims=True))


def cross_entropy_forward(p, labels, out):
    """out_i = -log p[i, labels_i] for probabilities p (B, C) and int64 labels (B,)."""
    out[...] = -np.log(_f64(p[np.arange(len(labels)), labels]))


def cross_entropy_backward(p, labels, g, gp):
    """gp[i, labels_i] += -g_i / p[i, labels_i]; every other entry of row i gets nothing."""
    rows = np.arange(len(labels))
    gp[rows, labels] -= _f64(g) / p[rows, labels]


def bce_forward(p, y, out):
    """out_i = -y_i log p_i - (1 - y_i) log(1 - p_i) for hard labels y_i in {0, 1}.

    Only the term that the label selects is evaluated, so that p = 0 or 1 gives
    the exact infinity or zero rather than 0 * log(0) = NaN.
    """
    p, pos = _f64(p), y > 0.5
    out[pos] = -np.log(p[pos])
    out[~pos] = -np.log1p(-p[~pos])


def bce_backward(p, y, g, gp):
    """gp_i += g_i * (p_i - y_i) / (p_i (1 - p_i)), branch by branch as in the forward."""
    p, g, pos = _f64(p), _f64(g), y > 0.5
    gp[pos] -= g[pos] / p[pos]
    gp[~pos] += g[~pos] / (1 - p[~pos])


def sgd_update(value, grad, buf, lr, momentum, weight_decay, nesterov, first):
    """SGD step in place, PyTorch's rule: g = grad + wd value; with momentum (buf not None),
    buf = g on the first step, else momentum buf + g, and g = buf, or g + momentum buf
    (Nesterov); value -= lr g. In the parameter's dtype, as PyTorch computes it."""
    t = value.dtype.type
    lr, momentum, weight_decay = t(lr), t(momentum), t(weight_decay)
    g = grad + weight_decay * value
    if buf is not None:
        b = g if first else momentum * buf + g
        buf[...] = b
        g = g + momentum * b if nesterov else b
    value -= lr * g


def adam_update(value, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Adam step `step` (1, 2, ...) in place, PyTorch's rule with bias-corrected moments, in the
    parameter's dtype: value -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps), c = 1 - beta^step,
    the division by sqrt(c2) taken as a product with its reciprocal (as the compiled loop)."""
    if step < 1:
        raise ValueError(f"adam_update: step must be 1 or more, got {step}")
    t = value.dtype.type
    rate = t(lr / (1 - beta1 ** step))
    scale = t(1 / np.sqrt(1 - beta2 ** step))
    g = grad + t(weight_decay) * value
    m[...] = t(beta1) * m + t(1 - beta1) * g
    v[...] = t(beta2) * v + t(1 - beta2) * g * g
    value -= rate * m / (np.sqrt(v) * scale + t(eps))


# -- more activations and losses on logits (issue "Training toolkit") ----------------

def tanh_forward(x, out):
    """out = tanh(x)."""
    out[...] = np.tanh(_f64(x))


def tanh_backward(t, g, gx):
    """gx += g * (1 - t^2), with t the forward output."""
    t = _f64(t)
    gx += g * (1 - t * t)


def leaky_relu_forward(x, out, slope):
    """out = x where x >= 0, slope * x where x < 0 (ReLU: slope 0, and then exactly 0)."""
    x = _f64(x)
    out[...] = np.where(x < 0, x * slope if slope else 0.0, x)


def leaky_relu_backward(x, g, gx, slope):
    """gx += g where x > 0, slope * g elsewhere (the derivative at 0 taken as slope, as PyTorch does)."""
    gx += np.where(_f64(x) > 0, _f64(g), slope * _f64(g))


def cross_entropy_logits_forward(z, labels, p, out):
    """Softmax and cross-entropy of logits z (B, C) in one: p = softmax(z), out_i = logsumexp(z_i) - z[i, y_i].

    No clipping or flooring: the max-shifted exponentials cannot overflow, and
    a logit far below the max only underflows to a probability of 0.
    """
    z = _f64(z)
    top = z.max(axis=1, keepdims=True) if z.shape[1] else z[:, :1]
    with np.errstate(over="ignore"):   # z - top = -inf for logits of opposite huge signs: exp gives 0
        shifted = z - top
    total = np.exp(shifted).sum(axis=1, keepdims=True)
    p[...] = np.exp(shifted - np.log(total))
    rows = np.arange(len(labels))
    out[...] = np.log(total[:, 0]) - shifted[rows, labels]


def cross_entropy_logits_backward(p, labels, g, gz):
    """gz += g_i (p_i - onehot(y_i)), with p the forward's probabilities."""
    d = _f64(p) * _f64(g)[:, None]
    d[np.arange(len(labels)), labels] -= g
    gz += d


def bce_logits_forward(z, y, out):
    """out_i = max(z_i, 0) - z_i y_i + log(1 + exp(-|z_i|)): binary cross-entropy of sigmoid(z), for y in [0, 1]."""
    z, y = _f64(z), _f64(y)
    out[...] = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def bce_logits_backward(z, y, g, gz):
    """gz += g_i (sigmoid(z_i) - y_i), the sigmoid evaluated without overflow."""
    z = _f64(z)
    e = np.exp(-np.abs(z))
    s = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    gz += _f64(g) * (s - _f64(y))


def add_forward(x, y, out):
    """out = x + y, elementwise over flat buffers of one length (a residual connection)."""
    np.add(x, y, out=out)


def add_backward(g, gx, gy):
    """gx += g and gy += g (None skips): a sum passes its gradient on to both terms."""
    for grad in (gx, gy):
        if grad is not None:
            grad += g


# -- convolution (issue 15): im2col and GEMMs, 1-D as 2-D with H = 1 -------------------
#
# Layout channels-first, as PyTorch: x (N, C, H, W), W (O, C, kh, kw), out (N, O, Ho, Wo),
# Ho = (H + 2 ph - kh) // sh + 1 (likewise Wo). A 1-D convolution is the 2-D one of
# x (N, C, 1, L) with W (O, C, 1, k), stride (1, s) and padding (0, p): the node reshapes.
# Here the input is unfolded (im2col) into `cols` (C kh kw, Ho Wo N), one column per output
# position and example, and each product is one matrix product with it; the compiled loops
# compute the same sums without unfolding (cedf/_conv.pyx says how).

def _conv_geometry(x_shape, w_shape, stride, padding):
    (n, _, h, w), (o, _, kh, kw) = x_shape, w_shape
    (sh, sw), (ph, pw) = stride, padding
    return n, o, kh, kw, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _unfold(x, kh, kw, ho, wo, stride, padding):
    """cols (C kh kw, Ho Wo N): row (c, i, j) holds, for every output position (oh, ow, n), the
    input x[n, c, oh sh + i - ph, ow sw + j - pw], 0 outside x."""
    (sh, sw), (ph, pw) = stride, padding
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((c, kh, kw, ho, wo, n), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw].transpose(1, 2, 3, 0)
    return cols.reshape(c * kh * kw, ho * wo * n)


def conv_forward(x, W, b, out, stride, padding):
    """out = conv(x, W) + b (zero padding; cross-correlation, as PyTorch).

    x (N, C, H, W), W (O, C, kh, kw), b (O,), out (N, O, Ho, Wo); `stride` and `padding`
    are pairs (sh, sw), (ph, pw). out is W (O, C kh kw) @ cols, whose columns (oh, ow, n)
    are transposed to out's (N, O, ...) order, plus b per channel.
    """
    n, o, kh, kw, ho, wo = _conv_geometry(x.shape, W.shape, stride, padding)
    product = W.reshape(o, -1) @ _unfold(x, kh, kw, ho, wo, stride, padding)
    out[...] = product.reshape(o, ho, wo, n).transpose(3, 0, 1, 2) + b[:, None, None]


def conv_backward(x, W, g, gx, gW, gb, stride, padding):
    """Gradients of `conv_forward` at its input x, given g = dL/dout (N, O, Ho, Wo):
    gW += g cols^T (as (O, C kh kw)), gb += the sums of g over batch and positions, and
    gx += col2im(W^T g): each unfolded entry's gradient added back where it was read
    from x (padding dropped). None skips."""
    n, o, ho, wo = g.shape
    kh, kw = W.shape[2:]
    gt = g.transpose(1, 2, 3, 0).reshape(o, ho * wo * n)
    if gW is not None:
        gW += (gt @ _unfold(x, kh, kw, ho, wo, stride, padding).T).reshape(gW.shape)
    if gb is not None:
        gb += _f64(g).sum(axis=(0, 2, 3))   # in double, as the compiled loop sums
    if gx is not None:
        (sh, sw), (ph, pw) = stride, padding
        _, c, h, w = gx.shape
        dcols = (W.reshape(o, -1).T @ gt).reshape(c, kh, kw, ho, wo, n)
        gp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), gx.dtype)
        for i in range(kh):
            for j in range(kw):
                gp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dcols[:, i, j].transpose(3, 0, 1, 2)
        gx += gp[:, :, ph:ph + h, pw:pw + w]


# -- pooling (issue 15): MaxPool and AvgPool -----------------------------------------
# Over (N, C, H, W): windows of kh x kw positions at strides (sh, sw), no padding,
# floor((H - kh) / sh) + 1 rows of windows (PyTorch's ceil_mode=False); a 1-D input
# (N, C, L) is pooled as (N, C, 1, L) with kh = sh = 1. Positions that no window
# covers get no gradient; positions that several windows cover (stride < size)
# get the sum of what each sends.

def _windows(x, kh, kw, sh, sw):
    """The windows of x (N, C, H, W) as a read-only view (N, C, OH, OW, kh, kw)."""
    return np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def maxpool_forward(x, out, argmax, kh, kw, sh, sw):
    """out = the max of each window of x (N, C, H, W); argmax (int64, out's shape) = where it is,
    as the flat index h W + w in its channel's plane (PyTorch's return_indices).

    The first maximum in the window's row-major order wins a tie; a NaN counts as
    the maximum (the first NaN), so that it propagates, as in PyTorch.
    """
    n, c, oh, ow = out.shape
    width = x.shape[3]
    windows = _windows(x, kh, kw, sh, sw).reshape(n, c, oh, ow, kh * kw)
    k = np.argmax(windows, axis=-1)   # the first maximum; the first NaN if there is one
    out[...] = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    di, dj = np.divmod(k, kw)
    rows = np.arange(oh)[:, None] * sh + di
    cols = np.arange(ow)[None, :] * sw + dj
    argmax[...] = rows * width + cols


def maxpool_backward(g, argmax, gx):
    """gx (N, C, H, W) += g (N, C, OH, OW) at the positions argmax names (the forward's)."""
    n, c, _, width = gx.shape
    planes = (np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None])
    np.add.at(gx, planes + (argmax // width, argmax % width), g)


def avgpool_forward(x, out, kh, kw, sh, sw):
    """out = the mean of each window of x (N, C, H, W), summed in double."""
    out[...] = _windows(_f64(x), kh, kw, sh, sw).sum(axis=(-2, -1)) / (kh * kw)


def avgpool_backward(g, gx, kh, kw, sh, sw):
    """gx (N, C, H, W) += g / (kh kw) at every position of each window, in double."""
    _, _, oh, ow = g.shape
    share = _f64(g) / (kh * kw)
    for i in range(kh):
        for j in range(kw):   # the (i, j)-th position of every window: a strided slice of gx
            gx[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += share


# -- Normalisation: BatchNorm, LayerNorm (cedf/normalization.py) -----------------
#
# BatchNorm's x is viewed as (N, C, S): batch, channels, positions (S = 1 for
# (N, F) features, L for (N, C, L), H * W for (N, C, H, W)); its statistics are
# per channel, over N and S. LayerNorm's x is viewed as (R, F): rows, and the
# last axis that each row is normalised over. Statistics are computed in double
# and kept in double (`mean`, `invstd` = 1 / sqrt(var + eps)) for the backward.

def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, mean, invstd, out):
    """out = weight (x - mean) / sqrt(var + eps) + bias per channel c of x (N, C, S).

    In training, mean and var are the batch's (var biased) and the running
    statistics move towards them as PyTorch moves them: running = (1 - momentum)
    running + momentum batch, with the unbiased variance for running_var (it
    needs N S >= 2). In evaluation, the running statistics are used and left
    alone. Writes the mean used and 1 / sqrt(var + eps) into `mean`, `invstd`.
    """
    x = _f64(x)
    count = x.shape[0] * x.shape[2]
    if training:
        if count < 2:
            raise ValueError(f"batch_norm_forward: training needs 2 or more values per channel, got {count}")
        mu = x.mean(axis=(0, 2))
        var = ((x - mu[None, :, None]) ** 2).mean(axis=(0, 2))
        running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mu
        running_var[...] = (1 - momentum) * _f64(running_var) + momentum * var * count / (count - 1)
    else:
        mu, var = _f64(running_mean), _f64(running_var)
    mean[...] = mu
    invstd[...] = 1 / np.sqrt(var + eps)
    per_channel = (slice(None), None)
    out[...] = (x - mean[per_channel]) * invstd[per_channel] * _f64(weight)[per_channel] + _f64(bias)[per_channel]


def batch_norm_backward(x, weight, g, mean, invstd, training, gx, gweight, gbias):
    """gx, gweight, gbias += the gradients of batch_norm_forward, given g = dL/dout (None skips).

    With xhat = (x - mean) invstd: gbias += sum g, gweight += sum g xhat (over N
    and S), and gx += weight invstd (g - sum g / M - xhat sum g xhat / M) in
    training (M = N S: the batch's statistics depend on x), weight invstd g in
    evaluation (the running ones do not).
    """
    per_channel = (slice(None), None)
    xhat = (_f64(x) - mean[per_channel]) * invstd[per_channel]
    g = _f64(g)
    db, dw = g.sum(axis=(0, 2)), (g * xhat).sum(axis=(0, 2))
    if gweight is not None:
        gweight += dw
    if gbias is not None:
        gbias += db
    if gx is not None:
        k = (_f64(weight) * invstd)[per_channel]
        if training:
            count = x.shape[0] * x.shape[2]
            gx += k * (g - db[per_channel] / count - xhat * dw[per_channel] / count)
        else:
            gx += k * g


def layer_norm_forward(x, weight, bias, eps, mean, invstd, out):
    """out = weight (x - mean) / sqrt(var + eps) + bias, each row of x (R, F) by its own mean and
    (biased) variance; writes them as `mean` and `invstd` = 1 / sqrt(var + eps), one per row."""
    x = _f64(x)
    if x.shape[1] == 0:
        raise ValueError("layer_norm_forward: x has no features to normalise over")
    mean[...] = x.mean(axis=1)
    invstd[...] = 1 / np.sqrt(((x - mean[:, None]) ** 2).mean(axis=1) + eps)
    out[...] = (x - mean[:, None]) * invstd[:, None] * _f64(weight) + _f64(bias)


def layer_norm_backward(x, weight, g, mean, invstd, gx, gweight, gbias):
    """gx, gweight, gbias += the gradients of layer_norm_forward, given g = dL/dout (None skips).

    With xhat = (x - mean) invstd and h = g weight, per row: gx += invstd (h -
    mean(h) - xhat mean(h xhat)); gweight += sum over rows of g xhat, gbias += of g.
    """
    xhat = (_f64(x) - mean[:, None]) * invstd[:, None]
    g = _f64(g)
    if gweight is not None:
        gweight += (g * xhat).sum(axis=0)
    if gbias is not None:
        gbias += g.sum(axis=0)
    if gx is not None:
        features = x.shape[1]
        h = g * _f64(weight)
        gx += invstd[:, None] * (h - h.sum(axis=1, keepdims=True) / features
                                 - xhat * (h * xhat).sum(axis=1, keepdims=True) / features)


# -- Dropout (cedf/dropout.py) ----------------------------------------------------
#
# The mask is a function of (seed, step, element), the same in C and here: the
# node's state is a uint64 array [seed, step]. The step's key is the step-th
# output of splitmix64 seeded with `seed`, element i's 64 bits the i-th output
# of splitmix64 seeded with that key; an element is kept when the top 53 of
# them, as an integer u, are >= threshold = floor(p 2^53), so P(drop) is p up
# to 2^-53. Arithmetic modulo 2^64, as C's uint64_t.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z):
    """splitmix64's output function (Steele, Lea, Flood 2014) of the states `z` (a uint64 array)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_bits(state, n):
    """The 53-bit uniform integers of elements 0 .. n-1 at the state's step (uint64 array)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(state[:1] + (state[1:2] + np.uint64(1)) * _GOLDEN)
        return _splitmix64(key + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN) >> np.uint64(11)


def dropout_forward(x, state, threshold, scale, mask, out):
    """One training step of inverted dropout on flat x: mask = bits >= threshold (uint8), out = x scale
    where kept and 0 elsewhere (scale = 1 / (1 - p)); then the state's step advances by one."""
    keep = dropout_bits(state, x.shape[0]) >= np.uint64(threshold)
    mask[...] = keep
    out[...] = np.where(keep, _f64(x) * scale, 0.0)
    state[1] += np.uint64(1)


def dropout_backward(g, mask, scale, gx):
    """gx += g scale where the mask kept the element (the forward's scale: 1 in evaluation)."""
    gx += np.where(mask != 0, _f64(g) * scale, 0.0)
