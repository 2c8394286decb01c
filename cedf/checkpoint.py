"""Checkpoints: a graph's parameters in a ``.npz`` file, saved atomically.

Each parameter is stored under its name: ``Parameter(value, name=...)`` or
``AffineParams(..., name="hidden")`` (whose parameters are "hidden.A" and
"hidden.b"); a parameter without a name is stored as ``p<i>``, its position in
the graph. A name must be a str. Beside the parameters, the statistics that a
node keeps and training changes without differentiating them (BatchNorm's
``running_mean`` and ``running_var``) are stored as "<node name>.running_mean"
and so on, or "n<j>.running_mean" for an unnamed node, j its position in the
graph's CompNodes, and loaded with the same checks, into the node's own arrays
(in place, so a compiled plan that reads them stays valid). An entry
``__cedf__`` records the format and the names in order. The file is an ordinary NumPy archive: ``np.load(path)``
reads it. A path is a str, bytes or os.PathLike, as for `open`.

`save` writes a temporary file next to the target, flushes it to disk and
renames it over the target, so a crash or an exception midway leaves the old
file, never a truncated one. Each save first removes the temporaries that
earlier saves of the same target left when they were killed, so they cannot
pile up; saves running at the same time (threads or processes) each write
their own temporary, locked while it is written, and the last rename wins.

`load` checks the whole file against the graph before it changes anything,
and trusts nothing in it: each entry's shape and dtype are read from its
``.npy`` header and checked against its parameter before any of its data is
read, no entry may hold more than its header declares for the parameter's
shape, and no more than that is ever decompressed, one piece at a time. Values are converted to each
parameter's dtype; one that does not fit it (1e300 into a float32) is
refused, while a NaN or an infinity stored as such loads as it is.
"""
import collections
import io
import json
import math
import os
import re
import stat
import tempfile
import threading
import zipfile
import zlib

import numpy as np

from .graph import current_graph
from .nodes import set_quietly

try:
    import fcntl
except ImportError:            # Windows: an open file cannot be deleted there, which protects it instead
    fcntl = None

_MANIFEST = "__cedf__"
_FORMAT = "cedf-checkpoint-1"

# numpy.load's own limit (max_header_size): a longer header is not parsed.
_MAX_HEADER = 10_000
# Values are converted piece by piece, so a load never holds more than one
# piece of the file's data beside the parameters it builds.
_CHUNK = 1 << 20
_MAGIC = b"\x93NUMPY"

_SUFFIX = ".cedf-tmp"
# Temporaries of the target `base`: ours, and those of cedf before it locked
# them (tempfile.mkstemp's 8 characters, suffix ".tmp").
_TEMPORARY = r"[^.]+" + re.escape(_SUFFIX) + r"|[a-z0-9_]{8}\.tmp"

# The temporaries this process is writing: a save in one thread must not take
# another thread's for a leftover, whatever locks the file system provides.
_writing = set()
_writing_lock = threading.Lock()


def parameter_names(graph=None):
    """The names under which `save` stores the parameters of `graph` (default: the current one), then
    its nodes' statistics (see the module's docstring)."""
    return _parameter_names(current_graph() if graph is None else graph, "cedf.save")


def _statistics(graph):
    """(node, attribute, position of the node) of every statistic a node of `graph` keeps: the
    attributes its class lists in ``_STATISTICS``."""
    return [(node, attr, j) for j, node in enumerate(graph.CompNodes)
            for attr in getattr(type(node), "_STATISTICS", ())]


def _stored(graph):
    """What a checkpoint of `graph` holds, in order: its parameters, then its nodes' statistics."""
    return list(graph.Parameters) + _statistics(graph)


def _current(entry):
    """The array an entry of `_stored` holds now."""
    return np.asarray(entry.value) if not isinstance(entry, tuple) else np.asarray(getattr(entry[0], entry[1]))


