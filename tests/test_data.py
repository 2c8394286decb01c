"""cedf.data: mini-batches, the toy data sets, digits, and reading MNIST's IDX files."""
import gzip
import struct
import sys

import numpy as np
import pytest

import cedf as edf
from cedf import data, metrics

# ---------------------------------------------------------------- batches


def _indexed(n, width=3):
    """X whose row i is all i, y = 10 i: which examples a batch holds, and that the pairs stayed together."""
    X = np.repeat(np.arange(n, dtype=np.float64)[:, None], width, axis=1)
    return X, 10 * np.arange(n)


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 7), (5, 8), (1, 1), (100, 32)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_example_once(n, batch_size, shuffle):
    X, y = _indexed(n)
    got = list(data.batches(X, y, batch_size, shuffle=shuffle, seed=3))
    sizes = [len(xb) for xb, _ in got]
    full, rest = divmod(n, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest else [])
    for xb, yb in got:
        assert xb.shape[1:] == X.shape[1:] and len(yb) == len(xb)
        np.testing.assert_array_equal(yb, 10 * xb[:, 0])
    seen = np.concatenate([yb for _, yb in got]) // 10
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(n))


def test_batches_drop_last():
    X, y = _indexed(10)
    got = list(data.batches(X, y, 4, seed=0, drop_last=True))
    assert [len(xb) for xb, _ in got] == [4, 4]
    assert len(np.unique(np.concatenate([yb for _, yb in got]))) == 8
    assert list(data.batches(X, y, 11, drop_last=True)) == []
    assert [len(xb) for xb, _ in data.batches(X, y, 5, drop_last=True)] == [5, 5]


def _order(X, y, **kwargs):
    return np.concatenate([yb for _, yb in data.batches(X, y, 7, **kwargs)]) // 10


def test_batches_reproducible_with_a_seed_and_different_across_seeds():
    X, y = _indexed(50)
    np.testing.assert_array_equal(_order(X, y, seed=1), _order(X, y, seed=1))
    assert not np.array_equal(_order(X, y, seed=1), _order(X, y, seed=2))
    assert not np.array_equal(_order(X, y, seed=1), np.arange(50))  # it did shuffle
    # One Generator across epochs: a new order every epoch, the same sequence of orders every run.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    epochs_a = [_order(X, y, seed=rng_a) for _ in range(3)]
    epochs_b = [_order(X, y, seed=rng_b) for _ in range(3)]
    assert not np.array_equal(epochs_a[0], epochs_a[1])
    for a, b in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(a, b)


def test_batches_take_lists_and_any_trailing_shape():
    X = np.arange(24.0).reshape(6, 2, 2)
    got = list(data.batches(X, list(range(6)), 4, shuffle=False))
    np.testing.assert_array_equal(got[0][0], X[:4])
    np.testing.assert_array_equal(got[1][1], [4, 5])


@pytest.mark.parametrize("X, y, batch_size, match", [
    (np.zeros((5, 2)), np.zeros(4), 2, "X has 5 examples but y has 4"),
    (np.zeros((5, 2)), np.zeros(5), 0, "batch_size must be a positive integer"),
    (np.zeros((5, 2)), np.zeros(5), -3, "batch_size must be a positive integer"),
    (np.zeros((5, 2)), np.zeros(5), 2.0, "batch_size must be a positive integer"),
    (np.zeros((5, 2)), np.zeros(5), True, "batch_size must be a positive integer"),
    (np.float64(3.0), np.zeros(5), 2, "arrays of examples"),
])
def test_batches_reject_bad_input_at_the_call(X, y, batch_size, match):
    with pytest.raises(ValueError, match=f"^batches: .*{match}"):
        data.batches(X, y, batch_size)  # no next(): the check must not wait for the first batch


# ---------------------------------------------------------------- the slides' toy data


