"""Data-parallel training over MPI: N ranks give what one process gives on the global batch.

Each test launches ``mpiexec -n N python tests/mpi_program.py CASE DIR`` (MPICH
from the cedf[mpi] extra, or a system MPI; 3 ranks oversubscribe this 2-core
machine, which is the point: the uneven split of a batch of 101) and compares
what every rank wrote with what this process computes on its own, one process
on the global batch. CEDF_EXPECT_MPI=1 (set by .ci/run) makes a missing MPI a
failure instead of a skip.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cedf as edf
from cedf import distributed as dist

PROGRAM = Path(__file__).resolve().parent / "mpi_program.py"
sys.path.insert(0, str(PROGRAM.parent))
import mpi_program as program  # noqa: E402


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    else:
        beside = Path(sys.executable).parent / "mpiexec"
        mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        if os.environ.get("CEDF_EXPECT_MPI") == "1":
            pytest.fail("CEDF_EXPECT_MPI=1 but mpi4py or mpiexec is missing: pip install '.[mpi]'")
        pytest.skip("mpi4py and mpiexec are not installed (pip install '.[mpi]')")
    return mpiexec


#: How the ranks sum their gradients: CEDF_SHARED_MEMORY=1 (through an MPI shared-memory window,
#: the default on one machine) or 0 (MPI_Allreduce); each test of training runs both.
TRANSPORTS = {"1": "shared memory", "0": "MPI_Allreduce"}


def run(case, n, tmp_path, shared="1", timeout=300):
    """Every rank's results: a dict of arrays, or the error message it raised."""
    env = dict(os.environ, CEDF_SHARED_MEMORY=shared)
    done = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(PROGRAM), case, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"mpiexec -n {n} {case}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    results = []
    for rank in range(n):
        error = tmp_path / f"rank{rank}.txt"
        if error.exists():
            results.append(error.read_text())
        else:
            with np.load(tmp_path / f"rank{rank}.npz") as f:
                results.append({k: f[k] for k in f.files})
    return results


def single_process(kind):
    """The same training by one process on the whole global batch of each step."""
    X, Y = program.data()
    x, y, L = program.build(seed=0)
    opt = program.make_optimizer(kind)
    for step in range(program.STEPS):
        batch = slice(step * program.GLOBAL_BATCH, (step + 1) * program.GLOBAL_BATCH)
        x.value, y.value = X[batch], Y[batch]
        edf.Forward()
        edf.Backward(L)
        opt.step() if opt is not None else edf.UpdateParameters()
    return [p.value.copy() for p in edf.Parameters]


def assert_parameters(result, expected, rtol):
    got = [result[f"p{i}"] for i in range(len(expected))]
    for i, (g, e) in enumerate(zip(got, expected)):
        scale = np.max(np.abs(e))
        assert np.max(np.abs(g - e)) <= rtol * scale, f"parameter {i}: off by {np.max(np.abs(g - e)) / scale:.2e}"


@pytest.mark.parametrize("shared", TRANSPORTS)
@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("n", [2, 3])
def test_ranks_train_as_one_process_on_the_global_batch(kind, n, shared, tmp_path):
    """20 steps, global batch 101 (3 ranks: 34, 34, 33 examples), parameters drawn differently per rank."""
    results = run(kind, n, tmp_path, shared)
    expected = single_process(kind)
    for rank, result in enumerate(results):
        assert isinstance(result, dict), f"rank {rank}: {result}"
        assert int(result["size"]) == n
        assert str(result["transport"]) == TRANSPORTS[shared]
        assert_parameters(result, expected, 1e-10)
    # And the ranks agree with each other exactly: the same sums, the same updates.
    for result in results[1:]:
        for i in range(len(expected)):
            np.testing.assert_array_equal(result[f"p{i}"], results[0][f"p{i}"])


