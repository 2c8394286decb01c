"""cedf._allreduce, the shared-memory sum of cedf.distributed, with threads standing in for ranks.

The ranks of `cedf.distributed` share a window of MPI memory; here ordinary arrays
play that part and one thread runs each rank's `SharedSum.run` (which waits
without the GIL), so that the sum, its weights, the alternating slots and the
equality of every rank's result are checked without launching MPI
(tests/test_distributed.py runs it under mpiexec too).
"""
import threading

import numpy as np
import pytest

from cedf._allreduce import SharedSum, fusion_state


def ranks_of(ranks, n, dtype):
    """Each rank's buffer and SharedSum over one set of slots and one counter."""
    slots = [np.full(n, np.nan, dtype) for _ in range(2 * ranks)]   # NaN: a slot read unwritten shows
    counter = np.zeros(1, np.uint64)
    buffers = [np.zeros(n, dtype) for _ in range(ranks)]
    return buffers, [SharedSum(buffers[r], slots, counter, r) for r in range(ranks)]


def step(sums, batches):
    """Every rank's run, each in a thread of its own; returns what each returned."""
    results = [None] * len(sums)
    errors = []

    def rank(r):
        try:
            results[r] = sums[r].run(batches[r])
        except Exception as exc:   # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(sums))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads), errors
    return results


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_every_rank_gets_the_batch_weighed_sum_of_all_ranks_gradients(ranks, dtype, rtol):
    rng = np.random.default_rng(ranks)
    n = 1001   # 1000 gradients and the batch
    buffers, sums = ranks_of(ranks, n, dtype)
    for t in range(5):   # both parities of the slots, twice over
        grads = [rng.standard_normal(n - 1).astype(dtype) for _ in range(ranks)]
        batches = [int(b) for b in rng.integers(1, 50, ranks)]
        for buffer, g in zip(buffers, grads):
            buffer[:-1] = g
        totals = step(sums, batches)
        total = sum(batches)
        expected = sum(np.float64(b) / total * g.astype(np.float64) for b, g in zip(batches, grads))
        assert totals == [total] * ranks
        for buffer in buffers:
            np.testing.assert_allclose(buffer[:-1], expected, rtol=rtol, atol=rtol * np.abs(expected).max())
            assert buffer[-1] == total
            np.testing.assert_array_equal(buffer, buffers[0])   # the same bits on every rank


def test_a_rank_without_examples_counts_for_nothing_whatever_its_gradients_hold():
    buffers, sums = ranks_of(3, 5, np.float64)
    buffers[0][:-1], buffers[1][:-1], buffers[2][:-1] = [1, 2, 3, 4], np.nan, [5, 6, 7, 8]
    assert step(sums, [1, 0, 3]) == [4, 4, 4]
    for buffer in buffers:
        np.testing.assert_allclose(buffer, [(1 + 15) / 4, (2 + 18) / 4, (3 + 21) / 4, (4 + 24) / 4, 4], rtol=1e-15)


def test_no_example_on_any_rank_gives_a_total_of_zero():
    buffers, sums = ranks_of(2, 3, np.float32)
    assert step(sums, [0, 0]) == [0, 0]
    assert buffers[0][-1] == buffers[1][-1] == 0


def test_bad_slots_are_refused_with_what_was_expected():
    buffer, counter = np.zeros(4), np.zeros(1, np.uint64)
    with pytest.raises(ValueError, match="two slots per rank, got 3"):
        SharedSum(buffer, [np.zeros(4)] * 3, counter, 0)
    with pytest.raises(ValueError, match=r"writeable contiguous \(4,\) float64 arrays"):
        SharedSum(buffer, [np.zeros(4), np.zeros(5)], counter, 0)
    with pytest.raises(ValueError, match=r"writeable contiguous \(4,\) float64 arrays"):
        SharedSum(buffer, [np.zeros(4), np.zeros(4, np.float32)], counter, 0)
    with pytest.raises(TypeError, match="float32 or float64 buffer expected, got int64"):
        SharedSum(np.zeros(4, np.int64), [np.zeros(4, np.int64)] * 2, counter, 0)
    with pytest.raises(ValueError, match="counter must be a writeable uint64 array of one entry"):
        SharedSum(buffer, [np.zeros(4)] * 2, np.zeros(1), 0)
    with pytest.raises(ValueError, match="rank 2 is not one of the 2 ranks"):
        SharedSum(buffer, [np.zeros(4)] * 4, counter, 2)


def test_fusion_state_tells_a_changed_list_from_a_replaced_gradient():
    class P:
        pass
    params = (P(), P())
    views = (np.zeros(2), np.zeros((3, 1)))
    for p, v in zip(params, views):
        p.grad, p.value = v, np.ones_like(v)
    assert fusion_state(list(params), params, views) == 0
    assert fusion_state(list(params) + [P()], params, views) == 1
    assert fusion_state([params[1], params[0]], params, views) == 1
    params[1].grad = np.zeros((3, 1))
    assert fusion_state(list(params), params, views) == 2
    params[1].grad = views[1]
    # A value of another shape, dtype or byte order (the same Parameter): its gradient's view no
    # longer fits it, so the fusion must be made anew.
    for value in (np.zeros(3), np.zeros((1, 3)), np.zeros((3, 1), np.float32), np.zeros((3, 1), ">f8"), [[0.0]] * 3):
        params[1].value = value
        assert fusion_state(list(params), params, views) == 1, value
    params[1].value = np.full((3, 1), 7.0)   # another array of the same shape and dtype: still fits
    assert fusion_state(list(params), params, views) == 0
