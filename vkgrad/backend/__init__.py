"""Backends: where tensor memory lives and how kernels run. See base.Backend for the interface.

The Vulkan backend (vulkan.py, through Kompute) is imported only when a Vulkan device is
probed or opened, through the two functions here; nothing outside this package imports it.
"""
from .base import Backend, Buffer, Counters

__all__ = ["Backend", "Buffer", "Counters", "open_vulkan", "probe_vulkan"]


def probe_vulkan():
    """(the properties of every Vulkan device, None), or ([], why there are none)."""
    from . import vulkan
    return vulkan.probe()


def open_vulkan(index, properties):
    """A new backend for Vulkan device `index` (`properties`: its entry from probe_vulkan)."""
    from . import vulkan
    return vulkan.open_backend(index, properties)
