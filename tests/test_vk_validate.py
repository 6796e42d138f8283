"""scripts/vk-validate.sh, the check behind `make test-sync`: its verdict must not depend on
what earlier runs left in the user's cache directory.

Not marked `vulkan`: make test-sync would otherwise run the script inside itself.
"""
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import VULKAN

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "vk-validate.sh"
PROGRAM = ("import vkgrad as vk; x = vk.tensor([1.0, 2.0], device='vulkan'); "
           "assert (x + 1).numpy().tolist() == [2.0, 3.0]")


@pytest.mark.skipif(not VULKAN, reason="no Vulkan device")
def test_clean_on_a_machine_with_no_cache_yet(tmp_path):
    # A fresh machine: empty cache and home directories. The layer's shader validation cache
    # used to report "Cannot open shader validation cache" (UNASSIGNED-cache-file-error) there.
    cache = tmp_path / "cache"
    cache.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), VKGRAD_VK_LOG_DIR=str(tmp_path / "log"))
    result = subprocess.run(["bash", str(SCRIPT), sys.executable, "-c", PROGRAM], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synchronisation validation: no messages" in result.stdout
    log = (tmp_path / "log" / "validation.log").read_text()
    assert "SYNCHRONIZATION_VALIDATION" in log  # the layer ran, with its hazard checks on
    assert not list(cache.glob("shader_validation_cache*"))  # and left nothing behind
