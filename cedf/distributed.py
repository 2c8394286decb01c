"""Data-parallel training over MPI (mpi4py): the same model on every process, a share of each batch.

Horovod's design, in the lecture's style: every rank (process) builds the same
graph, `broadcast_parameters` gives every rank rank 0's parameter values, each
rank runs ``Forward(); Backward(L)`` on its share of the global batch, and
`allreduce_gradients` turns every ``.grad`` into the gradient of the mean loss
over the **global** batch, after which every rank takes the same update and
the parameters stay equal everywhere::

    from cedf import distributed as dist
    rank, size = dist.init()
    dist.broadcast_parameters()
    for ...:
        edf.Forward(); edf.Backward(L)
        dist.allreduce_gradients()
        edf.UpdateParameters()          # or opt.step()

    mpiexec -n 4 python train.py        # pip install "cedf[mpi]": mpi4py and MPICH, as wheels

Exact: a rank's gradients are means over its `b` examples (the last Backward's
batch); each is weighed by `b`, the weighed gradients and the `b`s are summed
over the ranks in one allreduce, and the sum divided by the global batch B. So
ranks with unequal shares (a global batch of 101 over 3 ranks) give the mean
over all B examples, as one process on the global batch does, up to the order
of the sums (float64: about 1e-15 relative per step).

Efficient: one allreduce per step (per dtype of parameters) over one flat
buffer that holds every gradient (Horovod's tensor fusion), with the batch size
in its last entry. The gradients live in that buffer from the first call on:
each parameter's ``.grad`` becomes a view of it, which the compiled plan writes
as it wrote the old array, so nothing is copied per step and no Python runs per
parameter (a check, in C, that every ``.grad`` is still its view; one that is
not is copied in and made one again).

The allreduce: when every rank runs on one machine, through an MPI
shared-memory window (``MPI_Win_allocate_shared``; see `cedf._allreduce`): each
rank copies its buffer into its slot, waits for the others' and sums them all
(`allreduce_gradients` of mlp_digits' 9.6 kB between two ranks in lockstep:
2.0-3.9 us here, against 8.1-10.2 us by MPICH's ``MPI_Allreduce``). Across machines, or with ``CEDF_SHARED_MEMORY=0``,
MPI's own ``MPI_Allreduce``, in place (``MPI_IN_PLACE``). `transport` says
which a graph's gradients take.
"""
import math
import os
from types import SimpleNamespace

import numpy as np

from . import checkpoint
from .graph import current_graph
from .nodes import describe

try:
    from . import _allreduce
except ImportError as exc:   # a source folder without the built extensions (cedf warned at import)
    raise ImportError(f"cedf.distributed needs cedf's compiled extension cedf._allreduce, which this cedf lacks "
                      f"({exc}): install cedf (pip install cedf, or pip install . in its source folder) and run "
                      f"Python from another folder") from None

#: last: the fusion of the graph whose gradients the ranks summed last (see allreduce_gradients).
_state = SimpleNamespace(comm=None, MPI=None, node=None, last=None)
_INSTALL = ("cedf.distributed needs mpi4py and an MPI library: pip install 'cedf[mpi]' (mpi4py with MPICH as "
            "wheels; a system MPI is used instead when mpi4py was built against one), then start the processes "
            "with `mpiexec -n 4 python train.py`")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc})") from None
    return MPI


def init(comm=None):
    """Use MPI communicator `comm` (default ``MPI.COMM_WORLD``); returns ``(rank, size)``.

    Not under mpiexec, the world is this one process: ``(0, 1)``.
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"cedf.distributed.init: comm must be an mpi4py communicator, got {type(comm).__name__}")
    _state.comm, _state.MPI, _state.node, _state.last = comm, MPI, None, None
    return comm.Get_rank(), comm.Get_size()


def _comm(caller):
    if _state.comm is None:
        raise RuntimeError(f"cedf.distributed.{caller}: call cedf.distributed.init() first")
    return _state.comm


def rank():
    return _comm("rank").Get_rank()


def size():
    return _comm("size").Get_size()


def share(n, rank, size):
    """The examples [start, stop) of `rank` among `size` ranks in a batch of `n`: contiguous, in rank
    order, the first ``n % size`` ranks one more (as `np.array_split`)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard(*arrays):
    """This rank's part of each array (its rows `share`), e.g. ``Xs, ys = dist.shard(X, y)``."""
    comm = _comm("shard")
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"cedf.distributed.shard: the arrays have different lengths {sorted(lengths)}")
    start, stop = share(lengths.pop() if lengths else 0, comm.Get_rank(), comm.Get_size())
    parts = tuple(np.asarray(a)[start:stop] for a in arrays)
    return parts[0] if len(parts) == 1 else parts


