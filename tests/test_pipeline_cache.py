"""The pipeline cache on disk (vkgrad/backend/pipeline_cache.py) and the portability extensions
of the Kompute patch. Each run is a fresh Python process with its own XDG_CACHE_HOME under
tmp_path, as a program run twice on one machine would be."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from vkgrad.backend import loader, pipeline_cache

from conftest import VULKAN

pytestmark = [pytest.mark.vulkan, pytest.mark.skipif(not VULKAN, reason="no Vulkan device")]

# Two elementwise kernels and a reduction: a few distinct pipelines, and a value to compare.
PROGRAM = """
import json, vkgrad as vk
dev = vk.device("vulkan")
value = (vk.arange(1000, device=dev) * 2 + 1).sum().item()
cache = dev.backend.pipeline_cache
stats = vk.stats()
print(json.dumps({"value": value, "path": cache.path and str(cache.path), "loaded": cache.loaded,
                  "created": stats["pipelines_created"], "hits": stats["pipeline_cache_hits"]}))
"""


def run(tmp_path, setting=None):
    """PROGRAM in a new process; `setting`: VKGRAD_PIPELINE_CACHE (None: unset)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("VKGRAD_PIPELINE_CACHE", None)
    if setting is not None:
        env["VKGRAD_PIPELINE_CACHE"] = setting
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def files(folder):
    """The files under `folder`, by name. (Mesa keeps its own shader cache in XDG_CACHE_HOME,
    under mesa_shader_cache: look under vkgrad/.)"""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def info():
    """The device's Manager.list_devices() entry (vendor and device IDs, pipelineCacheUUID)."""
    return VULKAN[0].backend.info


def test_second_run_reads_what_the_first_wrote(tmp_path, info):
    first = run(tmp_path)
    path = tmp_path / "xdg" / "vkgrad" / "pipelines" / (
        f"{info['vendor_id']:04x}-{info['device_id']:04x}-{info['pipeline_cache_uuid'].hex()}.bin")
    assert first["path"] == str(path) and first["loaded"] == 0 and first["created"] > 0
    assert files(tmp_path / "xdg" / "vkgrad") == [path.name]  # no temporary file left behind
    data = path.read_bytes()
    assert pipeline_cache.matches(data, info)

    second = run(tmp_path)
    assert second["value"] == first["value"] == 1000 ** 2
    assert second["loaded"] == len(data)
    assert second["created"] == first["created"]
    # The driver says whether it took a pipeline from the cache (pipeline creation feedback).
    # A cache that holds only its header (lavapipe 22.3 keeps no pipelines) can hit nothing;
    # a driver that stored the first run's pipelines serves all of them to the second.
    assert first["hits"] == 0
    assert second["hits"] == (second["created"] if len(data) > pipeline_cache.HEADER.size else 0)


@pytest.mark.parametrize("garbage", ["random", "truncated", "other device"])
def test_a_corrupt_or_foreign_file_is_ignored_and_replaced(tmp_path, info, garbage):
    path = pathlib.Path(run(tmp_path)["path"])
    good = path.read_bytes()
    header = pipeline_cache.HEADER
    bad = {"random": os.urandom(200), "truncated": good[:header.size - 1],
           "other device": header.pack(header.size, 1, info["vendor_id"], info["device_id"],
                                       bytes(16)) + good[header.size:]}[garbage]
    assert not pipeline_cache.matches(bad, info)
    path.write_bytes(bad)
    again = run(tmp_path)
    assert again["loaded"] == 0 and again["value"] == 1000 ** 2
    assert pipeline_cache.matches(path.read_bytes(), info)  # rewritten at exit


def test_off_keeps_nothing_on_disk(tmp_path):
    result = run(tmp_path, "off")
    assert result["path"] is None and result["loaded"] == 0 and result["value"] == 1000 ** 2
    assert files(tmp_path / "xdg" / "vkgrad") == []


def test_a_directory_relocates_the_cache(tmp_path, info):
    folder = tmp_path / "elsewhere"
    run(tmp_path, str(folder))
    assert files(tmp_path / "xdg" / "vkgrad") == []
    (name,) = files(folder)
    assert pipeline_cache.matches((folder / name).read_bytes(), info)
    assert run(tmp_path, str(folder))["loaded"] > 0


def test_portability_extensions_enabled_exactly_where_offered():
    """VK_KHR_portability_enumeration (instance) and VK_KHR_portability_subset (device, MoltenVK)
    are enabled where the loader and the device offer them, and only there; so is
    VK_EXT_pipeline_creation_feedback, which reports cache hits. lavapipe offers no
    portability_subset; the loader (1.3.216+) offers portability_enumeration."""
    manager = VULKAN[0].backend.manager
    enabled = manager.enabled_extensions()
    offered_instance = set(loader.instance_extensions())
    assert set(enabled["instance"]) & {loader.PORTABILITY_ENUMERATION} == \
        offered_instance & {loader.PORTABILITY_ENUMERATION}
    offered_device = set(loader.physical_devices()[VULKAN[0].index]["extensions"])
    wanted = {"VK_KHR_portability_subset", "VK_EXT_pipeline_creation_feedback"}
    assert set(enabled["device"]) & wanted == offered_device & wanted
