"""Compiles the GLSL shaders into the wheel, and records the commit it was built from.

All metadata lives in pyproject.toml. This file only hooks build_py so that a built wheel
carries vkgrad/_spirv/*.spv, compiled by tools/build_shaders.py straight into the build
directory, and vkgrad/_spirv/include/*.glsl, the shared headers user kernels include (copied
there by the same script). Built from a git checkout, the wheel also records the commit in
vkgrad/_commit.txt for `python -m vkgrad`. Editable installs skip the hook: there, scripts/setup.sh
and `make shaders` write the shaders into vkgrad/_spirv/ in the source tree, and the report asks
git itself.
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithShaders(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        self.record_commit(os.path.join(self.build_lib, "vkgrad", "_commit.txt"))
        script = os.path.join(HERE, "tools", "build_shaders.py")
        if not os.path.exists(script):
            self.warn("tools/build_shaders.py not found: the wheel ships only the shaders "
                      "already in vkgrad/_spirv/")
            return
        out = os.path.join(self.build_lib, "vkgrad", "_spirv")
        os.makedirs(out, exist_ok=True)
        subprocess.check_call([sys.executable, script, "--out", out], cwd=HERE)

    def record_commit(self, path):
        """The checkout's commit as vkgrad/report.py's commit() describes one."""
        if not os.path.exists(os.path.join(HERE, ".git")):
            return
        try:
            described = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty",
                                        "--abbrev=40"], capture_output=True, text=True)
        except OSError as e:
            self.warn(f"git does not run ({e}): the wheel does not record its commit")
            return
        if described.returncode == 0:
            with open(path, "w") as f:
                f.write(described.stdout)


setup(cmdclass={"build_py": BuildPyWithShaders})
