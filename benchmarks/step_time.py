"""The time of one training step of a workload, and of each of its three calls, with the cedf
this interpreter imports: for comparing two builds, run alternately by each one's Python.

    python benchmarks/step_time.py mlp_digits float32 int64
    for i in 1 2 3 4 5 6; do old/bin/python benchmarks/step_time.py ...; new/bin/python ...; done

Prints the median over 25 timings of 1000 steps (us per step), then the medians of
Forward(), Backward(L) and UpdateParameters() timed alone. Any cedf with the lecture's
API runs it (only `benchmarks/workloads.py`'s graph builder is used).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # noqa: E402

import cedf as edf  # noqa: E402


def median_us(f, calls=1000, timings=25):
    for _ in range(200):   # warm: the first Forward builds the plan
        f()
    samples = []
    for _ in range(timings):
        start = time.perf_counter()
        for _ in range(calls):
            f()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("dtype", choices=["float32", "float64"])
    parser.add_argument("labels", choices=["int64", "float32"], nargs="?", default="int64")
    args = parser.parse_args(argv)
    x, y, L, _ = workloads._build(edf, args.workload, np.dtype(args.dtype).type, args.labels)

    def step():
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()

    calls = [median_us(step), median_us(edf.Forward), median_us(lambda: edf.Backward(L)),
             median_us(edf.UpdateParameters)]
    print("step %.2f us; Forward %.2f, Backward %.2f, UpdateParameters %.2f" % tuple(calls))


if __name__ == "__main__":
    main()