def _signature(graph):
    return [(tuple(np.shape(p.value)), str(np.asarray(p.value).dtype)) for p in graph.Parameters]


def _check_same_graph(comm, graph, caller, rebuild=False):
    """Raise on every rank, with the same message, unless every rank's parameters match rank 0's;
    else whether any rank passed `rebuild` (then every rank makes its fusion anew, together)."""
    gathered = comm.allgather((_signature(graph), rebuild))
    signatures = [signature for signature, _ in gathered]
    ours = signatures[0]
    for r, theirs in enumerate(signatures):
        if theirs == ours:
            continue
        if len(theirs) != len(ours):
            what = f"{len(theirs)} parameters, rank 0 has {len(ours)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            what = (f"parameter {i} has shape {theirs[i][0]} and dtype {theirs[i][1]}, "
                    f"on rank 0 shape {ours[i][0]} and dtype {ours[i][1]}")
        raise ValueError(f"cedf.distributed.{caller}: rank {r}'s graph differs from rank 0's: {what}; every "
                         f"rank must build the same graph (same layers, sizes and cedf.DT)")
    return any(wanted for _, wanted in gathered)


def _shared_memory_wanted():
    wanted = os.environ.get("CEDF_SHARED_MEMORY", "1")
    if wanted not in ("0", "1"):
        raise ValueError(f"cedf.distributed: CEDF_SHARED_MEMORY={wanted!r}: expected 1 (sum the gradients of ranks "
                         f"on one machine through shared memory, the default) or 0 (always MPI_Allreduce)")
    return wanted == "1"


def _machine(comm):
    """The ranks of `comm` on this machine, as a communicator of their own (once per `init`)."""
    if _state.node is None:
        _state.node = comm.Split_type(_state.MPI.COMM_TYPE_SHARED)
    return _state.node


