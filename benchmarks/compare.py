"""cedf against the lecture's NumPy EDF, PyTorch, scikit-learn and the matrix-products floor, in one run.

    python benchmarks/compare.py [--dtype float32 float64] [--labels int64 float32]
                                 [--only table floor optim fit forward memory cnn distributed end-to-end]
                                 [--quick]

Prints the time of one training step of each workload (see workloads.py) for
cedf on both backends, the lecture's EDF, PyTorch (when installed) and the floor,
the ratios between them, and whether each of cedf's performance targets holds
(`TARGETS`): a step against the floor with int64 and with integral float32
labels, a step with `cedf.optim.Adam` against the bare step, an epoch of
`cedf.fit` against its steps, and the whole training of the MNIST-1D-sized MLP
by cedf, PyTorch eager and scikit-learn (those two when installed; else their
rows say so), and the MNIST-1D CNN's step (issue 15) against PyTorch eager and
its floor, the products of its unfolded convolutions alone, and, when mpi4py
and mpiexec are installed, data-parallel steps of 2 ranks against one process
(issue 16, `distributed_steps.py`). The closing table lists every target judged, with its goal.
Absolute times drift between runs and machines; ratios taken in one run hold.

The targets are judged against the floor by NumPy's BLAS, as the issue sets
them. The floor through SciPy's BLAS ("floor scipy", the build cedf falls back
to) is printed beside it: floor scipy / floor is what that build costs or gains.

The table shows each contender's best time over interleaved rounds. The ratios
to the floor that the targets judge are measured apart, in pairs (see
`paired_ratio`): on a shared virtual machine the best-of-rounds ratio of cedf
and the floor (mlp_large, float64) moved between 0.95 and 1.27 for the same
code, while 19 paired medians stayed between 1.05 and 1.09.
"""
import argparse
import gc
import os
import statistics
import sys
import time
import timeit
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402

import cedf  # noqa: E402
from cedf import lecture  # noqa: E402


@dataclass(frozen=True)
class Target:
    """A goal for one measured quantity: holds when `measured op goal` (op: "<=", ">=" or "<")."""

    name: str
    op: str
    goal: float
    unit: str = ""
    issue: str = "14"              # the issue that set it ("perf-1": the first performance round)
    labels: tuple = ("int64",)     # the label kinds it is judged with, each on its own
    dtypes: tuple = ("float32", "float64")   # the dtypes it is judged in (of those a run asks for)

    def holds(self, value):
        return {"<=": value <= self.goal, ">=": value >= self.goal, "<": value < self.goal}[self.op]

    @property
    def goal_text(self):
        return f"{self.op} {self.goal:g}{self.unit}"