def _parameter_names(graph, caller):
    names = []
    for i, p in enumerate(graph.Parameters):
        name = getattr(p, "name", None)
        if name is None:
            name = f"p{i}"
        elif not isinstance(name, str):
            raise TypeError(f"{caller}: parameter {i} of the graph is named {name!r} ({type(name).__name__}); "
                            f"a parameter's name must be a str, or None to store it as 'p{i}'")
        names.append(name)
    for node, attr, j in _statistics(graph):
        name = getattr(node, "name", None)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{caller}: node {j} of the graph ({type(node).__name__}) is named {name!r} "
                            f"({type(name).__name__}); a node's name must be a str, or None to store its "
                            f"statistics as 'n{j}.{attr}'")
        names.append(f"{f'n{j}' if name is None else name}.{attr}")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{caller}: two parameters are named {name!r}; give them different names "
                             f"(a BatchNorm named b stores b.running_mean and b.running_var beside them)")
        if name == _MANIFEST:
            raise ValueError(f"{caller}: {_MANIFEST!r} is reserved and cannot name a parameter")
        seen.add(name)
    return names


def _path(path, caller):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{caller}: path must be a str, bytes or os.PathLike, not {type(path).__name__}")
    try:
        # bytes as os and open take them: decoded with the file system's encoding (surrogateescape), so
        # that every bytes path names the same file as a str.
        return os.fsdecode(path)
    except TypeError:          # an os.PathLike whose __fspath__ gives neither str nor bytes
        raise TypeError(f"{caller}: path must be a str, bytes or os.PathLike, "
                        f"not {type(path).__name__} (its __fspath__ gives neither)") from None


def save(path, graph=None):
    """Store every parameter of `graph` (default: the current graph) in the ``.npz`` file `path`."""
    path = _path(path, "cedf.save")
    graph = current_graph() if graph is None else graph
    names = _parameter_names(graph, "cedf.save")
    arrays = {}
    for name, entry in zip(names, _stored(graph)):
        value = _current(entry)
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cedf.save: parameter {name!r} holds dtype {value.dtype}, not numbers")
        arrays[name] = value
    arrays[_MANIFEST] = np.array(json.dumps({"format": _FORMAT, "names": names}))

    directory, base = os.path.split(os.path.abspath(path))
    _remove_leftovers(directory, base)
    # Without fcntl (Windows) a temporary is protected only while it is open, and a file is renamed only
    # once closed: in that instant another process's save may remove it as a leftover. Then write it again.
    for _ in range(4):
        if _write(arrays, directory, base, path):
            break
    else:
        raise OSError(f"cedf.save: {path} was not written: other saves of it removed each of 4 temporaries "
                      f"before it could be renamed")
    _fsync_directory(directory)


def _write(arrays, directory, base, path):
    """Write `arrays` to a new temporary and rename it over `path`; False if the temporary vanished first."""
    fd, temporary = _new_temporary(directory, base)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                # Renamed while still open and locked: until then no other save may take it for a leftover.
                os.replace(temporary, path)
                return True
        try:
            os.replace(temporary, path)
        except FileNotFoundError:
            if os.path.lexists(temporary) or not os.path.isdir(directory):
                raise
            return False
        return True
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    finally:
        with _writing_lock:
            _writing.discard(temporary)


def _new_temporary(directory, base):
    """A new temporary file beside the target, open and (where fcntl exists) locked: (fd, path)."""
    while True:
        fd, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=_SUFFIX, dir=directory)
        with _writing_lock:
            _writing.add(temporary)
        if fcntl is None:
            return fd, temporary
        try:
            # Waits only while another save's `_remove_leftovers` looks at it; if that one came first (between
            # mkstemp and here) it has removed the file, and another name is needed.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names_file(temporary, fd):
                return fd, temporary
        except BaseException:
            os.close(fd)
            with _writing_lock:
                _writing.discard(temporary)
            raise
        os.close(fd)
        with _writing_lock:
            _writing.discard(temporary)


