"""What a bug report needs to say about the machine: `python -m vkgrad` prints it.

After torch.utils.collect_env: vkgrad's version and commit; Python, the OS; numpy with the BLAS
it runs on, ml_dtypes, safetensors and Kompute (kp); the CPU with the features that set host
speed (AVX2, AVX-512, avx512_bf16, AMX); the Vulkan loader, whether the Khronos validation layer
is installed (`make test-sync` needs it), and every Vulkan device with its driver, type, memory
heaps and the limits vkgrad sizes its kernels by; glslangValidator, which compiles user kernels;
and the environment variables that change what vkgrad, the Vulkan loader or lavapipe do.

>>> from vkgrad import report
>>> data = report.collect()              # sections of {field: value}: plain data, JSON-ready
>>> print(report.format_report(data))    # what `python -m vkgrad` prints (--json: the data)

Nothing here fails for want of a component: a missing one reads "not installed" or gives the
reason it is unavailable.
"""
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import sys

from . import __version__
from .device import VulkanUnavailable, device, devices
from .backend import loader

PACKAGE = pathlib.Path(__file__).resolve().parent
COMMIT_FILE = PACKAGE / "_commit.txt"  # written into wheels by setup.py (git describe)
VALIDATION_LAYER = "VK_LAYER_KHRONOS_validation"
CPU_FEATURES = {  # /proc/cpuinfo flag names worth knowing about, per architecture
    "x86_64": ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
               "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"],
    "aarch64": ["asimd", "asimdhp", "asimddp", "bf16", "i8mm", "sve", "sve2"],
}
ENVIRONMENT = ["VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_LAYER_PATH", "VK_ADD_LAYER_PATH",
               "VK_INSTANCE_LAYERS", "VK_LAYER_ENABLES", "LP_NUM_THREADS",
               "LP_NATIVE_VECTOR_WIDTH", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "XDG_CACHE_HOME"]  # besides every VKGRAD_* variable


def collect():
    """The report as {section: {field: value}}; "Vulkan devices" is {"vulkan:N": {...}}."""
    return {
        "vkgrad": {"version": __version__, "commit": commit(), "location": str(PACKAGE)},
        "Python": {"version": sys.version.replace("\n", " "), "executable": sys.executable,
                   "OS": platform.platform()},
        "Packages": {name: _version(dist) for name, dist in
                     [("numpy", "numpy"), ("ml_dtypes", "ml_dtypes"),
                      ("safetensors", "safetensors"), ("Kompute (kp)", "kp")]},
        "numpy": _numpy(),
        "CPU": _cpu(),
        "Vulkan": _vulkan(),
        "Vulkan devices": _vulkan_devices(),
        "Tools": {"glslangValidator": _glslang()},
        "Environment": {k: v for k, v in sorted(os.environ.items())
                        if k.startswith("VKGRAD_") or k in ENVIRONMENT} or {"(none set)": ""},
    }


def format_report(data):
    """The report as aligned text, one section after another."""
    lines = []

    def fields(items, indent):
        width = max((len(k) for k in items), default=0)
        for key, value in items.items():
            if isinstance(value, dict):
                lines.append(f"{indent}{key}")
                fields(value, indent + "  ")
            else:
                lines.append(f"{indent}{key:<{width}}  {value}".rstrip())

    for section, items in data.items():
        lines.append(section)
        fields(items, "  ")
        lines.append("")
    return "\n".join(lines)


def commit():
    """The git commit vkgrad runs from: a checkout's HEAD (marked -dirty with local changes),
    else the one the wheel was built from, else "unknown"."""
    root = PACKAGE.parent
    if (root / ".git").exists():
        try:
            described = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty",
                                        "--abbrev=40"], capture_output=True, text=True, timeout=30)
        except OSError as e:
            return f"unknown (git checkout {root}, but git does not run: {e})"
        if described.returncode == 0:
            return f"{described.stdout.strip()} (git checkout {root})"
        return f"unknown (git checkout {root}: {described.stderr.strip()})"
    if COMMIT_FILE.exists():
        return f"{COMMIT_FILE.read_text().strip()} (built into this installation)"
    return "unknown (neither a git checkout nor built from one)"


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _numpy():
    import numpy as np
    config = np.show_config(mode="dicts")
    deps = config.get("Build Dependencies", {})
    out = {f"{lib} (build)": f"{deps.get(lib, {}).get('name', 'unknown')} "
                             f"{deps.get(lib, {}).get('version', '')}".strip()
           for lib in ("blas", "lapack")}
    if "openblas configuration" in deps.get("blas", {}):
        out["openblas configuration"] = deps["blas"]["openblas configuration"]
    simd = config.get("SIMD Extensions", {})
    out["SIMD"] = " ".join(simd.get("baseline", []) + simd.get("found", [])) or "unknown"
    try:
        import threadpoolctl
    except ImportError:
        out["blas (runtime)"] = "unknown (threadpoolctl is not installed)"
    else:
        for i, pool in enumerate(p for p in threadpoolctl.threadpool_info()
                                 if p.get("user_api") == "blas"):
            out[f"blas (runtime {i})"] = (
                f"{pool.get('internal_api')} {pool.get('version')}, {pool.get('num_threads')} "
                f"threads, {pool.get('architecture', 'unknown architecture')}, {pool.get('filepath')}")
    return out