LABELS = workloads.LABELS
STEPS = -(-workloads.MNIST1D.examples // workloads.MNIST1D.batch)   # mini-batches per epoch of the fit target

#: Every target this script judges, by name. Issue 14's items 5 (the step against the floor,
#: the optimisers, fit) and 6 (end to end); the first round's targets that still stand.
TARGETS = {t.name: t for t in [
    # issue 14, item 5: ratios to the floor, with int64 and integral float32 labels
    Target("logreg2d step / floor", "<=", 1.25, labels=LABELS),
    Target("mlp_digits step / floor", "<=", 1.15, labels=LABELS),
    Target("mlp_mnist step / floor", "<=", 1.08, labels=LABELS),
    Target("mlp_large step / floor", "<=", 1.05, labels=LABELS),
    Target("mlp_mnist Adam step / SGD step", "<=", 1.10, labels=LABELS),
    Target("mlp_mnist1d Adam step / SGD step", "<=", 1.10, labels=LABELS),
    Target(f"mlp_mnist1d fit epoch / ({STEPS} x SGD step)", "<=", 1.20, labels=LABELS),
    # issue 14, item 6: seconds per epoch of the whole training, other / cedf
    Target("end to end: torch / cedf", ">=", 6.0, dtypes=("float32",)),
    Target("end to end: torch 1 thread / cedf", ">=", 6.0, dtypes=("float32",)),
    Target("end to end: scikit-learn / cedf", ">=", 4.0, dtypes=("float32",)),
    # issue 15: the MNIST-1D CNN's training step (Adam), float32
    Target("cnn_mnist1d torch / cedf", ">=", 2.0, issue="15", dtypes=("float32",)),
    Target("cnn_mnist1d torch 1 thread / cedf", ">=", 2.0, issue="15", dtypes=("float32",)),
    Target("cnn_mnist1d step / floor", "<=", 1.3, issue="15", dtypes=("float32",)),
    # issue 16: data-parallel steps over MPI, 2 ranks of 1 BLAS thread each, float32
    Target("mlp_digits 2 ranks / 1 process 1 thread", ">=", 1.7, issue="16", dtypes=("float32",)),
    # the first performance round
    Target("logreg2d lecture / cedf", ">=", 10.0, issue="perf-1"),
    Target("logreg2d torch / cedf", ">=", 40.0, issue="perf-1"),
    Target("mlp_mnist forward / products", "<=", 1.2, issue="perf-1"),
    Target("mlp_mnist 200 steps: tracemalloc peak growth", "<", 64, " KiB", issue="perf-1"),
    Target("logreg2d steps: resident memory growth", "<", 5, " MB", issue="perf-1"),
]}

#: The parts of a run (--only), in the order they run.
PARTS = ("table", "floor", "optim", "fit", "forward", "memory", "cnn", "distributed", "end-to-end")


def _calls_for(fn, budget):
    """How many calls of `fn` take about `budget` seconds (at least one)."""
    return max(1, int(timeit.Timer(fn).autorange()[0] * budget / 0.2))


def interleaved(makers, repeat, budget):
    """Best time of one call of each contender, their rounds interleaved.

    Machine drift then affects all contenders alike, and each round starts
    after a pause: NumPy and SciPy each bring an OpenBLAS whose threads spin
    for a while after a product (0.11 s of CPU time after the last one, here),
    and a contender timed while the other library's threads still spin runs
    up to 15 % slower here.
    """
    best, numbers = {}, {}
    for _ in range(repeat):
        for name, make in makers:
            fn = make()
            for _ in range(3):
                fn()
            if name not in numbers:
                numbers[name] = _calls_for(fn, budget)
            time.sleep(0.25)
            t = timeit.Timer(fn).timeit(numbers[name]) / numbers[name]
            best[name] = min(best.get(name, float("inf")), t)
    return best


def paired_ratio(make_a, make_b, pairs, budget, times=None):
    """Median over `pairs` back-to-back timings of time(a) / time(b), and how many pairs.

    Each pair times a then b (or b then a: the order alternates), each for
    about `budget` seconds of calls (at least one), so that both see the same
    state of the machine; the median ignores the pairs in which a burst of
    host noise fell on one of them. A best-of-rounds ratio instead compares
    each contender's luckiest moment, and one lucky sample decides it. When
    cedf's products go to another BLAS than the floor's (SciPy's), each timing
    starts after a pause: the other library's threads spin for a while after
    a product. A dict passed as `times` receives the median time of one call
    of each, as "a" and "b".
    """
    a, b = make_a(), make_b()
    for _ in range(3):
        a(), b()
    number = _calls_for(a, budget)
    pause = 0.0 if cedf.get_blas() == "numpy" else 0.25
    ratios, seen = [], {"a": [], "b": []}
    for i in range(pairs):
        pair = {}
        for name, fn in ((("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))):
            time.sleep(pause)
            pair[name] = timeit.Timer(fn).timeit(number)
            seen[name].append(pair[name] / number)
        ratios.append(pair["a"] / pair["b"])
    if times is not None:
        times.update({name: float(np.median(t)) for name, t in seen.items()})
    return float(np.median(ratios)), pairs


def host_check(quick=False):
    """One line on the state of the machine, printed before and after the run: NumPy's BLAS
    multiplying two 512 x 512 float32 matrices with its default threads, against one thread.

    On a quiet 2-core machine two threads take about 0.55 of one thread's time. The
    shared virtual machine these benchmarks run on has stretches (seconds to minutes,
    with nothing else of ours running) in which two-thread numbers are off: in one,
    Adam's update in a two-thread step of mlp_mnist took 540-614 us against 106 us in
    a quiet minute. The line says which kind of stretch the run began and ended in.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "host check: SKIP (threadpoolctl, which scikit-learn brings, is not installed)"
    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    out = np.empty_like(a)

    def product():
        np.matmul(a, a, out=out)

    rounds, calls = (3, 5) if quick else (9, 20)
    ratios, times = [], {"default": [], "one": []}
    for i in range(rounds):
        pair = {}
        for name in (("default", "one") if i % 2 == 0 else ("one", "default")):
            with threadpool_limits(1 if name == "one" else None, user_api="blas"):
                product()
                pair[name] = timeit.Timer(product).timeit(calls) / calls
            times[name].append(pair[name])
        ratios.append(pair["default"] / pair["one"])
    ratio = statistics.median(ratios)
    verdict = ("quiet" if ratio < 0.7 else
               "BUSY (a quiet 2-core machine gives about 0.55): the other cores are shared; numbers with "
               "two threads from this stretch are not measurements")
    return (f"host check: 512 x 512 float32 product, default threads / one thread = {ratio:.2f} "
            f"({fmt(statistics.median(times['default'])).strip()} / {fmt(statistics.median(times['one'])).strip()}; "
            f"median of {rounds} pairs): {verdict}")


def cedf_step(backend, workload, dtype, labels="int64"):
    cedf.set_backend(backend)
    step = workloads.edf_step(cedf, workload, dtype, labels)

    def run():
        cedf.set_backend(backend)
        step()
    return step if backend == "cython" else run


def contenders(workload, dtype):
    yield "cedf", lambda: cedf_step("cython", workload, dtype)
    yield "cedf numpy", lambda: cedf_step("numpy", workload, dtype)
    yield "lecture", lambda: workloads.edf_step(lecture, workload, dtype)
    try:
        torch = workloads.import_torch()   # records torch's own default first, for the end-to-end run
        torch.set_num_threads(os.cpu_count())
        yield "torch", lambda: workloads.torch_step(workload, dtype)
    except ImportError:
        pass
    yield "floor", lambda: workloads.floor_step(workload, dtype)
    yield "floor scipy", lambda: workloads.floor_step(workload, dtype, blas="scipy")


def fmt(t):
    return f"{t * 1e6:10.1f} us" if t < 1e-2 else f"{t * 1e3:10.2f} ms"


@dataclass
class Row:
    """One judgement: a target's measured value in one dtype and with one kind of labels."""

    target: Target
    dtype: str
    labels: str
    value: float = None     # None: not measured (see note)
    how: str = ""           # how it was measured ("median of 41 pairs")
    note: str = ""

    @property
    def ok(self):
        return None if self.value is None else self.target.holds(self.value)


class Judge:
    """Collects the rows of a run and prints each as it is judged."""

    def __init__(self, dtypes, labels):
        self.rows, self.dtypes, self.labels = [], dtypes, labels

    def wanted(self, name, dtype, labels):
        """Whether target `name` is judged in `dtype` with `labels`: by the target, and asked for in this run."""
        t = TARGETS[name]
        return dtype in t.dtypes and dtype in self.dtypes and labels in t.labels and labels in self.labels

    def __call__(self, name, dtype, labels, value, how="", detail=""):
        t = TARGETS[name]
        row = Row(t, dtype, labels, value, how)
        self.rows.append(row)
        where = f"{dtype}, {labels} labels" if len(t.labels) > 1 else dtype
        print(f"  [{'PASS' if row.ok else 'FAIL'}] {name} ({where}) = {value:.{_digits(t)}f}{t.unit} "
              f"({t.goal_text}{'; ' + how if how else ''}){' ' + detail if detail else ''}")
        return row

    def skip(self, name, dtype, labels, note):
        self.rows.append(Row(TARGETS[name], dtype, labels, note=note))
        print(f"  [SKIP] {name} ({dtype}): {note}")

    def summary(self):
        """The closing table: every target judged, with its goal; and how many hold."""
        judged = [r for r in self.rows if r.value is not None]
        held = sum(r.ok for r in judged)
        print(f"\n== targets: {held} of {len(judged)} hold"
              + (f" ({len(self.rows) - len(judged)} not measured)" if len(judged) < len(self.rows) else "") + " ==")
        width = max([len(r.target.name) for r in self.rows] + [6])
        print(f"{'target':<{width}}  {'issue':<6} {'dtype':<8} {'labels':<8} {'measured':>10}  {'goal':<11} "
              f"{'how':<20} result")
        for r in self.rows:
            t = r.target
            if r.value is None:
                measured, result = "-", f"SKIP: {r.note}"
            else:
                measured, result = f"{r.value:.{_digits(t)}f}{t.unit}", "PASS" if r.ok else "FAIL"
            print(f"{t.name:<{width}}  {t.issue:<6} {r.dtype:<8} {r.labels:<8} {measured:>10}  {t.goal_text:<11} "
                  f"{r.how:<20} {result}")
        return held, len(judged)


def _digits(target):
    return 1 if target.unit else 2


def step_table(dtype_name, dtype, workload_names, repeat, budget):
    """The table of one training step per workload and contender (best of interleaved rounds)."""
    print(f"\n== {dtype_name}: one training step ==")
    names = [name for name, _ in contenders("logreg2d", dtype)]
    print(f"{'workload':<12}" + "".join(f"{n:>14}" for n in names)
          + f"{'cedf/floor':>12}{'lecture/cedf':>14}" + (f"{'torch/cedf':>12}" if "torch" in names else "")
          + f"{'cedf/floor scipy':>18}")
    table = {}
    for workload in workload_names:
        times = table[workload] = interleaved(list(contenders(workload, dtype)), repeat, budget)
        row = f"{workload:<12}" + "".join(f"{fmt(times[n]):>14}" for n in names)
        row += f"{times['cedf'] / times['floor']:>12.2f}{times['lecture'] / times['cedf']:>14.1f}"
        if "torch" in times:
            row += f"{times['torch'] / times['cedf']:>12.1f}"
        print(row + f"{times['cedf'] / times['floor scipy']:>18.2f}")
    return table


def floor_targets(judge, dtype_name, dtype, workload_names, labels_kinds, table, pairs, budget):
    """Issue 14, item 5: a cedf step against the floor, with each kind of labels."""
    for workload in workload_names:
        name = f"{workload} step / floor"
        for labels in labels_kinds:
            if name not in TARGETS or not judge.wanted(name, dtype_name, labels):
                continue
            times = {}
            ratio, n = paired_ratio(lambda: cedf_step("cython", workload, dtype, labels),
                                    lambda: workloads.floor_step(workload, dtype), pairs, budget, times)
            detail = f"[cedf {fmt(times['a']).strip()}, floor {fmt(times['b']).strip()}"
            if workload in table:
                t = table[workload]
                detail += (f"; best of rounds (int64) {t['cedf'] / t['floor']:.2f}; "
                           f"floor scipy / floor = {t['floor scipy'] / t['floor']:.2f}")
            judge(name, dtype_name, labels, ratio, f"median of {n} pairs", detail + "]")


def optim_targets(judge, dtype_name, dtype, labels_kinds, pairs, budget):
    """Issue 14, item 5: a step with cedf.optim.Adam against the bare step (UpdateParameters)."""
    for workload in ("mlp_mnist", workloads.MLP_MNIST1D):
        name = f"{workload} Adam step / SGD step"
        for labels in labels_kinds:
            if not judge.wanted(name, dtype_name, labels):
                continue
            cedf.set_backend("cython")
            times = {}
            ratio, n = paired_ratio(lambda: workloads.optimizer_step(workload, dtype, labels, "adam"),
                                    lambda: workloads.sgd_step(workload, dtype, labels), pairs, budget, times)
            judge(name, dtype_name, labels, ratio, f"median of {n} pairs",
                  f"[Adam step {fmt(times['a']).strip()}, bare step {fmt(times['b']).strip()}]")


def fit_targets(judge, dtype_name, dtype, labels_kinds, pairs, budget):
    """Issue 14, item 5: an epoch of fit (Adam) against as many bare SGD steps as it has mini-batches."""
    name = f"{workloads.MLP_MNIST1D} fit epoch / ({STEPS} x SGD step)"
    for labels in labels_kinds:
        if not judge.wanted(name, dtype_name, labels):
            continue
        cedf.set_backend("cython")
        epoch = workloads.fit_epoch(dtype, labels)
        assert epoch.steps == STEPS
        times = {}
        ratio, n = paired_ratio(lambda: epoch,
                                lambda: workloads.steps_of(workloads.sgd_step(workloads.MLP_MNIST1D, dtype, labels),
                                                           STEPS),
                                pairs, budget, times)
        judge(name, dtype_name, labels, ratio, f"median of {n} pairs",
              f"[fit epoch {fmt(times['a']).strip()} = {fmt(times['a'] / STEPS).strip()} a step; "
              f"bare SGD step {fmt(times['b'] / STEPS).strip()}]")


def cnn_targets(judge, dtype_name, dtype, pairs, budget):
    """Issue 15: the MNIST-1D CNN's step (Forward, Backward, Adam) against PyTorch eager and the floor."""
    cedf.set_backend("cython")
    times = {}
    ratio, n = paired_ratio(lambda: workloads.cnn_step(dtype), lambda: workloads.cnn_floor_step(dtype),
                            pairs, budget, times)
    judge("cnn_mnist1d step / floor", dtype_name, "int64", ratio, f"median of {n} pairs",
          f"[cedf {fmt(times['a']).strip()}, products {fmt(times['b']).strip()}]")
    try:
        torch = workloads.import_torch()
    except ImportError:
        for name in ("cnn_mnist1d torch / cedf", "cnn_mnist1d torch 1 thread / cedf"):
            judge.skip(name, dtype_name, "int64", "PyTorch is not installed")
        return
    for name, threads in (("cnn_mnist1d torch / cedf", workloads.torch_default_threads()),
                          ("cnn_mnist1d torch 1 thread / cedf", 1)):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            times = {}
            ratio, n = paired_ratio(lambda: workloads.torch_cnn_step(dtype), lambda: workloads.cnn_step(dtype),
                                    pairs, budget, times)
        finally:
            torch.set_num_threads(before)
        judge(name, dtype_name, "int64", ratio, f"median of {n} pairs",
              f"[torch ({threads} threads) {fmt(times['a']).strip()}, cedf {fmt(times['b']).strip()}]")


def _mpiexec():
    """mpiexec beside this Python (the cedf[mpi] extra's MPICH) or on PATH, when mpi4py is installed; else None."""
    import shutil

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def distributed_targets(judge, rounds):
    """Issue 16: 2 ranks x 1 BLAS thread against 1 process x 2 threads and x 1 thread.

    Each configuration runs benchmarks/distributed_steps.py in processes of its own;
    the rounds alternate the configurations, and each one's median over the rounds is
    taken. Two ways to use two ranks: the workload's batch shared out (the same
    training, strong scaling) and a batch of that size on each rank (twice the
    examples per step, weak scaling, as data-parallel training is run); the target
    compares examples per second, with each rank a whole batch.
    """
    import json
    import subprocess

    mpiexec = _mpiexec()
    name = "mlp_digits 2 ranks / 1 process 1 thread"
    if mpiexec is None:
        judge.skip(name, "float32", "int64", "mpi4py and mpiexec are not installed (pip install '.[mpi]')")
        return
    script = str(Path(__file__).resolve().parent / "distributed_steps.py")
    # (launcher, BLAS threads, options, CEDF_SHARED_MEMORY): the ranks sum their gradients through
    # shared memory (cedf.distributed's default on one machine), or by MPI_Allreduce for comparison.
    configs = {"2 ranks, a batch each": ([mpiexec, "-n", "2"], "1", ["--per-rank"], "1"),
               "  same, by MPI_Allreduce": ([mpiexec, "-n", "2"], "1", ["--per-rank"], "0"),
               "2 ranks, a batch shared": ([mpiexec, "-n", "2"], "1", [], "1"),
               "1 process x 2 threads": ([], "2", [], "1"), "1 process x 1 thread": ([], "1", [], "1")}
    print("\n-- float32: data-parallel training over MPI, examples per second (global steps per second) --")
    for workload in ("mlp_digits", workloads.MLP_MNIST1D, "mlp_mnist"):
        found = {c: [] for c in configs}
        allreduce, size = {"1": [], "0": []}, None
        for _ in range(rounds):
            for config, (launcher, threads, options, shared) in configs.items():
                env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
                           CEDF_SHARED_MEMORY=shared)
                out = subprocess.run(launcher + [sys.executable, script, workload, *options], capture_output=True,
                                     text=True, env=env, timeout=600, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                found[config].append((result["examples_per_second"], result["steps_per_second"]))
                if result["ranks"] > 1:
                    allreduce[shared].append(result["allreduce_seconds"])
                size = result["gradient_bytes"]
        rate = {c: (statistics.median(e for e, _ in v), statistics.median(s for _, s in v)) for c, v in found.items()}
        one = rate["1 process x 1 thread"][0]
        print(f"{workload}: allreduce_gradients of {size / 1e3:.1f} kB: through shared memory "
              f"{fmt(statistics.median(allreduce['1'])).strip()}, by MPI_Allreduce "
              f"{fmt(statistics.median(allreduce['0'])).strip()}")
        for config, (examples, steps) in rate.items():
            print(f"  {config:<26}{examples:>12.0f} examples/s ({steps:>8.0f} steps/s)   {examples / one:5.2f}x")
        if workload == "mlp_digits":
            # Judged on the rounds' own ratios (each round's 2 ranks against its one process), as
            # the other targets are on pairs: the host's speed drifts from round to round.
            paired = statistics.median(a[0] / b[0] for a, b in zip(found["2 ranks, a batch each"],
                                                                   found["1 process x 1 thread"]))
            judge(name, "float32", "int64", paired, f"median of {rounds} rounds' ratios",
                  f"[examples/s; ratio of the medians {rate['2 ranks, a batch each'][0] / one:.2f}x; a batch shared: "
                  f"{rate['2 ranks, a batch shared'][0] / one:.2f}x, by MPI_Allreduce: "
                  f"{rate['  same, by MPI_Allreduce'][0] / one:.2f}x, 1 process x 2 threads: "
                  f"{rate['1 process x 2 threads'][0] / one:.2f}x]")


def forward_target(judge, dtype_name, dtype, repeat, budget, pairs, pair_budget):
    workload = "mlp_mnist"
    cedf.set_backend("cython")
    forward = interleaved([("cedf", lambda: workloads.edf_forward(cedf, workload, dtype)),
                           ("floor", lambda: workloads.floor_forward(workload, dtype)),
                           ("floor scipy", lambda: workloads.floor_forward(workload, dtype, "scipy"))],
                          repeat, budget)
    ratio, n = paired_ratio(lambda: workloads.edf_forward(cedf, workload, dtype),
                            lambda: workloads.floor_forward(workload, dtype), pairs, pair_budget)
    judge(f"{workload} forward / products", dtype_name, "int64", ratio, f"median of {n} pairs",
          f"[best of rounds: cedf {fmt(forward['cedf']).strip()}, products {fmt(forward['floor']).strip()}, "
          f"through SciPy's BLAS {fmt(forward['floor scipy']).strip()}]")


def memory_checks(judge, dtype_name, dtype, quick):
    cedf.set_backend("cython")
    step = workloads.edf_step(cedf, "mlp_mnist", dtype)
    for _ in range(20):
        step()
    gc.collect()
    tracemalloc.start()
    step()
    base = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    for _ in range(200):
        step()
    growth = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    judge("mlp_mnist 200 steps: tracemalloc peak growth", dtype_name, "int64", growth / 1024)

    step = workloads.edf_step(cedf, "logreg2d", dtype)
    n = 10_000 if quick else 100_000
    for _ in range(1000):
        step()
    before = _rss()
    for _ in range(n):
        step()
    grown = _rss() - before
    judge("logreg2d steps: resident memory growth", dtype_name, "int64", grown / 2**20, f"{n} steps")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def end_to_end_contenders(X, Y, epochs):
    """The contenders of the end-to-end run: [(name, target name or None, maker)], and {target: note} for
    those that cannot run (PyTorch or scikit-learn not installed)."""
    found = [("cedf fit", None, lambda: workloads.cedf_training(X, Y, epochs))]
    missing = {}
    try:
        threads = workloads.torch_default_threads()
        found += [(f"torch ({threads} threads)", "end to end: torch / cedf",
                   lambda: workloads.torch_training(X, Y, epochs, threads=threads)),
                  ("torch 1 thread", "end to end: torch 1 thread / cedf",
                   lambda: workloads.torch_training(X, Y, epochs, threads=1))]
    except ImportError:
        for name in ("end to end: torch / cedf", "end to end: torch 1 thread / cedf"):
            missing[name] = "PyTorch is not installed"
    try:
        workloads.import_sklearn()
        found.append(("scikit-learn", "end to end: scikit-learn / cedf",
                      lambda: workloads.sklearn_training(X, Y, epochs)))
    except ImportError:
        missing["end to end: scikit-learn / cedf"] = "scikit-learn is not installed"
    return found, missing


def end_to_end(judge, epochs, rounds, examples=workloads.MNIST1D.examples):
    """Issue 14, item 6: the whole training of MLP_MNIST1D by each contender, in seconds per epoch.

    Each round builds every contender's model afresh (untimed) and times its
    whole training of `epochs` epochs, the contenders in turn (in reverse
    order every other round), each after a pause for the other libraries'
    threads to stop spinning. The table shows each one's best round; the
    targets judge the median over rounds of the round's time / cedf's.
    """
    cfg = workloads.MNIST1D
    cedf.set_backend("cython")
    X, Y = workloads.mnist1d_data(examples)
    found, missing = end_to_end_contenders(X, Y, epochs)
    print(f"\n== float32: end to end: {'-'.join(map(str, cfg.widths))} ReLU MLP, Adam lr {cfg.lr:g}, "
          f"batch {cfg.batch}, {epochs} epoch{'s' if epochs > 1 else ''} over {len(X)} synthetic examples ==")
    # A short warm-up of each (imports, first allocations, cedf's first plan): 1 epoch of 4 batches.
    for _, _, make in end_to_end_contenders(X[:4 * cfg.batch], Y[:4 * cfg.batch], 1)[0]:
        make().train()
    per_epoch = {name: [] for name, _, _ in found}
    last = {}
    for r in range(rounds):
        for name, _, make in (found if r % 2 == 0 else found[::-1]):
            model = make()
            gc.collect()
            time.sleep(0.25)
            t0 = time.perf_counter()
            history = model.train()
            per_epoch[name].append((time.perf_counter() - t0) / epochs)
            last[name] = history[-1]
    base = per_epoch["cedf fit"]
    steps = -(-len(X) // cfg.batch)
    print(f"{'contender':<20}{'s / epoch':>12}{'per step':>14}{'/ cedf':>9}{'last loss':>11}{'accuracy':>10}")
    for name, _, _ in found:
        t = min(per_epoch[name])
        ratio = statistics.median(o / c for o, c in zip(per_epoch[name], base))
        loss, accuracy = last[name]
        print(f"{name:<20}{t:>12.4f}{fmt(t / steps):>14}{ratio:>9.2f}{loss:>11.4f}"
              + (f"{accuracy:>10.3f}" if accuracy is not None else f"{'-':>10}"))
    print(f"(s / epoch: a whole training's time / {epochs}, best of {rounds} round{'s' if rounds > 1 else ''}; "
          f"'/ cedf': median over the rounds of the round's time / cedf's; scikit-learn reports no training accuracy)")
    for name, target, _ in found:
        if target is not None:
            ratio = statistics.median(o / c for o, c in zip(per_epoch[name], base))
            judge(target, "float32", "int64", ratio, f"median of {rounds} round{'s' if rounds > 1 else ''}",
                  f"[{name} {min(per_epoch[name]):.4f} s/epoch, cedf {min(base):.4f}]")
    for target, note in missing.items():
        judge.skip(target, "float32", "int64", note)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--workload", nargs="+", default=list(workloads.WORKLOADS), choices=list(workloads.WORKLOADS),
                        help="the workloads of the step table and of the step / floor targets")
    parser.add_argument("--labels", nargs="+", default=list(LABELS), choices=list(LABELS),
                        help="the label kinds of the targets judged with both")
    parser.add_argument("--only", nargs="+", default=list(PARTS), choices=list(PARTS), metavar="PART",
                        help=f"run only these parts, of: {', '.join(PARTS)}")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs of the end-to-end training (default {workloads.MNIST1D.epochs}; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="shorter timings, for a smoke test")
    args = parser.parse_args()
    repeat, budget = (2, 0.05) if args.quick else (7, 0.2)
    pairs, pair_budget = (5, 0.005) if args.quick else (41, 0.02)
    rounds = 1 if args.quick else 5
    epochs = args.epochs or (2 if args.quick else workloads.MNIST1D.epochs)
    parts = set(args.only)

    print(f"cedf {cedf.__version__} (BLAS: {cedf.get_blas()}'s), numpy {np.__version__}, {os.cpu_count()} cores; "
          f"times: best of {repeat} rounds; target ratios: median of {pairs} pairs"
          + (" (--quick: a smoke test, not a measurement)" if args.quick else ""))
    print(host_check(args.quick))
    judge = Judge(args.dtype, args.labels)
    for dtype_name in args.dtype:
        dtype = np.dtype(dtype_name).type
        table = step_table(dtype_name, dtype, args.workload, repeat, budget) if "table" in parts else {}
        print(f"\n-- {dtype_name}: targets --")
        if "table" in parts and "logreg2d" in table:
            times = table["logreg2d"]
            for other in ("lecture", "torch"):
                if other in times:
                    judge(f"logreg2d {other} / cedf", dtype_name, "int64", times[other] / times["cedf"],
                          f"best of {repeat} rounds")
                else:
                    judge.skip(f"logreg2d {other} / cedf", dtype_name, "int64", "PyTorch is not installed")
        if "floor" in parts:
            floor_targets(judge, dtype_name, dtype, args.workload, args.labels, table, pairs, pair_budget)
        if "optim" in parts:
            optim_targets(judge, dtype_name, dtype, args.labels, pairs, pair_budget)
        if "fit" in parts:
            fit_targets(judge, dtype_name, dtype, args.labels, pairs, pair_budget)
        if "forward" in parts and "mlp_mnist" in args.workload:
            forward_target(judge, dtype_name, dtype, repeat, budget, pairs, pair_budget)
        if "memory" in parts:
            memory_checks(judge, dtype_name, dtype, args.quick)
        if "cnn" in parts and dtype_name == "float32":
            cnn_targets(judge, dtype_name, dtype, pairs, pair_budget)
    if "distributed" in parts and "float32" in args.dtype:
        distributed_targets(judge, rounds)
    if "end-to-end" in parts:
        end_to_end(judge, epochs, rounds)
    print("\n" + host_check(args.quick))
    judge.summary()


if __name__ == "__main__":
    main()