@pytest.mark.parametrize("make, width", [(data.logistic_1d, 1), (data.blobs, 2)])
@pytest.mark.parametrize("n", [2, 41, 200])
def test_toy_data_shapes_and_balance(make, width, n):
    X, y = make(n=n, seed=4)
    assert X.shape == (n, width) and X.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    assert np.sum(y == 0) == n // 2 and np.sum(y == 1) == n - n // 2
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("make", [data.logistic_1d, data.blobs])
def test_toy_data_reproducible_and_seeded(make):
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # Shuffled: the first quarter already holds both classes.
    assert set(a[1][: len(a[1]) // 4]) == {0, 1}


def test_blobs_are_two_gaussians_around_their_centers():
    centers = np.array([[-2.0, 0.5], [1.0, 3.0]])
    X, y = data.blobs(n=4000, seed=0, centers=centers, std=0.5)
    for label in (0, 1):
        pts = X[y == label]
        np.testing.assert_allclose(pts.mean(axis=0), centers[label], atol=0.05)
        np.testing.assert_allclose(pts.std(axis=0), [0.5, 0.5], rtol=0.06)
        assert abs(np.corrcoef(pts.T)[0, 1]) < 0.07
    # The defaults: the diagonal x1 + x2 = 0 separates most but not all points (as on the slides).
    X, y = data.blobs()
    agree = np.mean((X.sum(axis=1) > 0) == (y == 1))
    assert 0.9 < agree < 1.0


def test_logistic_1d_classes_overlap_on_the_line():
    x, y = data.logistic_1d(n=2000, seed=0)
    assert abs(x[y == 0].mean() + 1) < 0.1 and abs(x[y == 1].mean() - 1) < 0.1
    # Overlapping classes: no threshold on x separates them, so the logistic fit stays finite.
    assert x[y == 0].max() > x[y == 1].min()
    x, y = data.logistic_1d(n=10, centers=(5.0, 6.0), std=1e-3)
    np.testing.assert_allclose(x[:, 0], np.where(y == 1, 6.0, 5.0), atol=0.01)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=1), "n must be an integer >= 2"),
    (dict(n=10.0), "n must be an integer >= 2"),
    (dict(std=0.0), "std must be positive"),
    (dict(std=np.inf), "std must be positive"),
])
@pytest.mark.parametrize("make", [data.logistic_1d, data.blobs])
def test_toy_data_reject_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=f"^{make.__name__}: {match}"):
        make(**kwargs)


def test_toy_data_reject_bad_centers():
    with pytest.raises(ValueError, match="^blobs: centers"):
        data.blobs(centers=(0.0, 1.0))
    with pytest.raises(ValueError, match="^logistic_1d: centers"):
        data.logistic_1d(centers=((0.0, 0.0), (1.0, 1.0)))


@pytest.mark.parametrize("make, width", [(data.logistic_1d, 1), (data.blobs, 2)])
def test_the_slides_logistic_regression_fits_the_toy_data(make, width):
    """End to end: mini-batches from `batches` into the lecture's graph, scored by `accuracy`."""
    X, y = make(n=200, seed=0)
    np.random.seed(0)
    x_in, y_in = edf.Input(), edf.Input()
    p = edf.Sigmoid(edf.Affine(edf.AffineParams(width, 1), x_in))
    L = edf.BCELoss(p, y_in)
    edf.learning_rate = 0.5
    rng = np.random.default_rng(0)
    for epoch in range(30):
        for x_in.value, y_in.value in data.batches(X, y, 20, seed=rng):
            edf.Forward()
            edf.Backward(L)
            edf.UpdateParameters()
    x_in.value, y_in.value = X, y
    edf.Forward()
    # The Bayes rate is 84% on the line (classes one std from the midpoint) and 97% for the blobs.
    assert metrics.accuracy(y, p.value) > (0.78 if width == 1 else 0.93)


# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_and_complete():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    X_train, X_test, y_train, y_test = data.digits()
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0 and X_test.max() <= 1.0
    # Stratified: each digit's test count is its quarter, to within rounding.
    per_class = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - 0.25 * per_class) <= 1)
    # Train and test together are exactly the bundled data set, each row once.
    full = load_digits()
    rows = np.column_stack([np.concatenate([X_train, X_test]) * 16, np.concatenate([y_train, y_test])])
    expected = np.column_stack([full.data, full.target])
    np.testing.assert_array_equal(rows[np.lexsort(rows.T)], expected[np.lexsort(expected.T)])
    # The seed picks the split, reproducibly.
    again, other = data.digits(seed=0), data.digits(seed=1)
    np.testing.assert_array_equal(again[3], y_test)
    assert not np.array_equal(other[3], y_test)
    assert data.digits(test_size=0.5)[1].shape == (899, 64)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'cedf\[examples\]'"):
        data.digits()


# ---------------------------------------------------------------- MNIST-1D

@pytest.fixture(scope="module")
def mnist1d_data():
    pytest.importorskip("mnist1d")
    return data.mnist1d()


def test_mnist1d_is_the_generators_published_default(mnist1d_data):
    """The authors' generator, called here on its own with its default arguments, makes the same arrays."""
    from mnist1d.data import get_dataset_args, make_dataset

    X_train, X_test, y_train, y_test = mnist1d_data
    state = np.random.get_state()
    reference = make_dataset(get_dataset_args())
    np.random.set_state(state)
    assert (X_train.shape, X_test.shape, y_train.shape, y_test.shape) == ((4000, 40), (1000, 40), (4000,), (1000,))
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64
    np.testing.assert_array_equal(X_train, reference["x"])
    np.testing.assert_array_equal(X_test, reference["x_test"])
    np.testing.assert_array_equal(y_train, reference["y"])
    np.testing.assert_array_equal(y_test, reference["y_test"])
    # The paper's data set: 500 examples of each digit, normalised to mean 0 and standard deviation 1.
    assert np.bincount(np.concatenate([y_train, y_test])).tolist() == [500] * 10
    whole = np.concatenate([X_train, X_test])
    assert abs(whole.mean()) < 1e-12 and abs(whole.std() - 1) < 1e-12


def test_mnist1d_leaves_the_global_random_states_as_they_were():
    pytest.importorskip("mnist1d")
    import random

    np.random.seed(7)
    random.seed(7)
    data.mnist1d(num_samples=100)
    after = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    assert after == (np.random.random(), random.random())


def test_mnist1d_arguments_are_the_generators():
    pytest.importorskip("mnist1d")
    X_train, X_test, _, _ = data.mnist1d(num_samples=200, train_split=0.5)
    assert X_train.shape == X_test.shape == (100, 40)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['samples'\]; the generator's are"):
        data.mnist1d(samples=10)


