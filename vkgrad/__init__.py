"""vkgrad: arrays, autograd and neural networks on any GPU through Vulkan compute.

>>> import vkgrad as vk
>>> vk.devices()
>>> x = vk.ones((2, 3), device="vulkan") * 3
>>> x.sum().item()
18.0
"""
from . import autograd
from .autograd import enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from .device import (Device, VulkanUnavailable, best_device, default_device, device, devices,
                     set_default_device)
from .dtypes import DType, bfloat16, bool_, dtype, float32, float64, int32, result_type, uint8, uint32
from .compiler import compile  # noqa: A004  (as torch.compile)
from .kernel import Kernel
from .profiler import profile
from .stats import memory_stats, reset_stats, stats, synchronize
from .creation import arange, empty, empty_like, eye, full_like, linspace, ones_like, zeros_like
from .random import (Generator, default_generator, get_rng_state, manual_seed, normal, rand,
                     randint, randn, set_rng_state, uniform)
from .tensor import (FUNCTIONS, Tensor, allclose, clip, div, from_numpy, full, isclose, ones,
                     tensor, where, zeros)
from .ops.linalg import dot, einsum, matmul, outer  # after .tensor: it adds Tensor methods
from .ops.indexing import add_at, one_hot, take, take_along_axis  # after .tensor, as linalg
from .ops.sorting import (argsort, masked_select, nonzero, scatter, scatter_add, scatter_reduce,
                          sort, topk)
from .ops.movement import (chunk, concatenate, cummax, cummin, cumprod, cumsum, diag, diagonal,
                           flip, logcumsumexp, meshgrid, pad, repeat, roll, split, squeeze,
                           stack, tile)
from .ops.transformer_ops import masked_fill, tril, triu
from .serialization import load, save
from . import nn  # noqa: E402  (built on everything above)
from . import datasets  # noqa: E402
from . import models  # noqa: E402
from . import optim  # noqa: E402

bool = bool_  # noqa: A001  numpy spells it vkgrad.bool too
globals().update({k: v for k, v in FUNCTIONS.items() if k not in ("clip", "where")})

__version__ = "0.1.0"
profiler.start_from_environment()
