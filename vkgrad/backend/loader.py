"""What the Vulkan loader (libvulkan) itself tells, through ctypes and without Kompute.

- `count_physical_devices()`: whether there is any device at all. Kompute aborts the process,
  rather than raising, when it finds none, so vkgrad asks the loader first.
- `physical_devices()`: per device, what Kompute's Python binding does not give: the driver's
  name and version string (VkPhysicalDeviceDriverProperties, Vulkan 1.2), the subgroup
  operations compute shaders may use (VkPhysicalDeviceSubgroupProperties, Vulkan 1.1), the
  memory heaps and the timestamp bits of the queue family Kompute computes on.
- `instance_layers()`: the layers the loader finds (it searches VK_LAYER_PATH and the standard
  manifest folders such as /usr/share/vulkan/explicit_layer.d itself).
- `instance_extensions()`: the instance extensions the loader offers.

Each call creates and destroys its own VkInstance; `python -m vkgrad` reports the first three.
Like the patched Kompute, the instance enables VK_KHR_portability_enumeration where the loader
offers it, without which a current loader on macOS lists no MoltenVK device.
Every function raises LoaderError, with the reason, where there is no loader or no driver.
"""
import contextlib
import ctypes
import ctypes.util

VK_API_VERSION_1_1 = (1 << 22) | (1 << 12)
VK_API_VERSION_1_2 = (1 << 22) | (2 << 12)
_STRUCTURE_TYPE = {"application_info": 0, "instance_create_info": 1,
                   "physical_device_properties_2": 1000059001,
                   "physical_device_driver_properties": 1000196000,
                   "physical_device_subgroup_properties": 1000094000}
# VkSubgroupFeatureFlagBits and the compute stage of VkShaderStageFlagBits
SUBGROUP_FEATURES = {"basic": 0x1, "vote": 0x2, "arithmetic": 0x4, "ballot": 0x8, "shuffle": 0x10,
                     "shuffle_relative": 0x20, "clustered": 0x40, "quad": 0x80}
_STAGE_COMPUTE = 0x20
_MEMORY_HEAP_DEVICE_LOCAL = 0x1
_QUEUE_COMPUTE = 0x2  # VK_QUEUE_COMPUTE_BIT
PORTABILITY_ENUMERATION = "VK_KHR_portability_enumeration"
_CREATE_ENUMERATE_PORTABILITY = 0x1  # VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR


class LoaderError(RuntimeError):
    """No Vulkan loader, or no driver that lets it create an instance."""


def version_string(version):
    """A VK_MAKE_API_VERSION number as "major.minor.patch"."""
    return f"{(version >> 22) & 0x7F}.{(version >> 12) & 0x3FF}.{version & 0xFFF}"


class _ApplicationInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p),
                ("pApplicationName", ctypes.c_char_p), ("applicationVersion", ctypes.c_uint32),
                ("pEngineName", ctypes.c_char_p), ("engineVersion", ctypes.c_uint32),
                ("apiVersion", ctypes.c_uint32)]


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.POINTER(_ApplicationInfo)),
                ("enabledLayerCount", ctypes.c_uint32), ("ppEnabledLayerNames", ctypes.c_void_p),
                ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


class _DeviceProperties(ctypes.Structure):
    """VkPhysicalDeviceProperties up to the device name; the limits that follow (Kompute reads
    those) land in `rest`, which is larger than they are."""
    _fields_ = [("apiVersion", ctypes.c_uint32), ("driverVersion", ctypes.c_uint32),
                ("vendorID", ctypes.c_uint32), ("deviceID", ctypes.c_uint32),
                ("deviceType", ctypes.c_uint32), ("deviceName", ctypes.c_char * 256),
                ("pipelineCacheUUID", ctypes.c_uint8 * 16), ("rest", ctypes.c_uint64 * 128)]


class _DeviceProperties2(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p),
                ("properties", _DeviceProperties)]


class _DriverProperties(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p),
                ("driverID", ctypes.c_uint32), ("driverName", ctypes.c_char * 256),
                ("driverInfo", ctypes.c_char * 256), ("conformanceVersion", ctypes.c_uint8 * 4)]


