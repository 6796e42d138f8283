"""The Vulkan pipeline cache, kept on disk across runs, so that a program's second run takes its
pipelines from the driver's cache instead of compiling them again (see docs/performance.md).

Every pipeline a Manager creates goes through one VkPipelineCache (the Kompute patch). At start
the backend merges the file `<dir>/<vendor>-<device>-<pipelineCacheUUID>.bin` into it, and at
exit it writes the cache back, to a temporary file in the same folder that is then renamed over
the old one, so that a crash or a concurrent process never leaves a half-written file (of two
processes that exit together, the last one's cache wins). `<dir>` is
`${XDG_CACHE_HOME:-~/.cache}/vkgrad/pipelines`; VKGRAD_PIPELINE_CACHE=DIR puts it in DIR instead
and VKGRAD_PIPELINE_CACHE=off keeps nothing on disk.

A file is merged only if its header (VkPipelineCacheHeaderVersionOne: header length >= 32,
version 1, vendor ID, device ID, pipelineCacheUUID, little-endian on the hosts vkgrad runs on)
names this device and driver build; anything else (another GPU, a driver update, a truncated or
garbled file) is ignored and replaced at exit. The driver checks the data after the header itself.
"""
import atexit
import os
import pathlib
import struct
import tempfile
import warnings

HEADER = struct.Struct("<IIII16s")  # length, version, vendorID, deviceID, pipelineCacheUUID
HEADER_VERSION_ONE = 1


def directory():
    """Where cache files go, or None when VKGRAD_PIPELINE_CACHE=off."""
    setting = os.environ.get("VKGRAD_PIPELINE_CACHE", "").strip()
    if setting.lower() == "off":
        return None
    if setting:
        return pathlib.Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "vkgrad" / "pipelines"


def matches(data, info):
    """Whether `data` starts with a version-one header for the device `info` describes
    (a Manager.list_devices() entry)."""
    if len(data) < HEADER.size:
        return False
    length, version, vendor, device, uuid = HEADER.unpack_from(data)
    return (HEADER.size <= length <= len(data) and version == HEADER_VERSION_ONE
            and vendor == info["vendor_id"] and device == info["device_id"]
            and uuid == info["pipeline_cache_uuid"])


class PipelineCache:
    """The cache file of one Manager's device: `load()` merges it into the Manager's cache,
    `save()` writes that back (also at exit, when pipelines were created). `path`: None if off.
    `loaded`: bytes merged from the file (0: none, or ignored)."""

    def __init__(self, manager, info):
        self.manager, self.info = manager, info
        folder = directory()
        self.path = None if folder is None else folder / (
            f"{info['vendor_id']:04x}-{info['device_id']:04x}-"
            f"{info['pipeline_cache_uuid'].hex()}.bin")
        self.loaded = 0
        self.created = 0  # pipelines created since load: save() has something to add
        if self.path is not None:
            self.load()
            atexit.register(self._save_at_exit)

    def load(self):
        try:
            data = self.path.read_bytes()
        except OSError:  # no file yet, or unreadable: start empty
            return
        if matches(data, self.info):
            self.manager.merge_pipeline_cache(data)
            self.loaded = len(data)

    def save(self):
        """Write the cache to `path` atomically (temporary file, then rename)."""
        data = self.manager.pipeline_cache_data()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        self.created = 0

    def _save_at_exit(self):
        if self.created:
            try:
                self.save()
            except OSError as e:  # a read-only or full disk costs the next run time, no more
                warnings.warn(f"vkgrad could not save the pipeline cache to {self.path}: {e}")
