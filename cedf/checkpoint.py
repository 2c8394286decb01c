"""Checkpoints: a graph's parameters in a ``.npz`` file, saved atomically.

Each parameter is stored under its name: ``Parameter(value, name=...)`` or
``AffineParams(..., name="hidden")`` (whose parameters are "hidden.A" and
"hidden.b"); a parameter without a name is stored as ``p<i>``, its position in
the graph. An entry ``__cedf__`` records the format and the names in order.
The file is an ordinary NumPy archive: ``np.load(path)`` reads it.

`save` writes a temporary file next to the target, flushes it to disk and
renames it over the target, so a crash or an exception midway leaves the old
file, never a truncated one. `load` checks the whole file against the graph
before it changes anything.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .graph import current_graph

_MANIFEST = "__cedf__"
_FORMAT = "cedf-checkpoint-1"


def parameter_names(graph=None):
    """The names under which `save` stores the parameters of `graph` (default: the current one)."""
    graph = current_graph() if graph is None else graph
    names = [p.name if getattr(p, "name", None) is not None else f"p{i}"
             for i, p in enumerate(graph.Parameters)]
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"cedf.save: two parameters are named {name!r}; give them different names")
        if name == _MANIFEST:
            raise ValueError(f"cedf.save: {_MANIFEST!r} is reserved and cannot name a parameter")
        seen.add(name)
    return names


def save(path, graph=None):
    """Store every parameter of `graph` (default: the current graph) in the ``.npz`` file `path`."""
    graph = current_graph() if graph is None else graph
    names = parameter_names(graph)
    arrays = {}
    for name, p in zip(names, graph.Parameters):
        value = np.asarray(p.value)
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cedf.save: parameter {name!r} holds dtype {value.dtype}, not numbers")
        arrays[name] = value
    arrays[_MANIFEST] = np.array(json.dumps({"format": _FORMAT, "names": names}))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    # The rename itself is durable only once the directory is flushed (POSIX).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path, graph=None):
    """Set the parameters of `graph` (default: the current graph) from a file written by `save`.

    The file must hold exactly the graph's parameter names, each with the
    parameter's shape; values are converted to each parameter's dtype.
    Anything else raises ValueError and leaves every parameter as it was.
    """
    graph = current_graph() if graph is None else graph
    names = parameter_names(graph)
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"cedf.load: {path} is not a readable cedf checkpoint ({exc})") from exc
    if _MANIFEST not in stored:
        raise ValueError(f"cedf.load: {path} is not a cedf checkpoint (it has no {_MANIFEST!r} entry)")
    stored.pop(_MANIFEST)

    missing = [n for n in names if n not in stored]
    extra = [n for n in stored if n not in names]
    if missing or extra:
        raise ValueError(f"cedf.load: {path} does not match the graph: "
                         f"missing {missing or 'nothing'}, not in the graph {extra or 'nothing'}")
    new_values = []
    for name, p in zip(names, graph.Parameters):
        value, current = stored[name], np.asarray(p.value)
        if value.shape != current.shape:
            raise ValueError(f"cedf.load: parameter {name!r} has shape {value.shape} in {path}, "
                             f"but {current.shape} in the graph")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"cedf.load: parameter {name!r} holds dtype {value.dtype} in {path}, not numbers")
        new_values.append(np.array(value, dtype=current.dtype))
    for p, value in zip(graph.Parameters, new_values):
        p.value = value
