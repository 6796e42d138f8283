"""Devices: the host (numpy) and every Vulkan physical device.

>>> import vkgrad as vk
>>> vk.devices()                 # [Device('host'), Device('vulkan:0'), ...]
>>> gpu = vk.device("vulkan")    # the best Vulkan device: discrete > integrated > virtual > CPU
>>> vk.device("vulkan:1").info()["subgroup_size"]

`VKGRAD_DEVICE=vulkan` (or `host`, `vulkan:1`) sets the default device for new tensors.
"""
import os
import threading

from .backend import open_vulkan, probe_vulkan
from .backend.host import NumpyBackend

# VkPhysicalDeviceType values, and how much we prefer each when asked for "vulkan".
_DEVICE_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}
_PREFERENCE = {"discrete-gpu": 0, "integrated-gpu": 1, "virtual-gpu": 2, "cpu": 3, "other": 4}
_VENDORS = {0x1002: "AMD", 0x1010: "ImgTec", 0x10DE: "NVIDIA", 0x13B5: "ARM", 0x5143: "Qualcomm",
            0x8086: "Intel", 0x106B: "Apple", 0x10005: "Mesa"}

INSTALL_HINT = ("install a Vulkan driver and loader (on Debian: `apt-get install libvulkan1 "
                "mesa-vulkan-drivers` gives lavapipe, a CPU device) and build Kompute with "
                "`make setup`")


class VulkanUnavailable(RuntimeError):
    """Vulkan was asked for but there is no loader, no Kompute build, or no device."""


class Device:
    """Where tensors live and ops run: `kind` is "host" or "vulkan"."""

    def __init__(self, kind, index=0, name="host", properties=None):
        self.kind, self.index, self.name = kind, index, name
        self._properties = properties or {}

    def info(self):
        """Vendor, device type and the limits kernels are sized by."""
        if self.kind == "host":
            return {"name": self.name, "vendor": "host", "device_type": "host"}
        p = self._properties
        return {
            "name": self.name,
            "vendor": _VENDORS.get(p["vendor_id"], hex(p["vendor_id"])),
            "device_type": _DEVICE_TYPES.get(p["device_type"], "other"),
            "subgroup_size": p["subgroup_size"],
            "shared_memory_size": p["max_compute_shared_memory_size"],
            "max_storage_buffer_range": p["max_storage_buffer_range"],
            "push_constants_size": p["max_push_constants_size"],
            "max_workgroup_invocations": p["max_work_group_invocations"],
            "timestamps_supported": p["timestamps_supported"],
        }

    @property
    def backend(self):
        return _backend(self)

    def __str__(self):
        return "host" if self.kind == "host" else f"vulkan:{self.index}"

    def __repr__(self):
        return f"Device('{self}')" if self.kind == "host" else f"Device('{self}', {self.name!r})"

    def __eq__(self, other):
        return isinstance(other, Device) and (self.kind, self.index) == (other.kind, other.index)

    def __hash__(self):
        return hash((self.kind, self.index))


HOST = Device("host")
_lock = threading.RLock()
_vulkan = None          # list of Device once probed
_vulkan_error = None    # why Vulkan is unavailable, once probed
_backends = {HOST: NumpyBackend()}
_default = None


def _probe_vulkan():
    global _vulkan, _vulkan_error
    with _lock:
        if _vulkan is not None:
            return _vulkan
        listed, why = probe_vulkan()
        if why is not None:
            _vulkan_error = f"{why}; {INSTALL_HINT}"
        _vulkan = [Device("vulkan", i, p["device_name"], p) for i, p in enumerate(listed)]
        return _vulkan


def devices():
    """The host followed by every Vulkan physical device."""
    return [HOST] + _probe_vulkan()


def device(spec=None):
    """A Device from a Device, "host", "vulkan" (the best one), "vulkan:N", or None (default)."""
    if spec is None:
        return default_device()
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be a Device or a string, not {type(spec).__name__}")
    kind, _, index = spec.strip().lower().partition(":")
    if kind in ("host", "cpu") and not index:
        return HOST
    if kind != "vulkan":
        raise ValueError(f"unknown device {spec!r}: use 'host', 'vulkan' or 'vulkan:N'")
    found = _probe_vulkan()
    if not found:
        raise VulkanUnavailable(f"device {spec!r} requested but {_vulkan_error}")
    if not index:
        return min(found, key=lambda d: (_PREFERENCE[d.info()["device_type"]], d.index))
    if not index.isdigit() or int(index) >= len(found):
        raise VulkanUnavailable(f"device {spec!r} does not exist: found "
                                + ", ".join(f"vulkan:{d.index} ({d.name})" for d in found))
    return found[int(index)]


def default_device():
    """The device new tensors go to: VKGRAD_DEVICE if set, else the host."""
    global _default
    if _default is None:
        _default = device(os.environ.get("VKGRAD_DEVICE", "host"))
    return _default


def best_device():
    """The fastest place to train: the best Vulkan GPU (discrete, then integrated, then virtual)
    if there is one, else the host. A CPU Vulkan driver (lavapipe) is never chosen: numpy on the
    same cores is faster; ask for it by name ("vulkan") to test with it."""
    gpus = [d for d in _probe_vulkan() if _PREFERENCE[d.info()["device_type"]] <= 2]
    return device("vulkan") if gpus else HOST


def set_default_device(spec):
    global _default
    _default = device(spec)


def _backend(dev):
    backend = _backends.get(dev)
    if backend is None:
        with _lock:
            backend = _backends.get(dev)
            if backend is None:
                backend = _backends[dev] = open_vulkan(dev.index, dev._properties)
                backend.device = dev
                from . import profiler
                if profiler.enabled():
                    backend.profiling(True)
    return backend


def live_backends():
    return list(_backends.values())
