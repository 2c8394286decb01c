"""What this cedf is and what it runs on: `show_config()` prints it, `config()` returns it.

For a bug report, or to see why a machine is slower than another::

    import cedf
    cedf.show_config()

The BLAS reported is the library behind the matrix products: NumPy's own
when cedf can call it (`cedf.get_blas()` is "numpy"), else the one SciPy loaded,
called through `scipy.linalg.cython_blas` (every library with a thread pool is
listed under the thread pools, as threadpoolctl sees them).
"""
import os
import platform
import sys

from . import backend

__all__ = ["config", "show_config"]


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cedf")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _under(path, folder):
    path, folder = os.path.normcase(os.path.realpath(path)), os.path.normcase(os.path.realpath(folder))
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _shipped_with(package, pools):
    """The BLAS thread pool whose library a package's wheel carries, or None.

    Wheels carry their libraries beside the package: <package>.libs/ (Linux,
    Windows) or <package>/.dylibs/ (macOS).
    """
    folder = os.path.dirname(package.__file__)
    for pool in pools:
        path = pool["filepath"]
        if pool["user_api"] == "blas" and (_under(path, folder) or _under(path, folder + ".libs")):
            return pool
    return None


def _numpy_blas(pools):
    """The thread pool entry of NumPy's own BLAS, which cedf calls when get_blas() is "numpy"."""
    import numpy

    pool = _shipped_with(numpy, pools)
    return pool, "NumPy's own, called directly" + ("" if pool else " (its thread pool was not identified)")


def _scipy_blas(pools):
    """The thread pool entry of the BLAS that SciPy's cython_blas calls, or None, and how it was found."""
    import scipy

    pool = _shipped_with(scipy, pools)
    if pool is not None:
        return pool, "shipped with SciPy"
    blas = [pool for pool in pools if pool["user_api"] == "blas"]
    # A SciPy built against a system BLAS: the loaded library of the name and
    # version SciPy was built with.
    try:
        built = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older SciPy, or a build without that record
        built = {}
    name, version = str(built.get("name", "")).lower(), str(built.get("version", ""))
    matches = [pool for pool in blas
               if pool["internal_api"] in name and (not version or str(pool.get("version")) == version)]
    if len(matches) == 1:
        return matches[0], "the library SciPy was built with"
    if len(blas) == 1:
        return blas[0], "the only BLAS loaded"
    return None, f"not identified among {len(blas)} BLAS libraries loaded"


def config():
    """cedf's configuration as a dict: versions, backend, build, BLAS and threads.

    Keys: ``cedf`` (version), ``python``, ``platform``, ``numpy``, ``scipy``,
    ``backend`` (`cedf.get_backend()`), ``compiled`` (whether the compiled
    extension imports; ``compiled_path``, ``compiled_error``), ``openmp`` and
    ``sanitized`` (how the extension was built; None without it),
    ``blas_library`` (`cedf.get_blas()`: "numpy" or "scipy"), ``blas``
    (threadpoolctl's entry for the BLAS cedf calls: filepath, version,
    internal_api, architecture, threading_layer, num_threads; None if not
    identified) with ``blas_found_as``, ``num_threads``
    (`cedf.get_num_threads()`), ``cpu_count`` (`os.cpu_count()`) and
    ``threadpools`` (threadpoolctl's list of every library with a thread pool).
    """
    import numpy
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS, which cedf calls)
    from threadpoolctl import threadpool_info

    kernels = backend._kernels
    pools = threadpool_info()
    blas, found_as = (_numpy_blas if backend.get_blas() == "numpy" else _scipy_blas)(pools)
    return {
        "cedf": _version(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "backend": backend.get_backend(),
        "compiled": kernels is not None,
        "compiled_path": getattr(kernels, "__file__", None),
        "compiled_error": None if backend._import_error is None else str(backend._import_error),
        "openmp": None if kernels is None else bool(getattr(kernels, "OPENMP", False)),
        "sanitized": None if kernels is None else bool(getattr(kernels, "SANITIZED", False)),
        "blas_library": backend.get_blas(),
        "blas": blas,
        "blas_found_as": found_as,
        "num_threads": backend.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "threadpools": pools,
    }


def _yes_no(flag):
    return "unknown (no compiled extension)" if flag is None else ("yes" if flag else "no")


def show_config(file=None):
    """Print cedf's configuration (see `config`): version, backend, BLAS, OpenMP, threads.

    `file` is where to write (default: sys.stdout).
    """
    c = config()
    out = file if file is not None else sys.stdout
    lines = [
        f"cedf {c['cedf']}",
        f"  python:     {c['python']} on {c['platform']}",
        f"  numpy:      {c['numpy']}",
        f"  scipy:      {c['scipy']}",
        f"  backend:    {c['backend']}",
        "  compiled:   " + (f"yes, {c['compiled_path']}" if c["compiled"] else f"no ({c['compiled_error']})"),
        f"  OpenMP:     {_yes_no(c['openmp'])}",
        f"  AddressSanitizer: {_yes_no(c['sanitized'])}",
    ]
    blas = c["blas"]
    if blas is None:
        lines.append(f"  BLAS:       {c['blas_found_as']}")
    else:
        details = [f"architecture {blas['architecture']}"] if blas.get("architecture") else []
        details += [f"{blas['threading_layer']} threading"] if blas.get("threading_layer") else []
        lines += [
            f"  BLAS:       {blas['internal_api']} {blas.get('version') or '(version unknown)'}"
            + (f" ({', '.join(details)})" if details else "")
            + (f", {c['blas_found_as']}" if c["blas_library"] == "numpy"
               else f", called through SciPy's cython_blas ({c['blas_found_as']})"),
            f"              {blas['filepath']}",
        ]
    lines += [
        f"  threads:    {c['num_threads']} for the matrix products (cedf.get_num_threads()), "
        f"{c['cpu_count']} CPUs (os.cpu_count()); cedf's own loops: the calling thread",
        "  thread pools (threadpoolctl):",
    ]
    lines += [f"    {pool['user_api']:<7} {pool['internal_api']:<9} {pool['num_threads']:>3} threads  {pool['filepath']}"
              for pool in c["threadpools"]] or ["    none loaded"]
    print("\n".join(lines), file=out)
