"""Data for cedf's examples: mini-batches, the lecture's toy data sets, digits and MNIST.

Everything here is plain NumPy and independent of the graph engine: the arrays
go into ``x.value`` and ``y.value`` of the lecture's ``Input`` nodes.

- `batches` cuts (X, y) into shuffled mini-batches, one pass per call.
- `logistic_1d` and `blobs` draw the slides' logistic-regression examples:
  points on a line, and two Gaussian blobs in the plane, with labels in {0, 1}.
- `digits` splits scikit-learn's bundled 8x8 digits (an optional dependency).
- `load_mnist` reads MNIST from its original IDX files, with `read_idx`.
"""
import math
import os
import zlib

import numpy as np

__all__ = ["batches", "logistic_1d", "blobs", "digits", "load_mnist", "read_idx"]


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def batches(X, y, batch_size, shuffle=True, seed=None, drop_last=False, reuse=False, order=None):
    """Mini-batches ``(X_batch, y_batch)`` that visit every example once.

    X and y are cut along their first axis into consecutive batches of
    `batch_size` examples; the last one holds the remainder, or is left out
    with ``drop_last=True`` (so every step sees the same batch shape, which
    spares cedf a re-plan of the graph). With ``shuffle=True`` the order is a
    permutation drawn by ``np.random.default_rng(seed)``: the same int seed
    gives the same batches; one `np.random.Generator` passed on every epoch
    gives a fresh order each time; ``None`` draws a fresh order from the OS.
    `order`, a permutation of the examples, is used instead when given.
    Without shuffling the batches are views of X and y, in order.

    With ``reuse=True`` shuffled batches are gathered, many batches at a time,
    into one array (and one for the labels) that later batches overwrite: each
    batch is a view of it, valid until the next batch. No allocation per
    batch, and one ``np.take`` per chunk of batches instead of two per batch
    (each cost more in its call than in its copying: 1.9 and 1.2 us for a
    batch of 100 x 40 floats here). Copy a batch you want to keep.

    Inputs are checked here, when `batches` is called, not at the first batch.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"batches: X and y must be arrays of examples along their first axis, "
                         f"got shapes {X.shape} and {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"batches: X has {len(X)} examples but y has {len(y)}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    n = len(X)
    if order is None and shuffle:
        order = np.random.default_rng(seed).permutation(n)
    elif order is not None:
        order = np.asarray(order)
        # A permutation, checked in one counting pass: "clip" below would turn any other index
        # into some example silently.
        if not (order.ndim == 1 and len(order) == n and order.dtype.kind in "iu"
                and (n == 0 or (order.min() >= 0 and order.max() < n
                                and np.all(np.bincount(order, minlength=n) == 1)))):
            raise ValueError(f"batches: order must be a permutation of the {n} examples' indices "
                             f"(each of 0 .. {n - 1} once), got {order!r}")
    stop = n - n % batch_size if drop_last else n
    # With reuse: about 4 MB of examples per chunk, whole batches, at least one.
    chunk = max(1, (4 << 20) // max(X[:1].nbytes * batch_size, 1)) * batch_size if reuse else batch_size
    Xc = yc = None

    def generate():
        nonlocal Xc, yc
        for start in range(0, stop, batch_size):
            if order is None:
                yield X[start:start + batch_size], y[start:start + batch_size]
            elif not reuse:
                index = order[start:start + batch_size]
                yield X[index], y[index]
            else:
                at = start % chunk
                if at == 0:
                    index = order[start:min(start + chunk, stop)]
                    if Xc is None or len(Xc) < len(index):
                        Xc = np.empty((len(index),) + X.shape[1:], X.dtype)
                        yc = np.empty((len(index),) + y.shape[1:], y.dtype)
                    # mode "clip": unbuffered (the default mode copies through a temporary); the
                    # indices are a permutation, in range.
                    np.take(X, index, axis=0, out=Xc[:len(index)], mode="clip")
                    np.take(y, index, axis=0, out=yc[:len(index)], mode="clip")
                end = min(at + batch_size, stop - start + at)
                yield Xc[at:end], yc[at:end]

    return generate()


def _two_gaussians(name, n, centers, std, seed):
    """n points, half (rounded down) around centers[0] labelled 0 and the rest around centers[1]
    labelled 1, isotropic Gaussian noise of standard deviation `std`, in random order."""
    if not _is_int(n) or n < 2:
        raise ValueError(f"{name}: n must be an integer >= 2 (one point of each class), got {n!r}")
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"{name}: std must be positive and finite, got {std!r}")
    counts = (n // 2, n - n // 2)
    y = np.repeat(np.arange(2, dtype=np.int64), counts)
    rng = np.random.default_rng(seed)
    X = centers[y] + std * rng.standard_normal((n, centers.shape[1]))
    # Shuffled so that any prefix, or an unshuffled batch, holds both classes.
    order = rng.permutation(n)
    return X[order], y[order]


def logistic_1d(n=40, seed=0, centers=(-1.0, 1.0), std=1.0):
    """The slides' 1-D logistic-regression example: points on a line with labels in {0, 1}.

    Returns ``x`` (n, 1) float64, one feature per row as ``Affine`` expects,
    and ``y`` (n,) int64: n // 2 negatives drawn from N(centers[0], std²) and
    the rest positives from N(centers[1], std²). The two classes overlap, as on
    the slides, so maximum likelihood has a finite optimum for w0 + w1 x.
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.shape != (2,):
        raise ValueError(f"logistic_1d: centers must be two numbers, got shape {centers.shape}")
    return _two_gaussians("logistic_1d", n, centers.reshape(2, 1), std, seed)


