"""vkgrad.compile: run a step once while recording its kernels, then replay them.

>>> model = vk.models.lenet5().to("vulkan")
>>> opt = vk.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
>>> @vk.compile
... def train_step(x, y):
...     opt.zero_grad()
...     loss = vk.nn.functional.cross_entropy(model(x), y)
...     loss.backward()
...     opt.step()
...     return loss
>>> for x, y in batches:            # Vulkan tensors, the same shapes on every call
...     loss = train_step(x, y)     # the first call runs eagerly and records; later ones replay
...     print(loss.item())

A call records when it meets new argument shapes, dtypes or devices (or new non-tensor
arguments): it copies the tensor arguments into input tensors of its own and runs the function
eagerly on those while the Vulkan backend keeps every dispatch queued. Every kernel addresses its
operands by offsets into the arena's buffers, so a later call only copies its arguments into
those inputs and submits the recorded dispatches again: they were recorded once into a command
buffer of their own (the argument copies first, with barriers only where one kernel depends on
another, then copies of the step's small results to staging), which every replay submits in one
submission, without waiting; reading a small result then waits for it alone. No op, autograd
or optimizer code runs, no dispatch is recorded, nothing is allocated and no pipeline is
created; the host waits only when it reads a value. The recorded kernels update parameters,
gradients and optimizer state in place as the eager step did, and the call returns the same result objects
every time, holding the latest call's values (clone one to keep it).

What a replay cannot see is checked or refused:
- Host values baked into the kernels are checked before every replay (`guard`): optimizer
  hyper-parameters, first-step flags and state tensors (an lr scheduler's new rate, momentum's
  first step, a load_state_dict), which device holds a random generator's state, gradients
  accumulated across calls, each module's train/eval mode. If one changed, the call records
  again. Counters that change every step live on the device and the kernels advance them:
  Adam's and RMSprop's step counts, random generators' positions (so replayed draws are fresh,
  the same stream as eager). A step whose baked values change on every call records on every
  call: correct, at eager speed, and a warning says so.
- Reading a value on the host (`.item()`, `.numpy()`) or copying host data in inside the step
  raises: pass data in as arguments and return what you want to read.
- Python control flow runs only while recording, so the function must do the same work on every
  call.
On the host the same API records the step's numpy kernel calls instead (every op's host
implementation, fill, copy and random draw goes through `NumpyBackend.call`): a replay copies
the arguments in and runs those calls again in order, each on the arrays the replay produced
before it, with no Tensor, autograd, op-table or optimizer code in between, then writes the new
values into the arrays that outlived the recording (gradients, results); random draws take the
generator's next counters on every replay, so dropout is fresh and equals eager. The guards are
the same as on Vulkan. The results are those of eager execution, bit for bit.

Capture is per thread: while one thread records, other threads' work on the device runs eagerly
and stays out of the recording. A device records one step at a time; a compiled call that would
record while another thread records on the same device runs eagerly instead (and records on a
later call).
"""
import functools
import threading
import warnings

EAGER_WARNING_AFTER = 3  # recordings in a row never replayed before the warning

_local = threading.local()  # .active: the _Capture this thread is recording, if any


def _active():
    return getattr(_local, "active", None)


def is_compiling():
    """Whether this thread is recording a step for vkgrad.compile (torch.compiler.is_compiling)."""
    return _active() is not None


def guard(read, value):
    """While a step is being recorded: `value`, what `read()` returns now, is baked into the
    recorded kernels, so a replay is valid only while `read()` still returns it. Otherwise,
    nothing."""
    capture = _active()
    if capture is not None:
        capture.guards.append((read, value))


def gradient_cleared(t):
    """zero_grad: in the step being recorded, `t`'s gradient starts afresh from here."""
    capture = _active()
    if capture is not None:
        capture.cleared.add(id(t))


def guard_gradient(t):
    """Backward is about to write `t.grad`. A replay writes the gradient this recording found
    (added to, or started afresh), so unless zero_grad cleared it earlier in the step, what it
    found came from before the call and a replay cannot follow it: record every call."""
    capture = _active()
    if capture is not None and id(t) not in capture.cleared:
        capture.guards.append((lambda: False, True))


