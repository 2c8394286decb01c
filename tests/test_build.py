"""The build under test is the one that was asked for.

CI runs the suite a second time on a build with AddressSanitizer
(``CEDF_SANITIZE=address pip install .``, see setup.py and .ci/run), so that a
loop that reads or writes out of bounds aborts the run. That stage sets
CEDF_EXPECT_SANITIZER=address: then the extension must really have been compiled
with ASan and the ASan runtime must really be loaded, or the stage would pass
without checking anything. (That a wrong buffer passed from Python is refused
before any loop runs is tested in test_kernels.py.)
"""
import os
from pathlib import Path

import pytest

EXPECTED = os.environ.get("CEDF_EXPECT_SANITIZER", "")


@pytest.mark.skipif(not EXPECTED, reason="CEDF_EXPECT_SANITIZER is not set: not a sanitized run "
                    "(CI's ASan stage sets it to 'address')")
def test_the_kernels_run_under_the_requested_sanitizer():
    assert EXPECTED == "address", f"CEDF_EXPECT_SANITIZER={EXPECTED!r}: only 'address' is known"
    from cedf import _kernels
    assert getattr(_kernels, "SANITIZED", False), (
        "CEDF_EXPECT_SANITIZER=address but cedf._kernels was compiled without AddressSanitizer: "
        "build it with CEDF_SANITIZE=address pip install .")
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps here to check that the ASan runtime is loaded")
    mapped = maps.read_text()
    # GCC's runtime, or clang's.
    assert "libasan" in mapped or "libclang_rt.asan" in mapped, (
        "cedf._kernels is sanitized but no ASan runtime is mapped into this process")


def test_importing_an_unbuilt_source_folder_says_to_run_from_elsewhere(tmp_path):
    """A copy of cedf's sources beside a setup.py, without compiled extensions, as a fresh clone is:
    `import cedf` from there warns that this is the source folder, and says what to do."""
    import shutil
    import subprocess
    import sys

    import cedf

    installed = Path(cedf.__file__).resolve().parent
    source = tmp_path / "cedf"
    shutil.copytree(installed, source, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    (source / "_kernels.pyx").write_text("# the Cython source, as in a checkout\n")
    (tmp_path / "setup.py").write_text("# a checkout's setup.py\n")
    run = subprocess.run([sys.executable, "-c", "import cedf; print(cedf.get_backend())"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "numpy"
    assert f"this cedf is the source folder {source}, which holds no built extension" in run.stderr
    assert "run Python from another folder" in run.stderr and "pip install -e ." in run.stderr
    assert "circular import" not in run.stderr