def _names_file(path, fd):
    # True if `path` is still the regular file open as `fd`, not removed nor replaced since it was opened.
    try:
        named, opened = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return ((named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino) and stat.S_ISREG(opened.st_mode)
            and opened.st_nlink == 1)


def _remove_leftovers(directory, base):
    """Remove the temporaries of target `base` whose writer is gone (killed in the middle of a save)."""
    pattern = re.compile(re.escape(f".{base}.") + f"(?:{_TEMPORARY})")
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if pattern.fullmatch(e.name)]
    except OSError:            # a directory we may write but not list: the save itself can go on
        return
    for name in names:
        temporary = os.path.abspath(os.path.join(directory, name))   # as mkstemp names it
        with _writing_lock:
            if temporary in _writing:
                continue
        if fcntl is None:
            try:
                os.unlink(temporary)     # refused while its writer has it open
            except OSError:
                pass
            continue
        try:
            # O_NONBLOCK: a FIFO of that name must not hang the save; O_NOFOLLOW: nor may a symlink lead
            # elsewhere.
            fd = os.open(temporary, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            # A writer holds the lock from creation to rename; the kernel drops it when the writer dies.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _names_file(temporary, fd):
                os.unlink(temporary)
        except OSError:        # locked by a live save (BlockingIOError), or already gone
            pass
        finally:
            os.close(fd)


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
    parameter's shape and a real dtype (bool, integer or float); values are
    converted to each parameter's dtype, and one that does not fit it (an
    overflow, or a fraction into an integer parameter) is refused; a NaN or
    an infinity in a float entry loads as it is. Anything else raises
    ValueError and leaves every parameter as it was. Every entry's header is
    checked before any data is read, and no entry is read beyond what its
    header declares for its parameter's shape, whatever else the file says.
    """
    path = _path(path, "cedf.load")
    graph = current_graph() if graph is None else graph
    names = _parameter_names(graph, "cedf.load")
    stored = _stored(graph)
    currents = [_current(entry) for entry in stored]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"cedf.load: {path} is not a readable cedf checkpoint ({exc})") from exc
    with archive:
        entries = _entries(archive, path, names)
        _check_manifest(archive, entries[_MANIFEST], path, names)
        # Every header first, so that nothing is decompressed when one entry of many is wrong.
        headers = [_header(archive, entries[name], path, name, current) for name, current in zip(names, currents)]
        new_values = [_values(archive, entries[name], path, name, current, header)
                      for name, current, header in zip(names, currents, headers)]
    # Nothing below can fail, so that a refused load changes nothing: a statistic goes into the
    # node's array, which a plan may read, unless that array cannot take it (read-only), and
    # is then replaced, as the node itself replaces it in a Forward.
    for entry, value in zip(stored, new_values):
        if not isinstance(entry, tuple):
            entry.value = value
            continue
        node, attr = entry[0], entry[1]
        target = getattr(node, attr)
        if isinstance(target, np.ndarray) and target.flags.writeable and target.shape == value.shape:
            np.copyto(target, value)
        else:
            set_quietly(node, attr, np.array(value))


def _entries(archive, path, names):
    """The zip entry of each name in `names` and of the manifest, checked to be exactly those."""
    entries = {}
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in entries:
            raise ValueError(f"cedf.load: {path} holds two entries named {info.filename!r}; "
                             f"a checkpoint has one per parameter")
        entries[name] = info
    if _MANIFEST not in entries:
        raise ValueError(f"cedf.load: {path} is not a cedf checkpoint (it has no {_MANIFEST!r} entry)")
    missing = [n for n in names if n not in entries]
    extra = [n for n in entries if n not in names and n != _MANIFEST]
    if missing or extra:
        raise ValueError(f"cedf.load: {path} does not match the graph: "
                         f"missing {missing or 'nothing'}, not in the graph {extra or 'nothing'}")
    return entries


def _describe(name):
    return f"the {_MANIFEST!r} entry" if name == _MANIFEST else f"the entry of parameter {name!r}"


def _read(stream, size, path, name):
    """Exactly `size` bytes of an entry; a damaged stream or a short one is a ValueError naming both."""
    try:
        data = stream.read(size)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ValueError(f"cedf.load: {path} is not a readable cedf checkpoint: {_describe(name)} is damaged "
                         f"({type(exc).__name__}: {exc})") from exc
    if len(data) != size:
        raise ValueError(f"cedf.load: {path} is not a readable cedf checkpoint: {_describe(name)} is damaged "
                         f"(it ends after {stream.tell()} bytes)")
    return data


# What an entry's .npy header declares; `offset` is where its data starts.
_Header = collections.namedtuple("_Header", "shape fortran_order dtype offset")


def _open(archive, info, path, name):
    where = f"parameter {name!r} in {path}" if name != _MANIFEST else f"the {_MANIFEST!r} entry of {path}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # Other methods (bzip2, lzma) decompress without a bound on what one read returns.
        raise ValueError(f"cedf.load: {where}: its entry is compressed with method {info.compress_type}; "
                         f"expected stored (0) or deflated (8), as numpy.savez and numpy.savez_compressed write")
    try:
        return archive.open(info)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"cedf.load: {path} is not a readable cedf checkpoint: {_describe(name)} cannot be "
                         f"opened ({type(exc).__name__}: {exc})") from exc


def _read_header(stream, info, path, name):
    """The entry's .npy header, read without trusting any length in it; the stream is left at the data."""
    where = f"parameter {name!r} in {path}" if name != _MANIFEST else f"the {_MANIFEST!r} entry of {path}"
    magic = _read(stream, len(_MAGIC) + 2, path, name) if info.file_size >= len(_MAGIC) + 2 else b""
    if magic[:len(_MAGIC)] != _MAGIC or tuple(magic[len(_MAGIC):]) not in ((1, 0), (2, 0)):
        raise ValueError(f"cedf.load: {where}: its entry is not a .npy array of format 1.0 or 2.0, "
                         f"as numpy.save writes")
    version = tuple(magic[len(_MAGIC):])
    width = 2 if version == (1, 0) else 4
    length_bytes = _read(stream, width, path, name)
    length = int.from_bytes(length_bytes, "little")
    # numpy's reader would read the whole declared length before it checks it: a bomb of its own.
    if length > _MAX_HEADER:
        raise ValueError(f"cedf.load: {where}: its .npy header declares {length} bytes, "
                         f"more than the {_MAX_HEADER} a header may have")
    text = _read(stream, length, path, name)
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran_order, dtype = reader(io.BytesIO(length_bytes + text), max_header_size=_MAX_HEADER)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(f"cedf.load: {where}: its .npy header cannot be read ({exc})") from exc
    return _Header(tuple(shape), fortran_order, dtype, len(magic) + width + length)