class _Capture:
    """One recorded call: its input tensors, result, guards and the backend's Recording."""
    __slots__ = ("inputs", "result", "guards", "cleared", "recording", "replays")

    def __init__(self, inputs):
        self.inputs, self.result, self.guards, self.cleared = inputs, None, [], set()
        self.recording, self.replays = None, 0

    def valid(self):
        return all(read() == value for read, value in self.guards)


def compile(fn):
    """Wrap `fn` (a step over tensors) so that its Vulkan dispatches are recorded on its first
    call and replayed on later calls with the same argument shapes; see the module docstring."""
    return Compiled(fn)


class Compiled:
    def __init__(self, fn):
        self.fn = fn
        self._captures = {}       # argument signature -> _Capture
        self._unreplayed = 0      # recordings in a row dropped before their first replay
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        from .tensor import Tensor
        values = [*args, *(kwargs[k] for k in sorted(kwargs))]
        backends = {id(v.device.backend): v.device.backend for v in values
                    if isinstance(v, Tensor)}
        if _active() is not None or len(backends) != 1:
            return self.fn(*args, **kwargs)  # inside another recording, or nothing to replay
        backend, = backends.values()
        key = (tuple(sorted(kwargs)), tuple(_signature(v) for v in values))
        capture = self._captures.get(key)
        if capture is not None and capture.valid():
            self._unreplayed = 0
            capture.replays += 1
            return self._replay(backend, capture, values)
        if capture is not None and not capture.replays:
            self._note_unreplayed()
        self._captures.pop(key, None)  # free its memory before recording anew
        capture = self._record(backend, args, kwargs, values)
        if capture is None:  # another thread is recording on this device
            return self.fn(*args, **kwargs)
        self._captures[key] = capture
        return capture.result

    def _record(self, backend, args, kwargs, values):
        """Run `fn` on inputs of its own while `backend` records; None if it cannot record now."""
        from .tensor import Tensor
        inputs = [_input_like(v) if isinstance(v, Tensor) else v for v in values]
        positional = inputs[:len(args)]
        named = dict(zip(sorted(kwargs), inputs[len(args):]))
        capture = _Capture(inputs)
        if not backend.begin_capture():
            return None
        _local.active = capture
        try:
            capture.result = self.fn(*positional, **named)
        finally:
            capture.recording = backend.end_capture()
            _local.active = None
        problem = getattr(capture.recording, "problem", None)
        if problem is not None:
            capture.guards.append((lambda: False, True))
            warnings.warn(f"vkgrad.compile: {getattr(self.fn, '__name__', 'the step')} runs "
                          f"eagerly: {problem}, which a replay could not follow",
                          RuntimeWarning, stacklevel=3)
        return capture

    @staticmethod
    def _replay(backend, capture, values):
        from .tensor import Tensor
        result = capture.result
        results = [result] if isinstance(result, Tensor) else \
            [r for r in result if isinstance(r, Tensor)] if isinstance(result, (tuple, list)) \
            else []
        backend.replay(capture.recording,
                       [(slot._data, value._data) for slot, value in zip(capture.inputs, values)
                        if isinstance(value, Tensor)],
                       [r._data for r in results])
        return capture.result

    def _note_unreplayed(self):
        self._unreplayed += 1
        if self._unreplayed == EAGER_WARNING_AFTER:
            warnings.warn(
                f"vkgrad.compile: {getattr(self.fn, '__name__', 'the step')} changed host values "
                f"baked into its kernels on each of {EAGER_WARNING_AFTER} calls (gradients "
                "accumulated across calls, a changing learning rate), so it records every call "
                "and runs at eager speed",
                RuntimeWarning, stacklevel=3)


def _signature(value):
    from .tensor import Tensor
    if isinstance(value, Tensor):
        return ("tensor", value.shape, value.dtype.name, str(value.device), value.requires_grad)
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"vkgrad.compile: arguments must be tensors or hashable values (they "
                        f"select the recording), not {type(value).__name__}") from None
    return ("value", type(value).__name__, value)


def _input_like(t):
    """A tensor of its own holding `t`'s value, which replays overwrite with new arguments."""
    from .autograd import no_grad
    from .creation import empty_like
    with no_grad():
        slot = empty_like(t)._assign(t)
    return slot.requires_grad_(t.requires_grad)
