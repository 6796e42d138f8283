"""Compiles the GLSL shaders into the wheel.

All metadata lives in pyproject.toml. This file only hooks build_py so that a built wheel
carries vkgrad/_spirv/*.spv, compiled by tools/build_shaders.py straight into the build
directory, and vkgrad/_spirv/include/*.glsl, the shared headers user kernels include (copied
there by the same script). Editable installs skip the hook: there, scripts/setup.sh and
`make shaders` write both into vkgrad/_spirv/ in the source tree.
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
        script = os.path.join(HERE, "tools", "build_shaders.py")
        if not os.path.exists(script):
            self.warn("tools/build_shaders.py not found: the wheel ships only the shaders "
                      "already in vkgrad/_spirv/")
            return
        out = os.path.join(self.build_lib, "vkgrad", "_spirv")
        os.makedirs(out, exist_ok=True)
        subprocess.check_call([sys.executable, script, "--out", out], cwd=HERE)


setup(cmdclass={"build_py": BuildPyWithShaders})