@pytest.mark.parametrize("shared", TRANSPORTS)
@pytest.mark.parametrize("n, batch_size", [(2, 101), (3, 101), (3, 2)])
def test_distributed_fit_gives_the_single_process_history(n, batch_size, shared, tmp_path):
    """fit(..., distributed=True): the same History as one process's fit; with batches of 2 over 3 ranks,
    one rank has no example in each step and must count for nothing."""
    results = run(f"fit{batch_size}", n, tmp_path, shared)
    X, Y = program.data()
    x, y, L = program.build(seed=0)
    history = edf.fit(L, x, y, X, Y, epochs=3, batch_size=batch_size, optimizer=program.make_optimizer("adam"),
                      seed=5, progress=False)
    expected = [p.value.copy() for p in edf.Parameters]
    for rank, result in enumerate(results):
        assert isinstance(result, dict), f"rank {rank}: {result}"
        assert str(result["transport"]) == TRANSPORTS[shared]
        np.testing.assert_allclose(result["loss"], history.loss, rtol=1e-6)
        np.testing.assert_allclose(result["accuracy"], history.accuracy, rtol=1e-6)
        assert_parameters(result, expected, 1e-8)


def test_a_rank_with_another_graph_fails_on_every_rank_with_the_difference(tmp_path):
    results = run("mismatched", 2, tmp_path)
    for rank, result in enumerate(results):
        assert isinstance(result, str), f"rank {rank} did not raise"
        assert result.startswith("ValueError: cedf.distributed.broadcast_parameters: rank 1's graph differs from "
                                 "rank 0's: parameter 0 has shape (5, 8) and dtype float64, on rank 0 shape (5, 7)")


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared memory", "MPI_Allreduce"])
def test_a_bad_batch_on_one_rank_is_refused_on_every_rank_without_a_hang(tmp_path, shared):
    # The check ran on that rank alone, before the sum the others were waiting in.
    results = run("bad_batch", 2, tmp_path, shared)
    assert results[1].startswith("ValueError: cedf.distributed.allreduce_gradients: batch must be the number of "
                                 "examples (a whole number, 0 or more, below 2**39)"), results[1]
    assert results[0].startswith("ValueError: cedf.distributed.allreduce_gradients: another rank's batch was no "
                                 "number of examples"), results[0]


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared memory", "MPI_Allreduce"])
def test_a_graph_changed_on_one_rank_alone_is_refused_on_every_rank_without_a_hang(tmp_path, shared):
    results = run("regraph_one", 2, tmp_path, shared)
    for rank, result in enumerate(results):
        assert isinstance(result, str), f"rank {rank} did not raise"
        assert result.startswith("ValueError: cedf.distributed.allreduce_gradients: the parameters of 1 of the 2 "
                                 "ranks' graphs changed since their last allreduce"), result
        assert ("(this one among them)" if rank == 1 else "(not this one)") in result


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared memory", "MPI_Allreduce"])
@pytest.mark.parametrize("n", [2, 3])
def test_a_graph_changed_alike_on_every_rank_is_summed_anew(tmp_path, shared, n):
    """Every rank builds the same new graph between two steps: the sum after it is that of one process
    on the global batch, with the new parameters."""
    results = run("regraph_all", n, tmp_path, shared)
    X, Y = program.data()
    x, y, L = program.build(seed=0, hidden=program.HIDDEN + 1)
    x.value, y.value = X[:program.GLOBAL_BATCH], Y[:program.GLOBAL_BATCH]
    edf.Forward()
    edf.Backward(L)
    for rank, result in enumerate(results):
        assert isinstance(result, dict), f"rank {rank}: {result}"
        assert str(result["transport"]) == TRANSPORTS[shared]
        for i, p in enumerate(edf.Parameters):
            assert result[f"g{i}"].shape == p.grad.shape
            np.testing.assert_allclose(result[f"g{i}"], p.grad, rtol=1e-12, atol=1e-15)


# What each rank must raise, as (rank 0, rank 1), for a use that is wrong on one rank or on all.
HOSTILE = {
    "no_backward": ("another rank's batch was no number of examples", "no Backward(L) ran on this graph yet"),
    "value_shape": ("the parameters of 1 of the 2 ranks' graphs changed since their last allreduce (not this one)",
                    "the parameters of 1 of the 2 ranks' graphs changed since their last allreduce (this one "
                    "among them)"),
    "new_graph": ("the parameters of 1 of the 2 ranks' graphs changed since their last allreduce (not this one)",
                  "the parameters of 1 of the 2 ranks' graphs changed since their last allreduce (this one "
                  "among them)"),
    "huge_batch": ("batch must be the number of examples (a whole number, 0 or more, below 2**39)",
                   "another rank's batch was no number of examples"),
    "zero_total": ("total must be the global batch",) * 2,
    "no_examples": ("no rank had any example in this step",) * 2,
}


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared memory", "MPI_Allreduce"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_wrong_use_on_some_ranks_is_refused_on_every_rank_without_a_hang(tmp_path, shared, kind):
    results = run(f"hostile_{kind}", 2, tmp_path, shared, timeout=60)
    for rank, (result, expected) in enumerate(zip(results, HOSTILE[kind])):
        assert isinstance(result, str), f"rank {rank} did not raise"
        assert result.split(": ", 1)[1].startswith("cedf.distributed.allreduce_gradients: "), result
        assert expected in result, (rank, result)