class _SubgroupProperties(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p),
                ("subgroupSize", ctypes.c_uint32), ("supportedStages", ctypes.c_uint32),
                ("supportedOperations", ctypes.c_uint32),
                ("quadOperationsInAllStages", ctypes.c_uint32)]


class _MemoryHeap(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("flags", ctypes.c_uint32)]


class _MemoryProperties(ctypes.Structure):
    _fields_ = [("memoryTypeCount", ctypes.c_uint32), ("memoryTypes", ctypes.c_uint32 * 64),
                ("memoryHeapCount", ctypes.c_uint32), ("memoryHeaps", _MemoryHeap * 16)]


class _QueueFamilyProperties(ctypes.Structure):
    _fields_ = [("queueFlags", ctypes.c_uint32), ("queueCount", ctypes.c_uint32),
                ("timestampValidBits", ctypes.c_uint32),
                ("minImageTransferGranularity", ctypes.c_uint32 * 3)]


class _ExtensionProperties(ctypes.Structure):
    _fields_ = [("extensionName", ctypes.c_char * 256), ("specVersion", ctypes.c_uint32)]


class _LayerProperties(ctypes.Structure):
    _fields_ = [("layerName", ctypes.c_char * 256), ("specVersion", ctypes.c_uint32),
                ("implementationVersion", ctypes.c_uint32), ("description", ctypes.c_char * 256)]


def _library():
    try:
        return ctypes.CDLL(ctypes.util.find_library("vulkan") or "libvulkan.so.1")
    except OSError as e:
        raise LoaderError(f"the Vulkan loader (libvulkan) is not installed ({e})") from None


def loader_version(vulkan=None):
    """The highest instance API version the loader supports (1.0 for loaders that predate
    vkEnumerateInstanceVersion)."""
    vulkan = vulkan or _library()
    if not hasattr(vulkan, "vkEnumerateInstanceVersion"):
        return 1 << 22
    version = ctypes.c_uint32()
    vulkan.vkEnumerateInstanceVersion(ctypes.byref(version))
    return version.value


@contextlib.contextmanager
def _instance(vulkan, api_version=None):
    app = _ApplicationInfo(sType=_STRUCTURE_TYPE["application_info"], apiVersion=api_version) \
        if api_version else None
    info = _InstanceCreateInfo(sType=_STRUCTURE_TYPE["instance_create_info"],
                               pApplicationInfo=ctypes.pointer(app) if app else None)
    if PORTABILITY_ENUMERATION in _extension_names(vulkan):
        names = (ctypes.c_char_p * 1)(PORTABILITY_ENUMERATION.encode())
        info.flags = _CREATE_ENUMERATE_PORTABILITY
        info.enabledExtensionCount, info.ppEnabledExtensionNames = 1, ctypes.addressof(names)
    instance = ctypes.c_void_p()
    if vulkan.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        raise LoaderError("vkCreateInstance failed: no Vulkan driver is installed")
    try:
        yield instance
    finally:
        vulkan.vkDestroyInstance(instance, None)


def _handles(vulkan, instance):
    count = ctypes.c_uint32()
    vulkan.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
    handles = (ctypes.c_void_p * count.value)()
    vulkan.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
    return handles[:count.value]


def count_physical_devices():
    """How many Vulkan devices the loader finds."""
    vulkan = _library()
    with _instance(vulkan) as instance:
        return len(_handles(vulkan, instance))


