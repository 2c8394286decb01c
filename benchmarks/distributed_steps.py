"""Steps per second of one workload's training step, by one process or by ranks under mpiexec.

    python benchmarks/distributed_steps.py WORKLOAD                # one process, the workload's batch
    mpiexec -n 2 python benchmarks/distributed_steps.py WORKLOAD   # each rank its share of that batch
    mpiexec -n 2 python benchmarks/distributed_steps.py WORKLOAD --per-rank   # each rank a whole batch

A step is ``Forward(); Backward(L); dist.allreduce_gradients(); UpdateParameters()``,
float32; one process skips the allreduce. Without --per-rank the global batch is
the workload's (workloads.py), shared out over the ranks (strong scaling: the
same training, faster); with it, every rank takes a batch of the workload's
size, so that a global step trains on ranks x as many examples (weak scaling,
as data-parallel training is usually run and measured). Prints one line of
JSON (rank 0): global steps and examples per second (median of `--repeat`
blocks of `--steps` steps, the ranks in step by a barrier around each block),
and the time of one allreduce of the fused gradients alone, and how the ranks
summed them (CEDF_SHARED_MEMORY=0: by MPI_Allreduce). BLAS threads
are what the environment says (OPENBLAS_NUM_THREADS): compare.py runs this
script with 1 or 2. Used by compare.py's "distributed" part.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402

import cedf  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=list(workloads.WORKLOADS) + [workloads.MLP_MNIST1D])
    parser.add_argument("--steps", type=int, default=200,
                        help="steps per timed block, at least (default: 200, or as many as take 20 ms)")
    parser.add_argument("--repeat", type=int, default=7, help="timed blocks (default: 7)")
    parser.add_argument("--per-rank", action="store_true", help="every rank a whole batch (weak scaling)")
    args = parser.parse_args()

    try:
        from cedf import distributed as dist
        rank, size = dist.init()
    except ImportError:
        dist, rank, size = None, 0, 1
    net = workloads.cedf_net(args.workload, np.float32)
    X, Y = net.x.value, net.y.value
    examples = len(X) * (size if args.per_rank else 1)   # per global step
    if size > 1:
        if not args.per_rank:
            lo, hi = dist.share(len(X), rank, size)
            net.x.value, net.y.value = X[lo:hi].copy(), Y[lo:hi].copy()
        dist.broadcast_parameters(net.graph)
    graph, loss = net.graph, net.loss
    cedf.learning_rate = 1e-4   # thousands of steps on one batch

    def step():
        graph.Forward()
        graph.Backward(loss)
        if size > 1:
            dist.allreduce_gradients(graph)
        graph.UpdateParameters()

    def block(fn, steps):
        if size > 1:
            dist._comm("benchmark").Barrier()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if size > 1:
            dist._comm("benchmark").Barrier()
        return time.perf_counter() - start

    # Warm up for about half a second and time blocks of at least 20 ms: shorter ones moved
    # by a fifth from block to block here. Rank 0 decides how many steps, for every rank.
    first = block(step, 20) / 20
    per_block = max(args.steps, int(0.02 / first) + 1)
    plan = per_block, max(1, int(0.5 / (per_block * first)))   # steps per block, blocks to warm up
    if size > 1:
        plan = dist._comm("benchmark").bcast(plan, root=0)   # the ranks must take the same steps
    steps, warm = plan
    for _ in range(warm):
        block(step, steps)
    times = [block(step, steps) for _ in range(args.repeat)]
    allreduce = ([block(lambda: dist.allreduce_gradients(graph), steps) for _ in range(3)] if size > 1
                 else [0.0])
    if rank == 0:
        rate = steps / statistics.median(times)
        print(json.dumps({"workload": args.workload, "ranks": size, "steps_per_second": rate,
                          "examples_per_second": rate * examples, "per_rank": args.per_rank,
                          "allreduce_seconds": min(allreduce) / steps,
                          "transport": dist.transport(graph) if size > 1 else None,
                          "gradient_bytes": int(sum(p.value.nbytes for p in graph.Parameters))}))


if __name__ == "__main__":
    main()
