"""Data-parallel training: DistributedDataParallel, in torch's shape, over vkgrad.distributed.

>>> import vkgrad.distributed as dist
>>> from vkgrad.nn.parallel import DistributedDataParallel as DDP
>>> dist.init()
>>> model = DDP(LeNet5().to(dist.device()))    # rank 0's weights, on every rank
>>> loss = F.cross_entropy(model(x), y)        # x, y: this rank's shard of the batch
>>> loss.backward()                            # gradients averaged over the ranks
>>> opt.step()

Gradients are grouped in buckets of about `bucket_cap_mb` MB (one device and dtype each), in
reverse registration order: the order backward tends to finish them. A hook on each parameter
(autograd.register_post_accumulate_grad_hook) notes when its gradient is final; when a bucket's
gradients all are, its gradients are concatenated into one flat tensor on their device, copied
to the host in one transfer, and its all-reduce (MPI_Iallreduce, not blocking) starts while the
rest of the backward pass runs (the last bucket's, with nothing left to overlap, blocks).
Buckets start in index order on every rank (MPI wants the same collective order everywhere),
so a bucket that finishes early waits for the ones before it. At
the end of backward (autograd.queue_callback) every bucket is waited for, divided by the world
size, copied back in one transfer, and each parameter's .grad becomes a view of it.
`events` records the order of that backward's gradients and bucket starts and waits.
"""
import contextlib

from .. import autograd
from .. import distributed as dist
from ..compiler import is_compiling
from ..ops.movement import concatenate
from ..tensor import from_numpy
from .module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    __slots__ = ("params", "pending", "work", "flat")

    def __init__(self, params):
        self.params, self.pending, self.work, self.flat = params, len(params), None, None


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training on every rank of vkgrad.distributed (init()
    first). Each rank runs the same model on its own part of the data; after backward() every
    rank holds the mean of the ranks' gradients, so the optimizers stay in step.

    At wrap, rank 0's parameters and buffers are copied to every rank, after checking that
    every rank's model has the same parameter names, shapes and dtypes (else a RuntimeError on
    every rank names the first difference). With broadcast_buffers, buffers (batch-norm
    statistics) are copied from rank 0 again before each forward in training mode.
    `module` is the wrapped model; state_dict() and load_state_dict() are the module's, with
    no "module." prefix, so checkpoints move between wrapped and bare models.
    """

    def __init__(self, module, bucket_cap_mb=25, broadcast_buffers=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a Module, not {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, not {bucket_cap_mb}")
        dist._world("DistributedDataParallel")
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_model(named)
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t, 0)
        self._buckets = self._make_buckets(named, int(bucket_cap_mb * 2 ** 20))
        self._names = {id(p): n for n, p in named}
        self._sync = True
        self._next = 0         # the next bucket to start, in index order
        self._queued = False   # finalisation queued for this backward
        self.events = []
        where = {id(p): b for b in self._buckets for p in b.params}
        for _, p in named:
            autograd.register_post_accumulate_grad_hook(
                p, lambda p, bucket=where[id(p)]: self._ready(p, bucket))

    def _check_same_model(self, named):
        mine = [(n, p.shape, p.dtype.name) for n, p in named]
        everyone = dist.allgather_object(mine)
        for r, theirs in enumerate(everyone[1:], 1):
            for i in range(max(len(theirs), len(everyone[0]))):
                a = everyone[0][i] if i < len(everyone[0]) else None
                b = theirs[i] if i < len(theirs) else None
                if a != b:
                    def say(x):
                        return "no parameter" if x is None else \
                            f"parameter {x[0]!r} of shape {x[1]} and dtype {x[2]}"
                    raise RuntimeError(
                        f"DistributedDataParallel: the models differ between ranks: parameter "
                        f"#{i} is {say(a)} on rank 0 but {say(b)} on rank {r}")

    @staticmethod
    def _make_buckets(named, cap):
        buckets, current, size = [], [], 0
        for _, p in reversed(named):
            nbytes = p.size * p.dtype.itemsize
            if current and (size + nbytes > cap or (p.device, p.dtype) !=
                            (current[0].device, current[0].dtype)):
                buckets.append(_Bucket(current))
                current, size = [], 0
            current.append(p)
            size += nbytes
        if current:
            buckets.append(_Bucket(current))
        return buckets

    @staticmethod
    def _refuse_compile():
        """vkgrad.compile replays a step's kernels only: the buckets' MPI all-reduces, on host
        memory, would not be replayed, and each rank would step on its own gradients."""
        if is_compiling():
            raise NotImplementedError(
                "vkgrad.compile cannot record a DistributedDataParallel step: a replay would "
                "skip its all-reduces (MPI calls on host memory) and leave every rank with its "
                "own gradients. Run the DistributedDataParallel step eagerly, without "
                "vkgrad.compile")

    # ---- the backward pass ----------------------------------------------------------------------
    def _ready(self, p, bucket):
        if not self._sync:
            return
        self._refuse_compile()
        if not self._queued:
            self._queued = True
            self.events.clear()
            autograd.queue_callback(self._finish)
        self.events.append(("grad", self._names[id(p)]))
        bucket.pending -= 1
        while self._next < len(self._buckets) and self._buckets[self._next].pending == 0:
            self._start(self._next)
            self._next = self._next + 1

    def _start(self, i):
        """Start bucket i's all-reduce; the last bucket's, which nothing is left to overlap
        with, runs at once with the blocking call (Open MPI's is faster: docs/distributed.md)."""
        bucket = self._buckets[i]
        grads = [p.grad.reshape(-1) for p in bucket.params]
        with autograd.no_grad():
            flat = concatenate(grads) if len(grads) > 1 else grads[0].astype(grads[0].dtype)
        bucket.work = dist.start_all_reduce(flat.numpy(), "mean",   # one transfer down
                                            blocking=i == len(self._buckets) - 1)
        self.events.append(("start", i))

    def _finish(self):
        """End of backward: start what did not start (parameters the pass did not reach get
        zeros), wait for every bucket, and give each parameter its averaged gradient."""
        for i in range(self._next, len(self._buckets)):
            for p in self._buckets[i].params:
                if p.grad is None:
                    with autograd.no_grad():
                        p.grad = p.detach() * 0
            self._start(i)
        for i, bucket in enumerate(self._buckets):
            mean = bucket.work.wait()
            self.events.append(("wait", i))
            device, dtype = bucket.params[0].device, bucket.params[0].dtype
            flat = from_numpy(mean, device=device, dtype=dtype)           # one transfer up
            offset = 0
            for p in bucket.params:
                p.grad = flat[offset:offset + p.size].reshape(p.shape)
                offset += p.size
            bucket.work, bucket.pending = None, len(bucket.params)
        self._next = 0
        self._queued = False

    @contextlib.contextmanager
    def no_sync(self):
        """Inside this block backward() accumulates gradients locally, without communication;
        the first backward() after it averages everything accumulated (gradient accumulation)."""
        previous = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = previous

    # ---- the Module API -------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        self._refuse_compile()
        if self.broadcast_buffers and self.training:
            for b in self.module.buffers():
                dist.broadcast(b, 0)
        return self.module(*args, **kwargs)

    def state_dict(self, keep_vars=False):
        return self.module.state_dict(keep_vars)

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict)