def _header(archive, info, path, name, current):
    """Check the entry of parameter `name` against `current`, its value in the graph, from its header alone."""
    if current.dtype.kind not in "biuf":
        raise ValueError(f"cedf.load: parameter {name!r} holds dtype {current.dtype} in the graph, not numbers")
    with _open(archive, info, path, name) as stream:
        header = _read_header(stream, info, path, name)
    dtype = header.dtype
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        described = dtype.descr if dtype.fields is not None else dtype
        raise ValueError(f"cedf.load: parameter {name!r} holds dtype {described} in {path}; "
                         f"expected real numbers (a bool, integer or float dtype)")
    if header.shape != current.shape:
        raise ValueError(f"cedf.load: parameter {name!r} has shape {header.shape} in {path}, "
                         f"but {current.shape} in the graph")
    _check_size(info, header, header.dtype.itemsize * math.prod(header.shape), path,
                f"parameter {name!r} in {path}", f"{header.shape} of {dtype}")
    return header


def _check_size(info, header, data_size, path, where, what):
    # The zip directory's size bounds what zipfile decompresses; it must be exactly what the header declares.
    if info.file_size != header.offset + data_size:
        raise ValueError(f"cedf.load: {where}: its entry holds {info.file_size} bytes, but its .npy header "
                         f"declares {header.offset + data_size} ({what})")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"cedf.load: {where}: its entry is stored uncompressed in {info.compress_size} bytes, "
                         f"but declares {info.file_size}")


