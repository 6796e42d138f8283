"""Shared fixtures: every test that takes `device` runs on the host and on each Vulkan device.

Vulkan parametrisations carry the `vulkan` marker, so `pytest -m vulkan` (make test-sync) runs
exactly the device tests. Where a Vulkan device exists, its tests run; they are never skipped.
"""
import atexit
import os
import shutil
import tempfile
from math import sqrt

import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk

import tolerances

# Vulkan pipelines are cached on disk across runs (vkgrad/backend/pipeline_cache.py). A test
# session, and the processes its tests start, keep theirs in a folder of the session's own,
# removed at exit (after the backends save into it: atexit runs handlers last-registered
# first), so that no session depends on what an earlier one left in the user's cache.
_PIPELINES = tempfile.mkdtemp(prefix="vkgrad-pipelines-")
os.environ.setdefault("VKGRAD_PIPELINE_CACHE", _PIPELINES)
atexit.register(shutil.rmtree, _PIPELINES, True)

DEVICES = vk.devices()
VULKAN = [d for d in DEVICES if d.kind == "vulkan"]


def _device_params(devices):
    return [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan] if d.kind == "vulkan" else [])
            for d in devices]


@pytest.fixture(params=_device_params(DEVICES))
def device(request):
    return request.param


@pytest.fixture(params=_device_params(VULKAN) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no Vulkan device"))])
def vulkan(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---- helpers for the op-table tests (test_ops.py, test_autograd_ops.py) -------------------------
def cast_input(x, dtype):
    """An input as the test dtype: floating data is rounded to it, ints and bools stay."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        return x
    if x.dtype.kind == "f":
        return x.astype(vk.dtype(dtype).np_dtype)
    if dtype == "int32" and x.dtype.kind in "iu":
        return x.astype(np.int32)
    return x


def reference_input(x):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" or isinstance(x, np.ndarray) and \
            x.dtype == ml_dtypes.bfloat16:
        return x.astype(np.float64)
    return x


def to_tensor(x, device, strided):
    if not isinstance(x, np.ndarray):
        return x
    if strided and x.ndim >= 2:
        return vk.tensor(np.ascontiguousarray(x.swapaxes(0, 1)), device=device).swapaxes(0, 1)
    if strided and x.ndim == 1 and x.size > 1:
        return vk.tensor(np.repeat(x, 2), device=device)[::2]
    return vk.tensor(x, device=device)


def bf16_ulp(x):
    """The spacing of bfloat16 numbers at |x| (8 significant bits; the subnormal spacing 2^-133
    below 2^-126, at 0 too)."""
    tiny = np.maximum(np.abs(np.asarray(x, np.float64)), 2.0 ** -126)
    return np.ldexp(1.0, np.frexp(tiny)[1] - 8)  # |x| = m 2^e, m in [1/2, 1)


def assert_op_close(result, expected, dtype, length, magnitude, err_msg, steps=1, level=0.0,
                    bound=None):
    """An op's result against its float64 reference.

    bfloat16: within 2 bf16 ulps of the reference rounded to bf16 (one rounding per op leaves at
    most 1/2 ulp; the rest covers float32's own rounding before it), plus for reductions and
    products the float32 accumulation bound length * 2^-24 * `magnitude`, `magnitude` being the
    reference on |inputs| (the sum of |terms|). An op applied `steps` times in a row (an
    optimizer's steps) rounds after each, at magnitudes up to `level`: 2 ulps per step there.
    float32: the elementwise ops' `bound` (ulps, absolute) from tests/tolerances.py, whose
    absolute part bf16 adds too; other ops rtol = atol = 2e-5 sqrt(length).
    """
    result, expected = np.asarray(result, np.float64), np.asarray(expected, np.float64)
    rounded = expected.astype(vk.dtype(dtype).np_dtype).astype(np.float64)  # overflow: inf
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype == "bfloat16":
            ulp = bf16_ulp(np.maximum(np.abs(rounded), np.abs(level)))
            tol = 2 * steps * ulp + length * 2.0 ** -24 * np.abs(magnitude)
            if bound is not None:
                tol = tol + bound[1]
        elif bound is not None:
            ulps, extra = bound
            tol = ulps * tolerances.f32_spacing(expected) + extra
        else:
            scale = max(1.0, sqrt(length))
            tol = 2e-5 * scale * (1 + np.abs(expected))
        ok = (np.abs(result - expected) <= tol) | (result == rounded) | (
            np.isnan(result) & np.isnan(expected))
    if not ok.all():
        bad = np.flatnonzero(~ok)[:5]
        raise AssertionError(f"{err_msg}: {(~ok).sum()} of {ok.size} values out of tolerance "
                             f"({dtype}): got {result.ravel()[bad]}, expected "
                             f"{np.asarray(expected).ravel()[bad]} (tolerance {tol.ravel()[bad]})")


# ---- a LeNet5 training step (test_compile.py, test_async.py) --------------------------------------
TRAINERS = {"sgd": lambda ps: vk.optim.SGD(ps, lr=0.05, momentum=0.9),
            "adam": lambda ps: vk.optim.Adam(ps, lr=1e-3),
            "rmsprop": lambda ps: vk.optim.RMSprop(ps, lr=1e-3)}


def classifier_step(model, opt):
    """step(x, y) -> loss: one training step of classifier `model` with cross-entropy."""
    def step(x, y):
        opt.zero_grad()
        loss = vk.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def lenet_trainer(device, dtype="float32", optimizer="sgd"):
    """(model, optimizer, step(x, y) -> loss): a seeded LeNet5 and its training step."""
    vk.manual_seed(0)
    model = vk.models.lenet5(device=device, dtype=dtype)
    opt = TRAINERS[optimizer](model.parameters())
    return model, opt, classifier_step(model, opt)
