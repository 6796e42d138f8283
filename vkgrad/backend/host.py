"""The host backend: arrays are numpy arrays and ops run their numpy implementation."""
import ctypes
import os
import platform
import threading
import weakref

import numpy as np

from .. import dtypes
from .base import Backend

BF16 = dtypes.bfloat16.np_dtype
KEEP_MIN = 1 << 14  # elements of the smallest bf16 weight whose widening the host keeps

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20     # blocks below this come from the heap and are reused
TRIM_THRESHOLD = 256 << 20    # free heap kept by the process before it is given back


def keep_freed_memory():
    """Have glibc keep freed blocks for reuse instead of returning them to the OS.

    A training step frees tens of MB of numpy temporaries, and the next step allocates them again.
    By default glibc serves blocks over 128 KiB (a threshold that adapts up to 32 MiB) with fresh
    mmaps and trims the heap's free top beyond 128 KiB, so each step page-faults its temporaries
    in again: a host LeNet5 step at batch 100 took 19 ms that way and 8 ms with these settings,
    and which of the two a process got depended on its allocation history. Set
    VKGRAD_KEEP_FREED_MEMORY=0 to leave glibc's defaults; other C libraries are left alone.
    """
    if os.environ.get("VKGRAD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class NumpyBackend(Backend):
    kind = "host"

    def __init__(self):
        super().__init__()
        self.keeps_freed_memory = keep_freed_memory()
        self._capture = threading.local()  # .recording: the HostRecording this thread captures
        # id(root array) -> (weakref of the root, {view key: (recording, float32 widening)})
        self._widenings = {}

    def empty(self, shape, dtype):
        return np.empty(shape, dtype.np_dtype)

    def from_numpy(self, array, dtype):
        self._refuse_while_capturing("copies host data into a tensor (vkgrad.tensor inside the "
                                     "step)")
        return np.asarray(array, dtype=dtype.np_dtype)

    def to_numpy(self, array):
        self._refuse_while_capturing("reads a tensor's value (.item(), .numpy(), print)")
        return array

    def run(self, op, *args, **params):
        if op.widens:
            args = [self.widened(a) if i in op.widens else a for i, a in enumerate(args)]
        result = self.call(op.host, *args, **params)
        if op.writes:
            self.wrote(*(args[i] for i in op.writes))
        return result

    # ---- the widenings of bf16 weights (Op.widens) ----------------------------------------------
    def widened(self, a):
        """bf16 array `a` of at least KEEP_MIN elements as float32 (exact: a widening rounds
        nothing), made once and kept until its memory is written; any other operand (None,
        another dtype, a smaller weight) as it is, for the op to widen itself.

        numpy has no bf16 arithmetic, so an op that computes with a bf16 weight widens it
        first: the forward of a step, its backward again, and every inference call. Keeping a
        widening costs a lookup of about 2 us of Python, 4-5 us when the kernels around it
        have flushed the CPU's caches, about what widening KEEP_MIN (16,384) values takes:
        smaller weights (all of LeNet5's but its first linear layer's) are cheaper to widen
        again. The widening is kept per view of a root array (the memory itself: the key is
        the root, the view's shape, strides and (unless it is the root) address, so the fresh
        reshape each call takes of the same weight finds it) until
        - something writes the root in place through vkgrad: an op with Op.writes (setitem:
          `t[...] = v`, load_state_dict, nn.init; the optimizers' update), Tensor._assign
          (`+=` and the other in-place operators), distributed's in-place reductions, or any
          replay of a recorded step (which clears every widening: its calls write without
          Python in between);
        - the root dies: an entry holds a weak reference to it, so no dead weight's widening
          is kept, and a weight replaced by a new array (Module.to) is widened anew.
        Writes that bypass vkgrad (into the array `.numpy()` returned, or the one a tensor was
        made from with from_numpy) are not seen: as with torch's version counter, do not
        write a weight's memory behind vkgrad's back. Only the operands an op declares
        weights are widened here (linear's and conv2d's weight and bias); an activation is
        widened inside its kernel, once.

        In a step being recorded (vkgrad.compile) only widenings made in that same recording
        are used: the widening is then one of the recorded calls, which every replay makes
        again from the weight's values at that point (the forward's widening serves the
        backward in the replay too). One made before the recording would be a constant of it
        and go stale once the weights change; the recording's own are forgotten when it ends
        (end_capture). counters.host_widenings counts the widenings made, a replay's included.
        """
        if a is None or a.dtype != BF16 or a.size < KEEP_MIN:
            return a
        root = _root(a)
        recording = getattr(self._capture, "recording", None)
        key = (a.shape, a.strides) if a is root else (a.ctypes.data, a.shape, a.strides)
        held = self._widenings.get(id(root))
        if held is None or held[0]() is not root:
            held = self._widenings[id(root)] = (
                weakref.ref(root, _forget_when_dead(self._widenings, id(root))), {})
        else:
            made = held[1].get(key)
            if made is not None and made[0] is recording:
                return made[1]
        wide = self.call(_widen, a)
        held[1][key] = (recording, wide)
        self.counters.host_widenings += 1
        if recording is not None:
            recording.widenings += 1
        return wide

    def wrote(self, *arrays):
        """Kernels wrote `arrays` (numpy arrays, or lists or tuples of them; None skipped) in
        place: forget the widenings of their root arrays."""
        if not self._widenings:
            return
        for a in arrays:
            for x in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(x, np.ndarray):
                    self._widenings.pop(id(_root(x)), None)

    def call(self, fn, *args, **kwargs):
        """Run the numpy kernel `fn(*args, **kwargs)` and return its result (arrays, a tuple of
        them, or None for one that writes in place). Every piece of numpy work the host does on
        tensors comes through here (op implementations, fills, copies, random draws), so a step
        being captured by vkgrad.compile in this thread records it."""
        result = _as_array(fn(*args, **kwargs))
        recording = getattr(self._capture, "recording", None)
        if recording is not None:
            recording.add(fn, args, kwargs, result)
        return result

    # ---- capture and replay (vkgrad.compile) ----------------------------------------------------
    def begin_capture(self):
        """Record, in the calling thread, every kernel call from now on (captures on the host are
        per thread and never conflict)."""
        self._capture.recording = HostRecording()
        return True

    def end_capture(self):
        recording, self._capture.recording = self._capture.recording, None
        # the recording's widenings go (first: kept here, finish would take them for results
        # of the step that outlive it)
        for _, views in list(self._widenings.values()):
            for key, (made_in, _) in list(views.items()):
                if made_in is recording:
                    views.pop(key, None)
        recording.finish()
        return recording

    def replay(self, recording, arguments=(), results=()):
        for slot, value in arguments:
            np.copyto(slot, value)
        recording.replay()
        self._widenings.clear()
        self.counters.host_widenings += recording.widenings

    def _refuse_while_capturing(self, what):
        if getattr(self._capture, "recording", None) is not None:
            raise RuntimeError(f"a step being captured by vkgrad.compile {what}: a replay would "
                               "not repeat that. Pass inputs as arguments and return what you "
                               "need to read, then read it after the call")


def _as_array(result):
    """A kernel's numpy scalar as the 0-d array a Tensor will wrap (and a recording knows)."""
    return np.asarray(result) if isinstance(result, np.generic) else result


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _widen(a):
    """The float32 of a bf16 array (NumpyBackend.widened's kernel call)."""
    return a.astype(np.float32)


def _forget_when_dead(widenings, root_id):
    """The weakref callback that drops a dead root's widenings from `widenings`."""
    def forget(ref):
        held = widenings.get(root_id)
        if held is not None and held[0] is ref:
            widenings.pop(root_id, None)
    return forget


class HostRecording:
    """The numpy kernel calls of one captured host step, replayed on new values.

    Each call is kept with its function, its constant operands (arrays from before the step, such
    as parameters, optimizer state and the compiled step's input slots, and Python values) and,
    for the operands that earlier calls produced, the slot the producer's result goes to. A
    replay runs the calls in order, each on the arrays the replay itself produced (numpy kernels
    give the same bits for the same inputs, so a replay equals the eager step), then copies into
    the arrays of the capture that outlived it (gradients, the step's results) their new values,
    so the tensors holding them see the latest call's values. Calls that write in place (the
    optimizer update, a copy into a parameter) write the same constant arrays again.

    An operand made from a produced array without a kernel call (a numpy view taken outside the
    op table), or a read-only view of a result that outlives the step, would go stale on replay:
    the recording then keeps the reason in `problem` and vkgrad.compile runs the step eagerly.
    """

    def __init__(self):
        self.calls = []      # (fn, args, kwargs, arg refs, kwarg refs, out slots or None)
        self.nslots = 0      # results the calls produce (a replay keeps them in a list)
        self.escapes = []    # (slot, array of the capture that outlived it)
        self._produced = {}  # id(array) -> (weakref, slot), arrays the calls produced
        self._roots = {}     # id(root array) -> weakref: memory the calls allocated
        self._kept = {}      # id(root array) -> weakref: memory of the constant operands
        self.problem = None  # why a replay could not repeat the step, if it could not
        self.widenings = 0   # of its calls, widenings of bf16 weights (NumpyBackend.widened)

    def _slot_of(self, a):
        entry = self._produced.get(id(a))
        if entry is not None and entry[0]() is a:
            return entry[1]
        root = _root(a)
        self._kept.setdefault(id(root), weakref.ref(root))
        known = self._roots.get(id(root))
        if known is not None and known() is root:
            self.problem = ("an operand was derived from a result of the step outside vkgrad's "
                            "ops (a numpy view of a tensor's array)")
        return None

    def _template(self, values, keys):
        """(values, [(key, index or None, slot)]) for one call's operands: the slots of the
        produced arrays among them, directly or as items of a tuple or list (index keys)."""
        values, refs = list(values), []
        for i, (key, v) in enumerate(zip(keys, values)):
            if isinstance(v, np.ndarray):
                slot = self._slot_of(v)
                if slot is not None:
                    values[i] = None  # (the recording must not keep the step's arrays alive)
                    refs.append((key, None, slot))
            elif isinstance(v, (list, tuple)):
                items = list(v)
                for j, e in enumerate(v):
                    slot = self._slot_of(e) if isinstance(e, np.ndarray) else None
                    if slot is not None:
                        items[j] = None
                        refs.append((key, j, slot))
                values[i] = type(v)(items)
        return values, refs

    @staticmethod
    def _fill(values, refs, slots):
        """A call's operands with the produced ones taken from this replay's `slots` (each tuple
        or list operand copied once, however many of its items are produced)."""
        seqs = {}
        for key, j, slot in refs:
            if j is None:
                values[key] = slots[slot]
            else:
                seq = seqs.get(key)
                if seq is None:
                    seq = seqs[key] = list(values[key])
                seq[j] = slots[slot]
        for key, seq in seqs.items():
            values[key] = type(values[key])(seq)
        return values

    def add(self, fn, args, kwargs, result):
        problem = self.problem
        args, arg_refs = self._template(args, range(len(args)))
        names = list(kwargs)
        values, kw_refs = self._template(kwargs.values(), names)
        if self.problem is not problem:
            self.problem += f", given to {getattr(fn, '__qualname__', fn)}"
        kwargs = dict(zip(names, values))
        outs = None
        if result is not None:
            results = result if isinstance(result, tuple) else (result,)
            outs = []
            for r in results:
                slot, self.nslots = self.nslots, self.nslots + 1
                outs.append(slot)
                if isinstance(r, np.ndarray):
                    self._produced[id(r)] = (weakref.ref(r), slot)
                    root = _root(r)
                    kept = self._kept.get(id(root))
                    if kept is None or kept() is not root:  # (a view of a constant is stable)
                        self._roots[id(root)] = weakref.ref(root)
            outs = tuple(outs) if isinstance(result, tuple) else outs[0]
        self.calls.append((fn, tuple(args), kwargs, arg_refs, kw_refs, outs))

    def finish(self):
        """The capture is over: what it produced and something still holds (a gradient, the
        step's result, a view of one) must receive each replay's new value."""
        for ref, slot in self._produced.values():
            a = ref()
            if a is not None:
                if not a.flags.writeable:
                    self.problem = "a read-only view of the step's results outlived the step"
                self.escapes.append((slot, a))
        self._produced = self._roots = self._kept = None
        # each slot is let go after the last call that reads it (as eager execution frees a
        # temporary when its last tensor dies), so a replay's peak memory is the eager step's
        last = {}
        for i, (_, _, _, arg_refs, kw_refs, outs) in enumerate(self.calls):
            for slot in () if outs is None else outs if isinstance(outs, tuple) else (outs,):
                last[slot] = i  # (a result nothing reads goes at once)
            for _, _, slot in (*arg_refs, *kw_refs):
                last[slot] = i
        escaping = {slot for slot, _ in self.escapes}
        self.frees = [[] for _ in self.calls]
        for slot, i in last.items():
            if slot not in escaping:
                self.frees[i].append(slot)

    def replay(self):
        slots = [None] * self.nslots
        for (fn, args, kwargs, arg_refs, kw_refs, outs), frees in zip(self.calls, self.frees):
            if arg_refs:
                args = self._fill(list(args), arg_refs, slots)
            if kw_refs:
                kwargs = self._fill(dict(kwargs), kw_refs, slots)
            result = fn(*args, **kwargs)
            if isinstance(outs, tuple):
                for slot, r in zip(outs, result):
                    slots[slot] = r
            elif outs is not None:
                slots[outs] = _as_array(result)
            for slot in frees:
                slots[slot] = None
        for slot, target in self.escapes:
            if slots[slot] is not target:
                np.copyto(target, slots[slot])