def _check_manifest(archive, info, path, names):
    where = f"the {_MANIFEST!r} entry of {path}"
    expected = json.dumps({"format": _FORMAT, "names": names})
    # A manifest that matches these names is about as long as `expected`; 4 bytes a character (UTF-32).
    cap = 4 * (2 * len(expected) + 4096)
    with _open(archive, info, path, _MANIFEST) as stream:
        header = _read_header(stream, info, path, _MANIFEST)
        if header.dtype.kind != "U" or header.shape != () or header.fortran_order:
            raise ValueError(f"cedf.load: {path} is not a cedf checkpoint (its {_MANIFEST!r} entry is not "
                             f"a cedf manifest)")
        if header.dtype.itemsize > cap:
            raise ValueError(f"cedf.load: {where} holds {header.dtype.itemsize} bytes of text, more than the "
                             f"{cap} the names of this graph's parameters need")
        _check_size(info, header, header.dtype.itemsize, path, where, f"a string of {header.dtype}")
        raw = _read(stream, header.dtype.itemsize, path, _MANIFEST)
    try:
        manifest = json.loads(str(np.frombuffer(raw, dtype=header.dtype)[0]))
        format_ = manifest["format"]
    except (ValueError, TypeError, KeyError, IndexError):
        raise ValueError(f"cedf.load: {path} is not a cedf checkpoint (its {_MANIFEST!r} entry is not "
                         f"a cedf manifest)") from None
    if format_ != _FORMAT:
        raise ValueError(f"cedf.load: {path} is a checkpoint of format {format_!r}; "
                         f"this cedf reads {_FORMAT!r}")


def _values(archive, info, path, name, current, header):
    """The entry's values in `current`'s dtype, read piece by piece and checked to fit that dtype."""
    source, target = header.dtype, current.dtype
    count = math.prod(header.shape)
    out = np.empty(count, dtype=target)
    per_chunk = max(1, _CHUNK // source.itemsize)
    with _open(archive, info, path, name) as stream:
        _read(stream, header.offset, path, name)
        for start in range(0, count, per_chunk):
            piece = np.frombuffer(_read(stream, min(per_chunk, count - start) * source.itemsize, path, name),
                                  dtype=source)
            converted = out[start:start + len(piece)]
            with np.errstate(all="ignore"):
                converted[...] = piece
            _check_fits(piece, converted, path, name, target)
        # The whole entry is read, so zipfile has compared its CRC.
    if header.fortran_order and len(header.shape) > 1:
        return np.ascontiguousarray(out.reshape(header.shape[::-1]).T)
    return out.reshape(header.shape)


def _check_fits(piece, converted, path, name, target):
    if target.kind == "f":
        # Only a finite value made infinite is an overflow: the file's own NaN and infinities stay.
        bad = ~np.isfinite(converted) & np.isfinite(piece)
        problem, limit = "beyond the range of", f"largest {str(np.finfo(target).max)}"
    else:                      # into integers or bools, a value must come back as it was
        with np.errstate(all="ignore"):
            bad = converted != piece
        if piece.dtype.kind == "f":
            bad |= ~np.isfinite(piece)
        problem = "not a value of"
        limit = ("0 or 1" if target.kind == "b"
                 else f"integers from {np.iinfo(target).min} to {np.iinfo(target).max}")
    if bad.any():
        value = piece[np.argmax(bad)].item()
        raise ValueError(f"cedf.load: parameter {name!r} holds {value!r} in {path}, {problem} "
                         f"its dtype {target} in the graph ({limit})")
