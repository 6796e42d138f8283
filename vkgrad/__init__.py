"""vkgrad: arrays, autograd and neural networks on any GPU through Vulkan compute.

>>> import vkgrad as vk
>>> vk.devices()
>>> x = vk.ones((2, 3), device="vulkan") * 3
>>> x.sum().item()
18.0
"""
from .device import Device, VulkanUnavailable, default_device, device, devices, set_default_device
from .dtypes import DType, bfloat16, bool_, dtype, float32, float64, int32, result_type, uint8, uint32
from .stats import memory_stats, reset_stats, stats, synchronize
from .tensor import Tensor, from_numpy, full, ones, tensor, zeros

bool = bool_  # noqa: A001  numpy spells it vkgrad.bool too

__version__ = "0.1.0"
