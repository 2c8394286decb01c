"""The fingerprint of the sources a build of cedf is made from, so that the tests can tell a stale install.

`setup.py` computes `source_hash` of the folder it builds from and writes it
into the built package as ``cedf/_source_hash.py`` (``SOURCE_HASH``, in the
build directory only, never into the source tree); `tests/conftest.py`
computes it again from the checkout the tests come from and stops the
session when the two differ. A wheel built from the sdist hashes the same
files: the sdist holds every one of them, byte for byte.

Standard library only: setup.py loads this file by its path, before cedf
(or NumPy) can be imported.
"""
import hashlib
from pathlib import Path

#: What makes the package: its modules, the Cython sources and C headers, and how they are built.
PATTERNS = ("cedf/*.py", "cedf/*.pyx", "cedf/*.pxd", "csrc/*.h", "setup.py", "pyproject.toml")
#: The generated module itself (a build writes it; it is no source).
GENERATED = "cedf/_source_hash.py"


def source_files(root):
    """The files of `root` that the fingerprint covers, as sorted POSIX paths relative to it."""
    root = Path(root)
    found = {path.relative_to(root).as_posix() for pattern in PATTERNS for path in root.glob(pattern)
             if path.is_file()}
    found.discard(GENERATED)
    return sorted(found)


def source_hash(root):
    """sha256 over the names, lengths and bytes of `source_files(root)`."""
    root = Path(root)
    digest = hashlib.sha256()
    for name in source_files(root):
        data = (root / name).read_bytes()
        # Name and length first, so that moving bytes between files changes the hash too.
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
