"""Collectives across processes over MPI (mpi4py), in torch.distributed's shape.

Start every rank with an MPI launcher and call `init()` once; a process started without a
launcher is a world of one:

    mpiexec -n 2 python train.py     # Open MPI's mpiexec: pip install 'vkgrad[distributed]'

>>> import vkgrad.distributed as dist
>>> dist.init()
>>> t = vk.tensor([float(dist.rank())], device=dist.device())
>>> dist.all_reduce(t, op="sum")            # in place: every rank now holds 0 + 1 + ...

MPI moves host buffers, so tensors of any device and dtype take part: a Vulkan tensor is copied
to the host in one transfer and back in one. bfloat16 travels as bfloat16 (2 bytes an element):
the ranks' values are all-gathered and reduced in float32 over the rank axis, in rank order, and
rounded once, so every rank gets the same, once-rounded result (an MPI reduction tree with a
user-defined bf16 op would round at every step of the tree, N - 1 times).

`init()` also makes an exception that escapes any rank end the whole job: the rank prints its
traceback prefixed with its rank and calls MPI_Abort, so the other ranks do not wait forever in
a collective. DistributedDataParallel (vkgrad.nn.parallel) builds on `start_all_reduce`.
"""
import sys
import traceback

import numpy as np

from . import dtypes
from .autograd import no_grad
from .device import _PREFERENCE, device as as_device, devices
from .tensor import Tensor, from_numpy

__all__ = ["all_gather", "all_reduce", "allgather_object", "barrier", "broadcast", "device", "init",
           "is_initialized", "local_rank", "rank", "reduce_scatter", "start_all_reduce",
           "world_size"]

INSTALL_HINT = ("vkgrad.distributed needs mpi4py and an MPI library: pip install "
                "'vkgrad[distributed]' (mpi4py and Open MPI's wheel) or pip install mpi4py "
                "into an environment with a system MPI")
OPS = ("sum", "mean", "max", "min")

_comm = None         # MPI.COMM_WORLD once init() ran
_local_rank = None   # rank among the processes that share this machine


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return MPI


def init():
    """Join the job the MPI launcher started (rank and size come from it; without a launcher
    this process is rank 0 of 1). Call once per process, before any other function here."""
    global _comm, _local_rank
    if _comm is not None:
        raise RuntimeError("vkgrad.distributed.init() was already called in this process")
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    _local_rank = node.Get_rank()
    node.Free()
    _comm = comm
    _abort_on_uncaught_exception(comm)


def _abort_on_uncaught_exception(comm):
    """An exception that ends one rank ends the job: print it, naming the rank, then abort every
    rank (a rank that merely exited would leave the others blocked in their next collective)."""
    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write("".join(f"[rank {comm.Get_rank()}] {line}\n"
                                 for line in text.rstrip("\n").split("\n")))
        sys.stderr.write(f"vkgrad.distributed: rank {comm.Get_rank()} of {comm.Get_size()} "
                         f"raised {kind.__name__}; aborting the job\n")
        sys.stderr.flush()
        comm.Abort(1)
    sys.excepthook = hook


def is_initialized():
    """Whether init() has run in this process."""
    return _comm is not None


def _world(what):
    if _comm is None:
        raise RuntimeError(f"vkgrad.distributed.{what}() called before "
                           "vkgrad.distributed.init(): call init() once at the start of every "
                           "rank (under mpiexec, or alone for a world of one)")
    return _comm


def rank():
    """This process's rank, 0 .. world_size() - 1."""
    return _world("rank").Get_rank()


def world_size():
    """The number of processes in the job."""
    return _world("world_size").Get_size()


def local_rank():
    """This process's rank among the processes of the job on the same machine."""
    _world("local_rank")
    return _local_rank


def barrier():
    """Wait until every rank has called barrier()."""
    _world("barrier").Barrier()


def device(spec=None):
    """The device this rank trains on: `spec` if given (a device or a string such as "host" or
    "vulkan:1"), else `vulkan:{i}` for the local_rank()-th Vulkan GPU when this machine has a GPU
    for each of its ranks, else the host. CPU Vulkan drivers (lavapipe) are not counted, as in
    vkgrad.best_device(): numpy on the same cores is faster; name one to use it."""
    if spec is not None:
        return as_device(spec)
    comm = _world("device")
    gpus = [d for d in devices()[1:] if _PREFERENCE[d.info()["device_type"]] <= 2]
    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    ranks_here = node.Get_size()
    node.Free()
    return gpus[_local_rank] if len(gpus) >= ranks_here else as_device("host")


