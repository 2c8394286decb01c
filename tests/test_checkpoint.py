"""cedf.save / cedf.load: names, shapes and dtypes kept; atomic writes; mismatches change nothing."""
import json
import os

import numpy as np
import pytest

import cedf as edf


def model(dtype=np.float32, hidden=6, name=None, seed=0):
    np.random.seed(seed)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.random.randn(10, 4), np.arange(10) % 3
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(4, hidden, name=name), x))
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(hidden, 3), h)), y)
    return L


def values(graph=None):
    graph = edf.current_graph() if graph is None else graph
    return [p.value.copy() for p in graph.Parameters]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_restores_every_parameter(tmp_path, dtype):
    L = model(dtype, name="hidden")
    for _ in range(3):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    saved = values()
    path = tmp_path / "model.npz"
    edf.save(path)

    with np.load(path) as archive:   # an ordinary NumPy archive, names and dtypes as in the graph
        assert archive.files[:2] == ["hidden.A", "hidden.b"]
        manifest = json.loads(str(archive["__cedf__"]))
        assert manifest["names"] == ["hidden.A", "hidden.b", "p2", "p3"]
        for name, value in zip(manifest["names"], saved):
            assert archive[name].dtype == dtype and archive[name].shape == value.shape
            np.testing.assert_array_equal(archive[name], value)

    for p in edf.Parameters:
        p.value = np.zeros_like(p.value)
    edf.load(path)
    for p, value in zip(edf.Parameters, saved):
        assert p.value.dtype == dtype
        np.testing.assert_array_equal(p.value, value)
    # Training goes on from the loaded values, on the compiled plan or not.
    edf.Forward()
    edf.Backward(L)
    edf.UpdateParameters()


def test_load_into_another_graph_and_into_another_dtype(tmp_path):
    model(np.float64, name="h", seed=1)
    edf.save(tmp_path / "m.npz")
    saved = values()
    with edf.Graph() as g:
        L = model(np.float32, name="h", seed=2)
    edf.load(tmp_path / "m.npz", graph=g)
    for p, value in zip(g.Parameters, saved):
        assert p.value.dtype == np.float32
        np.testing.assert_array_equal(p.value, value.astype(np.float32))
    g.Forward()
    g.Backward(L)


@pytest.mark.parametrize("change, message", [
    (lambda: model(hidden=7, name="hidden"), r"parameter 'hidden.A' has shape \(4, 6\) in .*, but \(4, 7\) in the graph"),
    (lambda: model(name="other"), r"does not match the graph: missing \['other.A', 'other.b'\], "
                                  r"not in the graph \['hidden.A', 'hidden.b'\]"),
])
def test_a_mismatched_checkpoint_raises_and_changes_nothing(tmp_path, change, message):
    model(name="hidden")
    edf.save(tmp_path / "m.npz")
    edf.clear_compgraph()
    change()
    before = values()
    with pytest.raises(ValueError, match=message):
        edf.load(tmp_path / "m.npz")
    for p, value in zip(edf.Parameters, before):
        np.testing.assert_array_equal(p.value, value)


def test_not_a_checkpoint_raises(tmp_path):
    model()
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a cedf checkpoint"):
        edf.load(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="is not a readable cedf checkpoint"):
        edf.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        edf.load(tmp_path / "missing.npz")


def test_duplicate_names_are_refused(tmp_path):
    edf.Parameter(np.zeros(2), name="w")
    edf.Parameter(np.zeros(2), name="w")
    with pytest.raises(ValueError, match="two parameters are named 'w'"):
        edf.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


class Interrupted(Exception):
    pass


def test_an_interrupted_save_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    model(seed=3)
    path = tmp_path / "m.npz"
    edf.save(path)
    good = path.read_bytes()
    for p in edf.Parameters:
        p.value = p.value + 1

    real_savez = np.savez

    def savez_then_crash(f, **arrays):
        real_savez(f, **arrays)    # half of the work is on disk ...
        f.write(b"partial")
        raise Interrupted          # ... when the process is interrupted

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(Interrupted):
        edf.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]

    def replace_fails(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", real_savez)
    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        edf.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_syncs_the_file_before_renaming_it(tmp_path, monkeypatch):
    model()
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    edf.save(tmp_path / "m.npz")
    assert events[:2] == ["fsync", "replace"]
