"""vkgrad as a user gets it: a wheel built from this checkout, installed into a fresh virtual
environment, and used from outside the repository (so nothing can come from the source tree)."""
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import VULKAN
from vkgrad import kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                            **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def kp_wheel():
    """The Kompute wheel this environment's kp was installed from (scripts/setup.sh builds it
    once and caches it; it records the wheel's path in kp's direct_url.json)."""
    url = json.loads(importlib.metadata.distribution("kp").read_text("direct_url.json")
                     or "{}").get("url", "")
    assert url.startswith("file://"), f"kp was not installed from a local wheel ({url!r}): " \
        "run `make setup`"
    return url.removeprefix("file://")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(python, commit): the interpreter of a fresh virtual environment holding the wheel built
    from the files git sees in this checkout (plus Kompute where this environment has a Vulkan
    device), and the commit of the git repository the wheel was built in."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # build from a copy: an in-tree build would leave build/ in the repository
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # skips tracked files deleted from the work tree
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    git = ["git", "-C", src, "-c", "user.name=vkgrad tests", "-c", "user.email=tests@invalid",
           "-c", "commit.gpgsign=false"]
    run([*git, "init", "--quiet"])
    run([*git, "add", "."])
    run([*git, "commit", "--quiet", "--no-verify", "-m", "the wheel's sources"])
    commit = run([*git, "rev-parse", "HEAD"]).strip()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("vkgrad-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"])
    python = tmp / "venv" / "bin" / "python"
    # pip from this environment installs into the new one; the dependencies come from the
    # package index pip is configured with.
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel,
         *([kp_wheel()] if VULKAN else [])])
    return python, commit


def clean_env(tmp_path):
    """The environment for the installed vkgrad: nothing from the checkout, a fresh kernel cache
    (so a user kernel compiles rather than comes from an earlier run's cache)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


# Builds a wheel and a virtual environment (about 20 s): `-m "not slow"` leaves it out.
@pytest.mark.slow
def test_custom_op_runs_from_the_installed_wheel(built, device, tmp_path):
    """examples/custom_op.py includes common.glsl in its kernel: the header must come with the
    package."""
    venv_python, _ = built
    script = tmp_path / "custom_op.py"
    shutil.copy(ROOT / "examples" / "custom_op.py", script)
    env = clean_env(tmp_path)

    where = run([venv_python, "-c", "import vkgrad; print(vkgrad.__file__)"], cwd=tmp_path, env=env)
    assert pathlib.Path(where.strip()).is_relative_to(venv_python.parent.parent)

    out = run([venv_python, script, "--device", device], cwd=tmp_path, env=env)
    assert f"squareplus on {device} in float32" in out
    x = np.linspace(-3, 3, 7).astype(np.float32)
    y = 0.5 * (x + np.sqrt(x * x + np.float32(4)))
    assert f"  y        {np.array2string(y, precision=4)}" in out


@pytest.mark.slow
def test_report_from_the_installed_wheel(built, tmp_path):
    """`python -m vkgrad` outside any checkout names the commit the wheel was built from."""
    venv_python, commit = built
    data = json.loads(run([venv_python, "-m", "vkgrad", "--json"], cwd=tmp_path,
                          env=clean_env(tmp_path)))
    assert data["vkgrad"]["commit"] == f"{commit} (built into this installation)"
    assert pathlib.Path(data["vkgrad"]["location"]).is_relative_to(venv_python.parent.parent)
    assert data["Packages"]["Kompute (kp)"] != "not installed" or not VULKAN


def test_user_kernels_compile_against_the_package_headers(tmp_path, monkeypatch):
    """vk.Kernel includes the headers the package carries, and a changed header means a new
    compile, never a stale SPIR-V from the kernel cache."""
    include = tmp_path / "include"
    shutil.copytree(kernel.INCLUDE, include)
    monkeypatch.setattr(kernel, "INCLUDE", include)
    monkeypatch.setattr(kernel, "CACHE", tmp_path / "cache")
    source = """
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 256) in;
void main() { arena[gl_GlobalInvocationID.x] = SCALE; }
"""
    header = include / "common.glsl"
    header.write_text(header.read_text() + "\n#define SCALE 1u\n")
    first = kernel.Kernel("scale_header", source).spirv()
    header.write_text(header.read_text().replace("#define SCALE 1u", "#define SCALE 2u"))
    second = kernel.Kernel("scale_header", source).spirv()
    assert first != second
    assert len(list((tmp_path / "cache").glob("scale_header-*.spv"))) == 2