def test_mnist1d_without_the_package_says_what_to_install(monkeypatch):
    for name in ("mnist1d", "mnist1d.data", "mnist1d.utils"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'cedf\[mnist1d\]'"):
        data.mnist1d()


# ---------------------------------------------------------------- IDX files and MNIST

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array):
    """`array` in IDX format, written independently of cedf: struct header, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">HBB", 0, _CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, compress=False):
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_idx_header_matches_the_mnist_spec():
    # MNIST's label files start with magic 2049, its image files with 2051.
    assert idx_bytes(np.zeros(3, np.uint8))[:4] == (2049).to_bytes(4, "big")
    assert idx_bytes(np.zeros((2, 28, 28), np.uint8))[:8] == struct.pack(">II", 2051, 2)


def test_read_idx_literal_bytes(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00\x08\x02" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03" + bytes([1, 2, 3, 4, 5, 255]))
    np.testing.assert_array_equal(data.read_idx(path), [[1, 2, 3], [4, 5, 255]])
    path.write_bytes(b"\x00\x00\x0c\x01" b"\x00\x00\x00\x02" b"\xff\xff\xff\xfe" b"\x00\x00\x01\x00")
    np.testing.assert_array_equal(data.read_idx(path), np.array([-2, 256], np.int32))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", list(_CODES))
def test_read_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((4, 3, 5)) * 100).astype(dtype)
    back = data.read_idx(write_idx(tmp_path / "a.idx", array, compress))
    assert back.dtype == dtype and back.dtype.isnative and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # a writable array of its own


def _mnist_like(n, seed=0, rows=28, cols=28):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    return images, rng.integers(0, 10, n).astype(np.uint8)


def _write_mnist(directory, prefix, images, labels, compress):
    suffix = ".gz" if compress else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_train_and_test(tmp_path, compress):
    train, test = _mnist_like(7, seed=1), _mnist_like(3, seed=2, rows=4, cols=5)
    _write_mnist(tmp_path, "train", *train, compress)
    _write_mnist(tmp_path, "t10k", *test, compress)

    images, labels = data.load_mnist(tmp_path)
    assert images.shape == (7, 784) and images.dtype == np.float32
    assert labels.shape == (7,) and labels.dtype == np.int64
    np.testing.assert_array_equal(images, train[0].reshape(7, 784).astype(np.float32) / np.float32(255))
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(labels, train[1])

    images, labels = data.load_mnist(str(tmp_path), kind="test", flatten=False, dtype=np.float64)
    assert images.shape == (3, 4, 5) and images.dtype == np.float64
    np.testing.assert_array_equal(images, test[0] / 255.0)
    np.testing.assert_array_equal(labels, test[1])


def test_load_mnist_finds_the_files_and_says_which_are_missing(tmp_path):
    images, labels = _mnist_like(2)
    # Mixed: plain images beside gzipped labels; gzip is recognised by content.
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, compress=True)
    np.testing.assert_array_equal(data.load_mnist(tmp_path)[1], labels)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"):
        data.load_mnist(tmp_path, kind="test")
    with pytest.raises(ValueError, match="kind must be 'train' or 'test'"):
        data.load_mnist(tmp_path, kind="validation")
    with pytest.raises(ValueError, match="dtype must be a floating-point type"):
        data.load_mnist(tmp_path, dtype=np.uint8)


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def mnist_dir(request, tmp_path):
    """A directory holding a valid 5-example training set; returns (dir, images file, labels file)."""
    _write_mnist(tmp_path, "train", *_mnist_like(5), request.param)
    suffix = ".gz" if request.param else ""
    return tmp_path, tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"train-labels-idx1-ubyte{suffix}"


def _rewrite(path, edit):
    """Apply `edit` to the decompressed content of `path`, keeping its compression."""
    compressed = path.name.endswith(".gz")
    raw = path.read_bytes()
    raw = edit(gzip.decompress(raw) if compressed else raw)
    path.write_bytes(gzip.compress(raw) if compressed else raw)


def test_load_mnist_rejects_a_corrupted_magic_number(mnist_dir):
    directory, images, _ = mnist_dir
    _rewrite(images, lambda raw: b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match=f"{images.name}: not an IDX file: magic number 0x12340803"):
        data.load_mnist(directory)
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(images)


def test_load_mnist_rejects_a_valid_idx_file_of_the_wrong_kind(mnist_dir):
    directory, images, labels = mnist_dir
    _rewrite(labels, lambda raw: idx_bytes(np.zeros((5, 2), np.uint8)))
    with pytest.raises(ValueError, match=f"{labels.name}: expected MNIST labels.*found 0x00000802"):
        data.load_mnist(directory)
    _rewrite(images, lambda raw: idx_bytes(np.zeros((5, 784), np.float32)))
    with pytest.raises(ValueError, match=f"{images.name}: expected MNIST images.*found 0x00000D02"):
        data.load_mnist(directory)


@pytest.mark.parametrize("cut, match", [
    (lambda raw: raw[:-1], r"truncated IDX file: shape \(5, 28, 28\) of 1-byte items needs 3936 bytes, file has 3935"),
    (lambda raw: raw[:10], "truncated IDX file: header needs 16 bytes, file has 10"),
    (lambda raw: raw[:3], "truncated IDX file: 3 bytes"),
    (lambda raw: raw + b"\x00", "IDX file with trailing bytes"),
])
def test_load_mnist_rejects_a_truncated_file(mnist_dir, cut, match):
    directory, images, _ = mnist_dir
    _rewrite(images, cut)
    with pytest.raises(ValueError, match=f"{images.name}: {match}"):
        data.load_mnist(directory)


def test_load_mnist_rejects_a_truncated_gzip_stream(tmp_path):
    images, labels = _mnist_like(5)
    _write_mnist(tmp_path, "train", images, labels, compress=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=f"{path.name}: corrupt gzip data"):
        data.load_mnist(tmp_path)


def test_load_mnist_rejects_mismatched_counts(mnist_dir):
    directory, images, labels = mnist_dir
    _rewrite(labels, lambda raw: idx_bytes(np.arange(4, dtype=np.uint8)))
    with pytest.raises(ValueError, match=f"{images.name} holds 5 images but .*{labels.name} holds 4 labels"):
        data.load_mnist(directory)


@pytest.mark.parametrize("width, batch_size", [(3, 7), (65536, 3)])   # one chunk; chunks of two batches
def test_reused_batches_are_the_batches_and_views_of_one_buffer(width, batch_size):
    """reuse=True gathers chunks of batches into one array: the same batches, in the same order,
    as plain shuffled batches (the last one short), each a view valid until the next."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, width)), rng.integers(0, 5, (50, 1))
    order = rng.permutation(50)
    plain = [(xb.copy(), yb.copy()) for xb, yb in data.batches(X, y, batch_size, order=order)]
    reused = data.batches(X, y, batch_size, order=order, reuse=True)
    bases = set()
    for (xb, yb), (xe, ye) in zip(reused, plain, strict=True):
        np.testing.assert_array_equal(xb, xe)
        np.testing.assert_array_equal(yb, ye)
        bases.add(id(xb.base))
    assert len(bases) == 1
    assert len(plain[-1][0]) == 50 % batch_size


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # 64 kB of gzip (64 MB inflated) whose header declares one byte: gzip.decompress inflated all
    # of it before the size was compared; now no more than the header's size plus one byte.
    import tracemalloc
    path = tmp_path / "bomb.gz"
    header = struct.pack(">I", 0x0801) + struct.pack(">I", 1)
    path.write_bytes(gzip.compress(header + b"\0" * (1 << 26), compresslevel=9))
    tracemalloc.start()
    with pytest.raises(ValueError, match="IDX file with trailing bytes: shape \\(1,\\) of 1-byte items needs 9 bytes"):
        data.read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * path.stat().st_size, f"{peak} bytes allocated for a {path.stat().st_size}-byte file"


@pytest.mark.parametrize("shape", [(2**31, 2**31, 4), (2**32 - 1,) * 3])
def test_declared_sizes_whose_product_overflows_int64_are_read_as_such(tmp_path, shape):
    path = tmp_path / "huge.idx"
    path.write_bytes(struct.pack(">I", 0x0800 + len(shape)) + b"".join(struct.pack(">I", d) for d in shape))
    needs = 4 + 4 * len(shape) + int(np.prod(np.array(shape, dtype=object)))
    with pytest.raises(ValueError, match=f"truncated IDX file: shape .* needs {needs} bytes, file has"):
        data.read_idx(path)


@pytest.mark.parametrize("order", [[0, 1, 2], list(range(9)) + [12], list(range(9)) + [-1], [0] * 10,
                                   np.arange(10.0)], ids=["short", "beyond", "negative", "repeated", "floats"])
@pytest.mark.parametrize("reuse", [False, True])
def test_an_order_that_is_no_permutation_is_refused(order, reuse):
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    with pytest.raises(ValueError, match="batches: order must be a permutation of the 10 examples' indices"):
        data.batches(X, y, 4, order=order, reuse=reuse)
