"""The installed build knows the sources it was made from, and a changed source file is told apart.

setup.py writes `cedf._sources.source_hash` of the folder it builds from into
the built package (cedf/_source_hash.py); tests/conftest.py stops the session
when the checkout's differs (`helpers.stale_install`), so that a stale install
cannot pass the tests of changed sources.
"""
import shutil
from pathlib import Path

import pytest

import cedf
from helpers import load_sources_module, stale_install

REPO = Path(__file__).resolve().parents[1]
sources = load_sources_module(REPO)


def copy_of_the_sources(tmp_path):
    """The files the fingerprint covers, copied from the checkout into tmp_path/src."""
    root = tmp_path / "src"
    for name in sources.source_files(REPO):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, root / name)
    return root


def test_the_installed_build_was_made_from_this_checkout():
    from cedf._source_hash import SOURCE_HASH
    assert SOURCE_HASH == sources.source_hash(REPO)
    assert stale_install(REPO) is None
    # Written into the build only, never into the source tree.
    assert not (REPO / sources.GENERATED).exists()
    assert Path(cedf.__file__).resolve().parent != REPO / "cedf"


def test_the_fingerprint_covers_the_package_sources_and_nothing_else():
    names = sources.source_files(REPO)
    for needed in ("setup.py", "pyproject.toml", "cedf/__init__.py", "cedf/graph.py", "cedf/_sources.py",
                   "cedf/_kernels.pyx", "cedf/_engine.pyx", "cedf/_loops.pxd", "csrc/pointwise.h"):
        assert needed in names
    assert all(name.endswith((".py", ".pyx", ".pxd", ".h", ".toml")) for name in names), names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/", "docs/")) for name in names)


def test_a_changed_source_file_is_detected(tmp_path):
    root = copy_of_the_sources(tmp_path)
    built = sources.source_hash(root)
    assert built == sources.source_hash(REPO)   # the same bytes, elsewhere: the same fingerprint
    assert stale_install(root, installed=built) is None

    graph = root / "cedf" / "graph.py"
    original = graph.read_bytes()
    graph.write_bytes(original.replace(b"1.0 / max(n, 1)", b"2.0 / max(n, 1)"))
    assert graph.read_bytes() != original
    message = stale_install(root, installed=built)
    assert message is not None and message.startswith(
        "the installed cedf was built from other sources than this checkout: run pip install '.[test]' again")
    graph.write_bytes(original)
    assert stale_install(root, installed=built) is None


@pytest.mark.parametrize("change", [
    lambda root: (root / "cedf" / "new_module.py").write_text("X = 1\n"),        # a file added
    lambda root: (root / "csrc" / "pointwise.h").unlink(),                       # a file removed
    lambda root: (root / "pyproject.toml").write_bytes((root / "pyproject.toml").read_bytes() + b"\n"),
    lambda root: (root / "cedf" / "_kernels.pyx").rename(root / "cedf" / "_kernels2.pyx"),   # renamed
])
def test_added_removed_and_renamed_files_change_the_fingerprint(tmp_path, change):
    root = copy_of_the_sources(tmp_path)
    before = sources.source_hash(root)
    change(root)
    assert sources.source_hash(root) != before


def test_what_is_not_a_source_leaves_the_fingerprint(tmp_path):
    root = copy_of_the_sources(tmp_path)
    before = sources.source_hash(root)
    (root / sources.GENERATED).write_text("SOURCE_HASH = 'x'\n")   # a build's own output
    (root / "cedf" / "_kernels.c").write_text("/* Cython's output */\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_new.py").write_text("def test(): pass\n")
    (root / "README.md").write_text("changed\n")
    assert sources.source_hash(root) == before


def test_a_build_that_recorded_no_fingerprint_is_stale(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cedf._source_hash", None)   # as if the module were absent
    assert "built from other sources" in stale_install(REPO)