def test_one_rank_may_ask_the_transport_alone_once_the_buffers_exist(tmp_path):
    results = run("transport_alone", 2, tmp_path, timeout=60)
    assert [str(r["asked"]) for r in results] == ["shared memory", ""]


def test_the_benchmark_of_the_ranks_runs_to_its_end(tmp_path):
    """benchmarks/distributed_steps.py, as compare.py runs it (rank 0 alone asks the transport at the
    end): it once hung there, and only the full benchmark run found it."""
    script = PROGRAM.parents[1] / "benchmarks" / "distributed_steps.py"
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script), "mlp_digits", "--per-rank",
                           "--steps", "5", "--repeat", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ranks"] == 2 and result["transport"] == "shared memory" and result["steps_per_second"] > 0
    assert result["gradient_bytes"] == 4 * (64 * 32 + 32 + 32 * 10 + 10)


def test_checkpoints_are_written_by_rank_zero_and_loaded_everywhere(tmp_path):
    results = run("checkpoint", 2, tmp_path)
    for rank, result in enumerate(results):
        assert isinstance(result, dict), f"rank {rank}: {result}"
        loaded = np.concatenate([result[f"p{i}"].ravel() for i in range(4)])
        np.testing.assert_array_equal(loaded, results[0]["saved"])
    assert (tmp_path / "model.npz").exists()


def test_share_splits_like_array_split():
    for n in range(0, 12):
        for size in range(1, 5):
            parts = np.array_split(np.arange(n), size)
            assert [dist.share(n, r, size) for r in range(size)] == \
                [(int(p[0]), int(p[-1]) + 1) if len(p) else (sum(map(len, parts[:r])),) * 2
                 for r, p in enumerate(parts)]


def test_without_init_the_functions_say_to_call_it(monkeypatch):
    monkeypatch.setattr(dist._state, "comm", None)
    with pytest.raises(RuntimeError, match=r"allreduce_gradients: call cedf.distributed.init\(\) first"):
        dist.allreduce_gradients()


def test_without_mpi4py_init_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'cedf\[mpi\]'"):
        dist.init()


def test_one_process_is_a_world_of_one_and_a_wrong_total_is_refused():
    _mpiexec()   # skips (or fails under CEDF_EXPECT_MPI=1) without MPI
    assert dist.init() == (0, 1)
    X, Y = program.data()
    x, y, L = program.build(seed=0)
    x.value, y.value = X[:10], Y[:10]
    edf.Forward()
    edf.Backward(L)
    grads = [p.grad.copy() for p in edf.Parameters]
    dist.allreduce_gradients()               # one rank: the mean over its 10 examples, as it was
    for p, g in zip(edf.Parameters, grads):
        np.testing.assert_allclose(p.grad, g, rtol=1e-15)
    assert all(p.grad.base is edf.current_graph()._fusion.groups[0][2] for p in edf.Parameters)
    assert dist.transport() == "MPI_Allreduce"   # one rank: nothing to share
    with pytest.raises(ValueError, match=r"the ranks' batches sum to 10, not to the total 12 given"):
        dist.allreduce_gradients(total=12)


@pytest.mark.parametrize("batch, whole", [
    (0, True), (128, True), (2 ** 39 - 1, True), (np.int64(7), True), (np.uint8(7), True), (7.0, True),
    (np.float32(7), True), (-1, False), (2 ** 39, False), (2 ** 70, False), (True, False), (np.bool_(True), False),
    (7.5, False), (float("nan"), False), (float("inf"), False), (-0.5, False), (np.float64("nan"), False),
    ("7", False), (None, False), ([7], False)])
def test_the_batch_a_rank_may_send_is_a_whole_number_of_examples(batch, whole):
    # allreduce_gradients checks every step's batch with this rule before the sum; ints take a
    # shortcut of their own, which must agree with the general rule.
    assert dist._whole(batch) is whole
