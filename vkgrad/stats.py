"""Counters of device work, summed over every backend in use.

>>> import vkgrad as vk
>>> vk.reset_stats(); y = (vk.ones(1000, device="vulkan") * 2).sum().item()
>>> vk.stats()
{'dispatches': 3, 'submits': 1, 'pipelines_created': ..., 'host_syncs': 1, 'device_bytes_allocated': 0}
"""
from dataclasses import asdict, fields

from .backend.base import Counters
from .device import live_backends


def stats():
    """dispatches, submits, pipelines_created, host_syncs, device_bytes_allocated since reset."""
    total = {f.name: 0 for f in fields(Counters)}
    for backend in live_backends():
        for k, v in asdict(backend.counters).items():
            total[k] += v
    return total


def reset_stats():
    for backend in live_backends():
        backend.counters.reset()


def synchronize():
    """Wait for all queued device work."""
    for backend in live_backends():
        backend.synchronize()


def memory_stats(device=None):
    """Arena capacity, bytes in use and peak bytes of a Vulkan device (default: all devices)."""
    from .device import device as as_device
    if device is not None:
        return as_device(device).backend.memory_stats()
    return {str(b.info.get("device_name", b.kind)): b.memory_stats()
            for b in live_backends() if b.kind == "vulkan"}