class _Fusion:
    """The flat gradient buffers of one graph's parameters, one per dtype, each with a last entry
    for the batch size; every ``.grad`` a view of its buffer. Made by every rank at once (its
    shared window is made collectively)."""

    def __init__(self, params, comm):
        self.params = tuple(params)
        self.groups = []
        for dtype in dict.fromkeys(np.asarray(p.value).dtype for p in self.params):
            members = [p for p in self.params if np.asarray(p.value).dtype == dtype]
            flat = np.zeros(sum(np.size(p.value) for p in members) + 1, dtype)
            views, offset = [], 0
            for p in members:
                size = np.size(p.value)
                views.append(flat[offset:offset + size].reshape(np.shape(p.value)))
                offset += size
            self.groups.append((tuple(members), tuple(views), flat))
        view_of = {id(p): view for members, views, _ in self.groups for p, view in zip(members, views)}
        self.views = tuple(view_of[id(p)] for p in self.params)   # in the graph's order
        self.adopt()
        self.windows, self.sums = [], [None] * len(self.groups)
        if _shared_memory_wanted() and comm.Get_size() > 1 and _machine(comm).Get_size() == comm.Get_size():
            self.sums = [self._shared_sum(_machine(comm), flat) for _, _, flat in self.groups]
        self.transport = "MPI_Allreduce" if None in self.sums else "shared memory"

    def _shared_sum(self, machine, flat):
        """A shared window with two slots of `flat`'s size per rank (and the counter), and its sum."""
        header, slot = 64, -(-flat.nbytes // 64) * 64    # the slots apart by whole cache lines
        window = _state.MPI.Win.Allocate_shared(header + 2 * slot, 1, comm=machine)
        self.windows.append(window)
        parts = [np.frombuffer(window.Shared_query(r)[0], np.uint8) for r in range(machine.Get_size())]
        slots = [part[header + parity * slot:][:flat.nbytes].view(flat.dtype) for parity in (0, 1) for part in parts]
        counter = parts[0][:8].view(np.uint64)
        if machine.Get_rank() == 0:
            counter[0] = 0
        machine.Barrier()   # the counter is zero before any rank arrives
        return _allreduce.SharedSum(flat, slots, counter, machine.Get_rank())

    def free(self):
        """Free the shared windows (collective: every rank replaces its fusion at the same call)."""
        if not _state.MPI.Is_finalized():
            for window in self.windows:
                window.Free()
        self.windows, self.sums = [], [None] * len(self.groups)

    def adopt(self):
        """Make every ``.grad`` its view again, with the gradient it holds (zeros for none)."""
        for members, views, _ in self.groups:
            for p, view in zip(members, views):
                if p.grad is not view:
                    view[...] = 0 if p.grad is None else p.grad
                    p.grad = view



def _fusion(graph, caller, check=False):
    """The graph's fusion, made anew (on every rank: the callers are collective) when its parameters
    changed, its buffers made every ``.grad`` again where one was replaced. Every rank's graph is
    compared with rank 0's when the fusion is made, or with `check` at every call."""
    fusion = getattr(graph, "_fusion", None)
    state = 1 if fusion is None else _allreduce.fusion_state(graph.Parameters, fusion.params, fusion.views)
    if check or state == 1:
        # Every rank's buffers must have the same sizes: a rank would read past another's slot. And
        # a new fusion is made by all ranks or none (its window is made together).
        if _check_same_graph(_state.comm, graph, caller, rebuild=state == 1):
            state = 1
    if state == 1:   # after the comparison: every rank has the same parameters, so all raise here or none
        for p in graph.Parameters:
            if not isinstance(p.value, np.ndarray) or p.value.dtype.kind != "f":
                raise TypeError(f"cedf.distributed: {describe(p)}: its value must be a float array to be "
                                f"reduced, got {type(p.value).__name__}")
    if state == 2:
        fusion.adopt()
    elif state == 1:
        if fusion is not None:
            fusion.free()
        fusion = graph._fusion = _Fusion(graph.Parameters, _state.comm)
    _state.last = fusion
    return fusion


def transport(graph=None):
    """How `allreduce_gradients` sums the gradients of `graph` (default the current one): "shared
    memory" when every rank runs on this machine, else (or with CEDF_SHARED_MEMORY=0) "MPI_Allreduce".
    Collective (every rank calls it) only before the graph's first `broadcast_parameters` or
    `allreduce_gradients`, which make its fused buffers; after them, one rank may ask alone."""
    _comm("transport")
    graph = current_graph() if graph is None else graph
    fusion = getattr(graph, "_fusion", None)
    if fusion is not None:
        return fusion.transport   # the fusion in use (a changed graph gets its new one in the next sum)
    return _fusion(graph, "transport").transport


def broadcast_parameters(graph=None, root=0):
    """Give every rank rank `root`'s parameter values (of `graph`, default the current one).

    First checks that every rank's graph has the same parameters (count, shapes,
    dtypes): a difference raises a ValueError on every rank, naming it, instead
    of a hang or a wrong sum later.
    """
    comm = _comm("broadcast_parameters")
    graph = current_graph() if graph is None else graph
    for members, _, _ in _fusion(graph, "broadcast_parameters", check=True).groups:
        values = np.concatenate([np.asarray(p.value).reshape(-1) for p in members])
        comm.Bcast(values, root=root)
        offset = 0
        for p in members:
            size = np.size(p.value)
            piece = values[offset:offset + size].reshape(np.shape(p.value))
            if p.value.flags.writeable:
                p.value[...] = piece
            else:
                p.value = piece.copy()
            offset += size


def allreduce_gradients(graph=None, batch=None, total=None):
    """Make every ``.grad`` of `graph` the gradient of the mean loss over the global batch.

    `batch`: the number of examples this rank's gradients are the mean over;
    by default the last Backward's (``graph.batch``). A rank whose share of a
    batch is empty passes ``batch=0`` (its gradients then count for nothing).
    `total`: the global batch, when the caller knows it (`fit` does): the
    gradients are then scaled once, before the sum, instead of before and after
    it; the sum of the ranks' batches is still checked against it.
    """
    comm = _comm("allreduce_gradients")
    graph = current_graph() if graph is None else graph
    fusion = getattr(graph, "_fusion", None)
    mine = graph.batch if batch is None else batch
    sums = () if fusion is None else fusion.sums
    if (total is None and len(sums) == 1 and sums[0] is not None and _whole(mine)
            and _allreduce.fusion_state(graph.Parameters, fusion.params, fusion.views) == 0):
        # The usual step without the general path's bookkeeping (0.4-0.9 us of a two-rank
        # allreduce of 3.5 us on mlp_digits): one dtype, through shared memory, nothing to check
        # or adopt. It sends what the general path would, and the sum is judged alike.
        summed = _shared_run(sums[0], mine)
        _state.last = fusion
        if not summed > 0:   # NaN, a changed graph's mark or no example: as the general path says
            _judge(comm, graph, summed, None, False, batch, total)
        return
    summed, refused, changed = _sum_any(comm, graph, fusion, batch, total)
    _judge(comm, graph, summed, refused, changed, batch, total)


def _sum_any(comm, graph, fusion, batch, total):
    """allreduce_gradients' sum in general: (the global batch, or what the ranks said instead; this
    rank's refusal or None; whether this rank's parameters changed)."""
    # Every refusal below happens after the sum, not before: the other ranks wait in it, and a
    # NaN batch makes every rank's sum refuse this step with them.
    refused = None
    if batch is None:
        batch = graph.batch
        if batch is None:
            refused = RuntimeError("cedf.distributed.allreduce_gradients: no Backward(L) ran on this graph yet; "
                                   "call it first, or pass batch=0 on a rank that has no examples in this step")
    if refused is None and not _whole(batch):
        refused = ValueError(f"cedf.distributed.allreduce_gradients: batch must be the number of examples (a whole "
                             f"number, 0 or more, below 2**39) this rank's gradients are the mean over, got {batch!r}")
    if refused is None and total is not None and not (_whole(total) and total > 0):
        refused = ValueError(f"cedf.distributed.allreduce_gradients: total must be the global batch (a whole number, "
                             f"1 or more, the same on every rank), got {total!r}")
    if refused is not None:
        batch, total = float("nan"), None
    changed = False
    if fusion is None and _state.last is not None:
        # A graph new to this rank while the others may wait in the sum of the last one: say so
        # through that one's buffers, as a changed graph does.
        fusion, changed = _state.last, True
    elif fusion is None:   # the very first: made by every rank at once, as every call here is
        fusion = _fusion(graph, "allreduce_gradients")
    else:
        # The parameter list changed since the fusion was made (or a value's shape or dtype): a
        # new one is made by every rank at once, or by none. This rank says so in the batch it
        # sends (the other ranks may wait in the sum already, through the old fusion), and every
        # rank decides alike from the sum.
        state = _allreduce.fusion_state(graph.Parameters, fusion.params, fusion.views)
        changed = state == 1
        if state == 2:
            fusion.adopt()
    sent = batch if refused is not None or not changed else -_CHANGED
    MPI = _state.MPI
    sums = []
    for (_, _, flat), shared in zip(fusion.groups, fusion.sums):   # every group, whatever the first gave
        if shared is not None:
            sums.append(_shared_run(shared, sent))   # (sums nothing unless every batch is a number of examples)
        else:
            # The batches first, on their own: a sum of gradients that another rank then refuses
            # could not be undone, and the gradients of this step would be lost.
            agreed = np.array([sent], np.float64)
            comm.Allreduce(MPI.IN_PLACE, agreed, op=MPI.SUM)
            summed = agreed[0]
            if np.isfinite(summed) and summed > 0:
                grads = flat[:-1]
                grads *= batch if total is None else batch / total
                comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
                if total is None:
                    grads *= 1 / summed
                flat[-1] = summed
            sums.append(summed)
        _state.last = fusion
    return sums[0], refused, changed   # (the same in every group: every rank sent the same batch to each)


def _shared_run(shared, sent):
    """One group's sum through shared memory (`_allreduce.SharedSum.run`), refused once MPI is gone."""
    if _state.MPI.Is_finalized():   # the window's memory is gone with MPI
        raise RuntimeError("cedf.distributed.allreduce_gradients: MPI was finalized")
    return shared.run(sent)


def _judge(comm, graph, summed, refused, changed, batch, total):
    """Raise what allreduce_gradients must after a sum that gave `summed`; on the general path,
    a new fusion is made and summed through when every rank's parameters changed."""
    if refused is not None:
        raise refused
    if not math.isfinite(summed):
        raise ValueError("cedf.distributed.allreduce_gradients: another rank's batch was no number of examples "
                         "(its own error says which); this step's gradients are lost: run Backward again")
    if summed <= -_CHANGED / 2:
        wanting = round(-summed / _CHANGED)
        if wanting == comm.Get_size():   # every rank changed its graph: they make the new fusion together
            _fusion(graph, "allreduce_gradients")
            return allreduce_gradients(graph, batch, total)
        raise ValueError(f"cedf.distributed.allreduce_gradients: the parameters of {wanting} of the "
                         f"{comm.Get_size()} ranks' graphs changed since their last allreduce"
                         f"{' (this one among them)' if changed else ' (not this one)'}; every rank must "
                         f"change its graph alike before the same step: build the same graph on every rank, "
                         f"then call broadcast_parameters() on every rank")
    if summed <= 0:
        raise ValueError("cedf.distributed.allreduce_gradients: no rank had any example in this step")
    if total is not None and summed != total:
        raise ValueError(f"cedf.distributed.allreduce_gradients: the ranks' batches sum to {summed:g}, "
                         f"not to the total {total} given (every rank must give the same total)")


def _whole(number):
    """Whether `number` is a whole number of examples, 0 or more, below 2**39 (far from _CHANGED)."""
    if type(number) is int:   # the usual case, at every step: spared NumPy's isfinite (0.8 us)
        return 0 <= number < 2 ** 39
    return (isinstance(number, (int, float, np.integer, np.floating)) and not isinstance(number, (bool, np.bool_))
            and math.isfinite(number) and 0 <= number < 2 ** 39 and float(number).is_integer())


#: What a rank whose parameters changed sends for its batch: far below any sum of real batches
#: (exact in float32 too), so that the sum says how many ranks sent it.
_CHANGED = float(2 ** 40)


def reduce_sum(*numbers):
    """The sums over the ranks of `numbers` (float64), e.g. an epoch's loss and correct answers."""
    comm = _comm("reduce_sum")
    buffer = np.array(numbers, np.float64)
    comm.Allreduce(_state.MPI.IN_PLACE, buffer, op=_state.MPI.SUM)
    return buffer


def save(path, graph=None):
    """`cedf.save` by rank 0 alone (every rank holds the same parameters); the others wait for it."""
    comm = _comm("save")
    error = None
    if comm.Get_rank() == 0:
        try:
            checkpoint.save(path, graph)
        except Exception as exc:   # told to every rank below, raised on each
            error = f"{type(exc).__name__}: {exc}"
    error = comm.bcast(error, root=0)
    if error is not None:
        raise RuntimeError(f"cedf.distributed.save: rank 0 could not save: {error}")


def load(path, graph=None):
    """`cedf.load` by rank 0, then its values broadcast to every rank (the file need exist on rank 0 only)."""
    comm = _comm("load")
    error = None
    if comm.Get_rank() == 0:
        try:
            checkpoint.load(path, graph)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    error = comm.bcast(error, root=0)
    if error is not None:
        raise RuntimeError(f"cedf.distributed.load: rank 0 could not load: {error}")
    broadcast_parameters(graph)