def blobs(n=200, seed=0, centers=((-1.0, -1.0), (1.0, 1.0)), std=0.75):
    """The slides' 2-D logistic-regression data: two Gaussian blobs, labels in {0, 1}.

    Returns ``X`` (n, 2) float64 and ``y`` (n,) int64: n // 2 points of class
    0 around centers[0] and the rest of class 1 around centers[1], each with
    independent Gaussian noise of standard deviation `std` per coordinate, in
    random order. With the defaults a line separates all but a few percent of
    the points, so the fit of sigma(w0 + w1 x1 + w2 x2) stays finite.
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.shape != (2, 2):
        raise ValueError(f"blobs: centers must be two 2-D points, shape (2, 2), got {centers.shape}")
    return _two_gaussians("blobs", n, centers, std, seed)


def digits(test_size=0.25, seed=0):
    """scikit-learn's bundled 8x8 digits scaled to [0, 1], split stratified into train and test.

    Returns ``X_train, X_test, y_train, y_test`` (float64 rows of 64 pixels,
    int64 labels 0-9), in `train_test_split`'s order; stratifying keeps every
    digit's share the same in both parts. Needs no download, but needs
    scikit-learn: ``pip install 'cedf[examples]'``.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError("cedf.data.digits needs scikit-learn: pip install 'cedf[examples]'") from exc
    data = load_digits()
    # The pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap).
    X = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def mnist1d(**changes):
    """MNIST-1D (Greydanus & Kobak, ICML 2024): 5000 one-dimensional digits of 40 samples.

    Returns ``X_train (4000, 40), X_test (1000, 40), y_train, y_test`` (float64,
    int64 labels 0-9), generated here by the authors' `mnist1d` package with its
    published default arguments (seed 42), which is how the published data set
    was made: no download. `changes` override those arguments (``num_samples=...``,
    ``shuffle_seq=True``, ...). Takes about two seconds. The generator seeds
    NumPy's and Python's global random states; they are put back afterwards, so
    a program's own seeding is unaffected. Needs ``pip install 'cedf[mnist1d]'``.

    For a CNN, feed ``X[:, None, :]`` (N, 1, 40): one channel.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as exc:
        raise ImportError("cedf.data.mnist1d needs the mnist1d package: pip install 'cedf[mnist1d]'") from exc
    import random

    args = get_dataset_args(as_dict=True)
    unknown = sorted(set(changes) - set(args))
    if unknown:
        raise TypeError(f"cedf.data.mnist1d: unknown argument(s) {unknown}; the generator's are {sorted(args)}")
    args.update(changes)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return (np.asarray(data["x"], np.float64), np.asarray(data["x_test"], np.float64),
            np.asarray(data["y"], np.int64), np.asarray(data["y_test"], np.int64))


# IDX type codes (the third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _gunzip(path, raw, limit):
    """At most limit + 1 bytes of gzip data `raw` (every member), so that a small file that
    inflates to gigabytes (a gzip bomb) costs no more than what its header says it holds."""
    out = bytearray()
    while raw and len(out) <= limit:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflate.decompress(raw, limit + 1 - len(out))
        except zlib.error as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
        if not inflate.eof:
            if inflate.unconsumed_tail:   # stopped at the limit: there is more than that
                break
            raise ValueError(f"{path}: corrupt gzip data (the stream ends early)")
        raw = inflate.unused_data
    return memoryview(out)


def _reader(path):
    """A function giving the file's first n bytes (at most n + 1, to tell that more follow),
    decompressed when the file starts with gzip's signature (whatever its name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        whole = memoryview(raw)   # slices of it copy nothing
        return lambda n: whole[:n + 1]
    return lambda n: _gunzip(path, raw, n)


