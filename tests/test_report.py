"""`python -m vkgrad`: the bug-report summary, checked against what this process finds itself."""
import glob
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import subprocess
import sys

import ml_dtypes
import numpy as np

import vkgrad as vk
from conftest import VULKAN

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where the Vulkan loader looks for explicit layers on Linux (besides VK_LAYER_PATH).
LAYER_DIRS = ["/etc/vulkan/explicit_layer.d", "/usr/local/share/vulkan/explicit_layer.d",
              "/usr/share/vulkan/explicit_layer.d",
              os.path.expanduser("~/.local/share/vulkan/explicit_layer.d")]


def report(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "vkgrad", *args], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def head():
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_report_has_every_section_with_real_values():
    before = head()
    data = json.loads(report("--json"))
    heads = {before, head()}  # a commit may land while the report runs
    text = report()
    for section in data:
        assert f"\n{section}\n" in f"\n{text}"

    assert data["vkgrad"]["version"] == vk.__version__
    assert re.match("[0-9a-f]{40}", data["vkgrad"]["commit"])[0] in heads
    assert data["Python"]["version"].startswith(platform.python_version())
    assert data["Python"]["executable"] == sys.executable
    try:
        kp_version = importlib.metadata.version("kp")
    except importlib.metadata.PackageNotFoundError:
        kp_version = "not installed"
    assert data["Packages"] == {"numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__,
                                "safetensors": importlib.metadata.version("safetensors"),
                                "Kompute (kp)": kp_version}
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert data["numpy"]["blas (build)"] == f"{blas['name']} {blas['version']}"

    flags = set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.partition(":")[2].split())
            break
    cpu = data["CPU"]
    for feature in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"):
        if platform.machine() == "x86_64":
            assert feature in (cpu["features"] if feature in flags else cpu["lacks"]).split()
    assert cpu["logical CPUs"] == str(os.cpu_count())

    manifests = [p for d in os.environ.get("VK_LAYER_PATH", "").split(os.pathsep) + LAYER_DIRS
                 if d for p in glob.glob(os.path.join(d, "VkLayer_khronos_validation.json"))]
    assert data["Vulkan"]["validation layer"].startswith(
        "installed" if manifests else "not installed")

    devices = data["Vulkan devices"]
    assert len(devices) == max(len(VULKAN), 1)
    for d in VULKAN:
        info, got = d.info(), devices[str(d)]
        assert got["name"] == d.name and got["type"] == info["device_type"]
        assert got["subgroup size"] == info["subgroup_size"]
        assert got["shared memory"].startswith(f"{info['shared_memory_size']} bytes")
        assert got["max storage buffer range"].startswith(f"{info['max_storage_buffer_range']} ")
        assert got["push constants"].startswith(f"{info['push_constants_size']} bytes")
        assert "unknown" not in got["driver"] and "bytes" in got["memory heaps"]
        assert re.search(rf"^ +subgroup size +{info['subgroup_size']}$", text, re.M)
    if not VULKAN:
        assert "unavailable" in devices


def test_report_without_a_vulkan_driver():
    """No driver for the loader to find: the report still comes, and says why."""
    data = json.loads(report("--json", env={"VK_ICD_FILENAMES": os.devnull,
                                            "VK_DRIVER_FILES": os.devnull}))
    assert list(data["Vulkan devices"]) == ["unavailable"]
    assert "vkCreateInstance failed" in data["Vulkan devices"]["unavailable"] \
        or "found no device" in data["Vulkan devices"]["unavailable"]
    assert data["Packages"]["numpy"] == np.__version__
    assert data["Environment"]["VK_ICD_FILENAMES"] == os.devnull