def physical_devices():
    """One dict per device, in the loader's order (which Kompute lists them in too): name,
    vendor_id, device_id, api_version, driver_version (raw), driver_id, driver_name, driver_info
    and conformance_version (None where the device or loader predates Vulkan 1.2),
    subgroup_operations (the SUBGROUP_FEATURES names compute shaders may use; empty before
    Vulkan 1.1) and subgroup_size, extensions
    (the device extensions' names), memory_heaps, a list of {"size": bytes,
    "device_local": bool}, and compute_queue_family with its timestamp_valid_bits: the first
    queue family with compute (the one Kompute's Manager opens; None and 0 where there is none),
    the bits its timestamps count in (0: it writes none)."""
    vulkan = _library()
    # Vulkan 1.2 where the loader has it: the driver properties are core there.
    api = VK_API_VERSION_1_2 if loader_version(vulkan) >= VK_API_VERSION_1_1 else None
    found = []
    with _instance(vulkan, api) as instance:
        for handle in _handles(vulkan, instance):
            props = _DeviceProperties()
            vulkan.vkGetPhysicalDeviceProperties(ctypes.c_void_p(handle), ctypes.byref(props))
            info = {"name": props.deviceName.decode(errors="replace"),
                    "vendor_id": props.vendorID, "device_id": props.deviceID,
                    "api_version": props.apiVersion, "driver_version": props.driverVersion,
                    "driver_id": None, "driver_name": None, "driver_info": None,
                    "conformance_version": None}
            info.update(subgroup_operations=[], subgroup_size=None)
            if api and props.apiVersion >= VK_API_VERSION_1_1:
                driver = _DriverProperties(
                    sType=_STRUCTURE_TYPE["physical_device_driver_properties"])
                subgroup = _SubgroupProperties(
                    sType=_STRUCTURE_TYPE["physical_device_subgroup_properties"],
                    pNext=ctypes.addressof(driver) if props.apiVersion >= VK_API_VERSION_1_2
                    else None)
                props2 = _DeviceProperties2(sType=_STRUCTURE_TYPE["physical_device_properties_2"],
                                            pNext=ctypes.addressof(subgroup))
                vulkan.vkGetPhysicalDeviceProperties2(ctypes.c_void_p(handle), ctypes.byref(props2))
                if subgroup.supportedStages & _STAGE_COMPUTE:
                    info["subgroup_operations"] = [name for name, bit in SUBGROUP_FEATURES.items()
                                                   if subgroup.supportedOperations & bit]
                info["subgroup_size"] = subgroup.subgroupSize
                if props.apiVersion >= VK_API_VERSION_1_2:
                    info.update(driver_id=driver.driverID,
                                driver_name=driver.driverName.decode(errors="replace"),
                                driver_info=driver.driverInfo.decode(errors="replace"),
                                conformance_version=".".join(map(str, driver.conformanceVersion)))
            memory = _MemoryProperties()
            vulkan.vkGetPhysicalDeviceMemoryProperties(ctypes.c_void_p(handle),
                                                       ctypes.byref(memory))
            info["extensions"] = _extension_names(vulkan, ctypes.c_void_p(handle))
            info["compute_queue_family"], info["timestamp_valid_bits"] = next(
                ((i, family.timestampValidBits) for i, family in
                 enumerate(_queue_families(vulkan, ctypes.c_void_p(handle)))
                 if family.queueFlags & _QUEUE_COMPUTE), (None, 0))
            info["memory_heaps"] = [
                {"size": heap.size, "device_local": bool(heap.flags & _MEMORY_HEAP_DEVICE_LOCAL)}
                for heap in memory.memoryHeaps[:memory.memoryHeapCount]]
            found.append(info)
    return found


def _queue_families(vulkan, device):
    count = ctypes.c_uint32()
    vulkan.vkGetPhysicalDeviceQueueFamilyProperties(device, ctypes.byref(count), None)
    families = (_QueueFamilyProperties * count.value)()
    vulkan.vkGetPhysicalDeviceQueueFamilyProperties(device, ctypes.byref(count), families)
    return families[:count.value]


def _extension_names(vulkan, device=None):
    """The extensions the loader offers (instance), or those a physical device offers."""
    count = ctypes.c_uint32()
    enumerate_ = (lambda *a: vulkan.vkEnumerateDeviceExtensionProperties(device, *a)) \
        if device else vulkan.vkEnumerateInstanceExtensionProperties
    enumerate_(None, ctypes.byref(count), None)
    found = (_ExtensionProperties * count.value)()
    enumerate_(None, ctypes.byref(count), found)
    return [e.extensionName.decode(errors="replace") for e in found[:count.value]]


def instance_extensions():
    """The names of the instance extensions the loader offers."""
    return _extension_names(_library())


def instance_layers():
    """{layer name: spec version string} for every instance layer the loader finds."""
    vulkan = _library()
    count = ctypes.c_uint32()
    vulkan.vkEnumerateInstanceLayerProperties(ctypes.byref(count), None)
    layers = (_LayerProperties * count.value)()
    vulkan.vkEnumerateInstanceLayerProperties(ctypes.byref(count), layers)
    return {layer.layerName.decode(errors="replace"): version_string(layer.specVersion)
            for layer in layers[:count.value]}