# ---- collectives ---------------------------------------------------------------------------------
def _gathers(dtype):
    """Whether values of `dtype` are reduced by all-gather and a float32 sum (2-byte floats,
    which MPI has no type for)."""
    return dtype is dtypes.bfloat16


def _check_op(op, dtype):
    if op not in OPS:
        raise ValueError(f"unknown reduction op {op!r}: use one of {', '.join(OPS)}")
    if op == "mean" and not dtype.is_floating:
        raise ValueError(f"op='mean' needs a floating tensor, not {dtype.name}")


def _mpi_op(op):
    MPI = _mpi()
    return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def _reduce_ranks(parts, op):
    """The reduction over axis 0 (one entry per rank) of the 2-byte-float array `parts`, in
    float32, in rank order, rounded once to parts' dtype ("mean": the sum over the count)."""
    wide = parts.astype(np.float32)
    reduced = {"sum": np.sum, "mean": np.sum, "max": np.max, "min": np.min}[op](wide, 0)
    if op == "mean":
        reduced /= np.float32(len(parts))
    return reduced.astype(parts.dtype)


def _divide_for_mean(array, op, n):
    """An MPI sum made a mean: `array` divided by the world size in place (op "mean")."""
    if op == "mean":
        np.divide(array, array.dtype.type(n), out=array)
    return array


class Work:
    """A started collective (torch's Work): wait() completes it and returns its result.
    It holds the collective's `buffers` until then: mpi4py (4.1.2) keeps no reference to the
    arrays of a non-blocking call, and MPI reads and writes them until the call completes."""

    def __init__(self, request, finish, buffers=()):
        self._request, self._finish, self._result = request, finish, None
        self._buffers = buffers

    def is_completed(self):
        """Whether the collective has finished (drives MPI's progress; does not block)."""
        return self._finish is None or self._request is None or self._request.Test()

    def wait(self):
        if self._finish is not None:
            if self._request is not None:
                self._request.Wait()
            self._result, self._finish, self._buffers = self._finish(), None, ()
        return self._result


def start_all_reduce(array, op="sum", blocking=False):
    """Start reducing the numpy array `array` (C-contiguous) over all ranks without blocking
    (MPI_Iallreduce; MPI_Iallgather then a float32 reduction for bfloat16). Returns a Work whose
    wait() returns the reduced array: `array` itself, reduced in place, except for bfloat16.
    "mean" divides the float sum by world_size(). blocking=True does the reduction now, with
    the blocking MPI calls: Open MPI's non-blocking all-reduce of 25 MB took 1.8x as long as
    its blocking one on 2 ranks here (docs/distributed.md)."""
    comm = _world("start_all_reduce")
    dtype = dtypes.dtype(array.dtype)
    _check_op(op, dtype)
    MPI, n = _mpi(), comm.Get_size()
    if _gathers(dtype):
        gathered = np.empty((n,) + array.shape, array.dtype)
        send, recv = array.view(np.uint16), gathered.view(np.uint16)
        request = None if blocking else comm.Iallgather(send, recv)
        if blocking:
            comm.Allgather(send, recv)
        return Work(request, lambda: _reduce_ranks(gathered, op), (array, gathered))
    request = None if blocking else comm.Iallreduce(MPI.IN_PLACE, array, _mpi_op(op))
    if blocking:
        comm.Allreduce(MPI.IN_PLACE, array, _mpi_op(op))
    return Work(request, lambda: _divide_for_mean(array, op, n), (array,))


def _host_array(t, what):
    """(a C-contiguous numpy array of t's values, whether it is t's own memory): a host tensor
    that is contiguous and writeable is worked on in place, anything else through a copy."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected a vkgrad Tensor, not {type(t).__name__}")
    a = t.numpy()
    if t.device.kind == "host" and a.flags.c_contiguous and a.flags.writeable:
        return a, True
    return np.array(a, order="C", copy=True), False


def _write(t, array):
    """Copy `array` into tensor `t` in place (one transfer to a Vulkan device)."""
    with no_grad():
        t[...] = from_numpy(array, device=t.device, dtype=t.dtype)


def _wrote(t):
    """MPI wrote host tensor `t`'s own memory (_host_array's): the host backend forgets what
    it kept of the old values (NumpyBackend.wrote)."""
    t.device.backend.wrote(t._data)


def all_reduce(tensor, op="sum", async_op=False):
    """Reduce `tensor` over all ranks, in place: afterwards every rank holds the elementwise
    sum, mean, max or min of the ranks' values. With async_op=True, returns a Work: the result
    is in `tensor` once its wait() returned."""
    _world("all_reduce")
    _check_op(op, tensor.dtype)
    array, own = _host_array(tensor, "all_reduce")
    work = start_all_reduce(array, op, blocking=not async_op)

    def finish():
        result = work.wait()
        if own and result is array:
            _wrote(tensor)
        else:
            _write(tensor, result)
    done = Work(work._request, finish)   # completes when `work` does
    if async_op:
        return done
    done.wait()
    return None


def broadcast(tensor, src=0):
    """Copy rank `src`'s `tensor` into `tensor` on every other rank (in place)."""
    comm = _world("broadcast")
    if not 0 <= src < comm.Get_size():
        raise ValueError(f"broadcast: src={src} is not a rank of a world of {comm.Get_size()}")
    array, own = _host_array(tensor, "broadcast")
    comm.Bcast(array.reshape(-1).view(np.uint8), root=src)
    if comm.Get_rank() != src and own:
        _wrote(tensor)
    elif comm.Get_rank() != src:
        _write(tensor, array)


