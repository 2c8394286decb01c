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

Efficient: one allreduce per step (per dtype of parameters), in place
(``MPI_IN_PLACE``), over one flat buffer that holds every gradient (Horovod's
tensor fusion), with the batch size in its last entry. The gradients live in
that buffer from the first call on: each parameter's ``.grad`` becomes a view
of it, which the compiled plan writes as it wrote the old array, so nothing is
copied per step and no Python runs per parameter (a check, in C, that every
``.grad`` is still its view; one that is not is copied in and made one again).
"""
import operator
from types import SimpleNamespace

import numpy as np

from . import checkpoint
from .graph import current_graph
from .nodes import describe

_state = SimpleNamespace(comm=None, MPI=None)
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
    _state.comm, _state.MPI = comm, MPI
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


def _check_same_graph(comm, graph, caller):
    """Raise on every rank, with the same message, unless every rank's parameters match rank 0's."""
    signatures = comm.allgather(_signature(graph))
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


class _Fusion:
    """The flat gradient buffers of one graph's parameters, one per dtype, each with a last entry
    for the batch size; every ``.grad`` a view of its buffer."""

    def __init__(self, params):
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
            self.groups.append((members, tuple(views), flat))
        self.adopt()

    def adopt(self):
        """Make every ``.grad`` its view again, with the gradient it holds (zeros for none)."""
        for members, views, _ in self.groups:
            for p, view in zip(members, views):
                if p.grad is not view:
                    view[...] = 0 if p.grad is None else p.grad
                    p.grad = view

    def adopted(self):
        grad = operator.attrgetter("grad")
        return all(all(map(operator.is_, map(grad, members), views)) for members, views, _ in self.groups)


def _fusion(graph):
    fusion = getattr(graph, "_fusion", None)
    if fusion is None or fusion.params != tuple(graph.Parameters):
        for p in graph.Parameters:
            if not isinstance(p.value, np.ndarray) or p.value.dtype.kind != "f":
                raise TypeError(f"cedf.distributed: {describe(p)}: its value must be a float array to be "
                                f"reduced, got {type(p.value).__name__}")
        fusion = graph._fusion = _Fusion(graph.Parameters)
    return fusion


def broadcast_parameters(graph=None, root=0):
    """Give every rank rank `root`'s parameter values (of `graph`, default the current one).

    First checks that every rank's graph has the same parameters (count, shapes,
    dtypes): a difference raises a ValueError on every rank, naming it, instead
    of a hang or a wrong sum later.
    """
    comm = _comm("broadcast_parameters")
    graph = current_graph() if graph is None else graph
    _check_same_graph(comm, graph, "broadcast_parameters")
    for members, _, _ in _fusion(graph).groups:
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
    if batch is None:
        batch = graph.batch
        if batch is None:
            raise RuntimeError("cedf.distributed.allreduce_gradients: no Backward(L) ran on this graph yet; call it "
                               "first, or pass batch=0 on a rank that has no examples in this step")
    fusion = _fusion(graph)
    if not fusion.adopted():
        fusion.adopt()
    MPI = _state.MPI
    for _, _, flat in fusion.groups:
        grads = flat[:-1]
        grads *= batch if total is None else batch / total
        flat[-1] = batch
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        summed = flat[-1]
        if total is None:
            if summed <= 0:
                raise ValueError("cedf.distributed.allreduce_gradients: no rank had any example in this step")
            grads *= 1 / summed
        elif summed != total:
            raise ValueError(f"cedf.distributed.allreduce_gradients: the ranks' batches sum to {summed:g}, "
                             f"not to the total {total} given")


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