def _cpu():
    machine = platform.machine()
    out = {"architecture": machine, "model": platform.processor() or "unknown",
           "logical CPUs": str(os.cpu_count())}
    if hasattr(os, "sched_getaffinity"):
        out["usable by this process"] = str(len(os.sched_getaffinity(0)))
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        out["features"] = "unknown (no /proc/cpuinfo)"
        return out
    first = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    out["model"] = first.get("model name") or first.get("Hardware") or out["model"]
    flags = set((first.get("flags") or first.get("Features") or "").split())
    wanted = CPU_FEATURES.get(machine, [])
    out["features"] = " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)
    out["lacks"] = " ".join(f for f in wanted if f not in flags) or "none"
    return out


def _vulkan():
    try:
        version = loader.version_string(loader.loader_version())
        layers = loader.instance_layers()
    except loader.LoaderError as e:
        return {"loader": str(e), "validation layer": "unknown (no Vulkan loader)"}
    layer = (f"installed ({VALIDATION_LAYER} {layers[VALIDATION_LAYER]})"
             if VALIDATION_LAYER in layers else
             "not installed (Debian: apt-get install vulkan-validationlayers)")
    return {"loader": version, "validation layer": layer}


def _vulkan_devices():
    found = [d for d in devices() if d.kind == "vulkan"]
    if not found:
        try:
            device("vulkan")
        except VulkanUnavailable as e:
            return {"unavailable": str(e)}
    try:
        details = loader.physical_devices()
    except loader.LoaderError:
        details = []
    # The loader lists devices in Kompute's order; the name check guards against a mismatch.
    matched = [details[d.index] if d.index < len(details) and details[d.index]["name"] == d.name
               else None for d in found]
    return {str(d): _describe(d, x) for d, x in zip(found, matched)}


def _describe(dev, details):
    """One device: what Kompute reports (Device.info) with the loader's driver and memory."""
    info = dev.info()
    out = {"name": dev.name, "type": info["device_type"], "vendor": info["vendor"]}
    if details is None:
        out["driver"] = "unknown (the loader lists this device differently from Kompute)"
        out["memory heaps"] = "unknown"
    else:
        driver = (f"{details['driver_name']}: {details['driver_info']}"
                  if details["driver_name"] else "unknown (Vulkan < 1.2)")
        out["driver"] = (f"{driver}; version {_driver_version(details)}"
                         f"; conformance {details['conformance_version'] or 'unknown'}")
        out["api version"] = loader.version_string(details["api_version"])
        out["memory heaps"] = ", ".join(
            f"{_size(h['size'])}{' device-local' if h['device_local'] else ''}"
            for h in details["memory_heaps"]) or "none"
    out.update({
        "subgroup size": info["subgroup_size"],
        "shared memory": _size(info["shared_memory_size"]),
        "max storage buffer range": _size(info["max_storage_buffer_range"]),
        "push constants": _size(info["push_constants_size"]),
        "max workgroup invocations": info["max_workgroup_invocations"],
        "timestamps": "yes" if info["timestamps_supported"] else "no",
    })
    return out


def _driver_version(details):
    """driverVersion decoded the way its vendor packs it (NVIDIA and Intel-on-Windows differ
    from VK_MAKE_API_VERSION)."""
    v = details["driver_version"]
    if details["vendor_id"] == 0x10DE:
        return f"{v >> 22}.{(v >> 14) & 0xFF}.{(v >> 6) & 0xFF}.{v & 0x3F}"
    if details["vendor_id"] == 0x8086 and sys.platform == "win32":
        return f"{v >> 14}.{v & 0x3FFF}"
    return loader.version_string(v)


def _size(n):
    """Bytes, with a binary unit when that is shorter to read."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n} bytes ({n / (1 << shift):g} {unit})"
    return f"{n} bytes"


def _glslang():
    path = shutil.which("glslangValidator")
    if path is None:
        return "not found (Debian: apt-get install glslang-tools)"
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError) as e:
        version = f"version unknown: {e}"
    return f"{path} ({version})"