def _read_idx(path):
    """The array stored in the IDX file at `path`, and the file's magic number."""
    read = _reader(path)
    raw = read(4)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(raw)} bytes, not even a magic number")
    magic = int.from_bytes(raw[:4], "big")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number 0x{magic:08X} should be 0x0000TTDD with "
            f"type TT one of {', '.join(f'{c:02X}' for c in _IDX_DTYPES)} and DD >= 1 dimensions")
    header = 4 + 4 * ndim
    raw = read(header)
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX file: header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize   # Python's integers: no overflow
    raw = read(expected)
    if len(raw) != expected:
        problem = "truncated IDX file" if len(raw) < expected else "IDX file with trailing bytes"
        raise ValueError(f"{path}: {problem}: shape {shape} of {dtype.itemsize}-byte items needs "
                         f"{expected} bytes, file has {'more' if len(raw) > expected else len(raw)}")
    # astype copies into native byte order, and the copy is writable (frombuffer of bytes is not).
    data = np.frombuffer(raw, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    try:
        return data.reshape(shape), magic
    except ValueError as exc:   # more dimensions than NumPy has
        raise ValueError(f"{path}: an IDX array of {ndim} dimensions, which NumPy cannot hold ({exc})") from None


def read_idx(path):
    """The array in the IDX file at `path` (MNIST's format), plain or gzip-compressed.

    IDX is a big-endian header, magic number 0x0000TTDD (TT the element type:
    08 unsigned byte, 09 signed byte, 0B int16, 0C int32, 0D float32,
    0E float64; DD the number of dimensions), then DD 4-byte sizes, then the
    elements in C order. Returns them in native byte order with that shape.
    Raises ValueError naming the file when the header is not IDX's or the
    data is shorter or longer than the header says.
    """
    return _read_idx(path)[0]


_MNIST_PREFIX = {"train": "train", "test": "t10k"}


def _find_mnist_file(directory, prefix, part):
    """The path of MNIST file `part` ('images-idx3' or 'labels-idx1'), compressed or not."""
    kind, idx = part.split("-")
    names = [f"{prefix}-{part}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]  # the second: a common re-upload
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"load_mnist: no {names[0]} or {names[0]}.gz in {os.fspath(directory)}")


def load_mnist(directory, kind="train", flatten=True, dtype=np.float32):
    """MNIST (or Fashion-MNIST, any data in its layout) read from local IDX files.

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` for
    ``kind="train"``, ``t10k-...`` for ``kind="test"``, each plain or with
    ``.gz``, from `directory`; nothing is downloaded. Returns ``images`` scaled
    to [0, 1] as `dtype` (float32, cedf's default, halves the memory of
    float64), shaped (n, rows * cols) or, with ``flatten=False``, (n, rows, cols),
    and ``labels`` (n,) int64. Raises ValueError naming the file when a file
    is not the expected kind of IDX file, is truncated, or the image and label
    counts differ.
    """
    if kind not in _MNIST_PREFIX:
        raise ValueError(f"load_mnist: kind must be 'train' or 'test', got {kind!r}")
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"load_mnist: dtype must be a floating-point type, got {np.dtype(dtype)}")
    prefix = _MNIST_PREFIX[kind]
    image_path = _find_mnist_file(directory, prefix, "images-idx3")
    label_path = _find_mnist_file(directory, prefix, "labels-idx1")
    images, magic = _read_idx(image_path)
    if magic != 0x00000803:
        raise ValueError(f"{image_path}: expected MNIST images, IDX magic number 0x00000803 "
                         f"(unsigned bytes, 3 dimensions), found 0x{magic:08X}")
    labels, magic = _read_idx(label_path)
    if magic != 0x00000801:
        raise ValueError(f"{label_path}: expected MNIST labels, IDX magic number 0x00000801 "
                         f"(unsigned bytes, 1 dimension), found 0x{magic:08X}")
    if len(images) != len(labels):
        raise ValueError(f"load_mnist: {image_path} holds {len(images)} images but "
                         f"{label_path} holds {len(labels)} labels")
    images = images.astype(dtype)
    images /= 255  # in place: a division, so 255 maps to exactly 1.0
    if flatten:
        images = images.reshape(len(images), -1)
    return images, labels.astype(np.int64)