def all_gather(tensor_list, tensor):
    """Fill `tensor_list[r]` with rank r's `tensor` for every rank r (torch's shape: the list
    holds world_size() tensors of `tensor`'s shape and dtype, on any device)."""
    comm = _world("all_gather")
    n = comm.Get_size()
    if len(tensor_list) != n:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors for a world "
                         f"of {n}")
    for i, t in enumerate(tensor_list):
        if not isinstance(t, Tensor) or t.shape != tensor.shape or t.dtype is not tensor.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] must be a Tensor of shape "
                             f"{tensor.shape} and dtype {tensor.dtype.name} like the input")
    array, _ = _host_array(tensor, "all_gather")
    gathered = np.empty((n,) + array.shape, array.dtype)
    comm.Allgather(array.reshape(-1).view(np.uint8), gathered.reshape(-1).view(np.uint8))
    for t, part in zip(tensor_list, gathered):
        _write(t, part)


def reduce_scatter(output, input_list, op="sum", async_op=False):
    """Fill `output` on rank r with the reduction ("sum", "mean", "max" or "min") over all
    ranks of their `input_list[r]` (torch's shape: world_size() tensors of output's shape and
    dtype, on any device). MPI_Reduce_scatter_block: the list is packed into one host buffer,
    and each rank receives only its reduced block, so a rank moves about (n - 1) / n of the
    list each way rather than an all-reduce's 2 (n - 1) / n. bfloat16 travels as bfloat16
    (MPI_Alltoall: rank r receives every rank's input_list[r]) and is reduced in float32 in
    rank order and rounded once, as in all_reduce. With async_op=True (MPI_Ireduce_scatter_block,
    MPI_Ialltoall), returns a Work: the result is in `output` once its wait() returned."""
    comm = _world("reduce_scatter")
    n = comm.Get_size()
    if not isinstance(output, Tensor):
        raise TypeError(f"reduce_scatter: expected a vkgrad Tensor, not {type(output).__name__}")
    _check_op(op, output.dtype)
    if len(input_list) != n or any(not isinstance(t, Tensor) or t.shape != output.shape
                                   or t.dtype is not output.dtype for t in input_list):
        raise ValueError(f"reduce_scatter: input_list must hold {n} tensors of shape "
                         f"{output.shape} and dtype {output.dtype.name} like the output")
    send = np.empty((n,) + output.shape, output.dtype.np_dtype)
    for q, t in enumerate(input_list):
        send[q] = t.numpy()                       # one transfer per Vulkan tensor
    if _gathers(output.dtype):
        parts = np.empty_like(send)
        request = (comm.Ialltoall if async_op else comm.Alltoall)(send.view(np.uint16),
                                                                    parts.view(np.uint16))
        buffers = (send, parts)

        def finish():
            _write(output, _reduce_ranks(parts, op))
    else:
        a = output.numpy() if output.device.kind == "host" else None
        own = a is not None and a.flags.c_contiguous and a.flags.writeable
        recv = a if own else np.empty(output.shape, output.dtype.np_dtype)
        request = (comm.Ireduce_scatter_block if async_op else comm.Reduce_scatter_block)(
            send, recv, _mpi_op(op))
        buffers = (send, recv)

        def finish():
            _divide_for_mean(recv, op, n)
            if own:
                _wrote(output)
            else:
                _write(output, recv)
    done = Work(request, finish, buffers)   # a blocking call returned None: wait() finishes
    if async_op:
        return done
    done.wait()
    return None


def allgather_object(obj):
    """Every rank's picklable `obj`, as a list indexed by rank."""
    return _world("allgather_object").allgather(obj)
