"""Your own GLSL compute kernels, run on any Vulkan device beside vkgrad's.

>>> SCALE = vk.Kernel("scale", '''
... #version 450
... #extension GL_GOOGLE_include_directive : require
... #include "common.glsl"
... layout(local_size_x = 256) in;
... layout(push_constant) uniform Params { uint n; uint x; uint out_; float factor; } p;
... void main() {
...     uint i = gl_GlobalInvocationID.x;
...     if (i < p.n) ARENA(p.out_ + i) = floatBitsToUint(uintBitsToFloat(ARENA(p.x + i)) * p.factor);
... }''')
>>> x = vk.tensor([1.0, 2.0], device="vulkan"); out = vk.empty(2, device="vulkan")
>>> SCALE.launch(2, x.size, x, out, 3.0); out.tolist()
[3.0, 6.0]

The shader reads and writes tensors as 32-bit words through ARENA(w) (common.glsl, which also
has load/store helpers for every dtype: load_f32(dt, start, i), f32_to_bits, place_bits, ...):
the arena is one or more buffers (chunks), and w carries the chunk's slot in its top bits.
Arguments become push constants, one 32-bit word each, in order: a tensor gives the index of its
first element (counted in elements of its dtype: for float32, int32 and uint32 that is a word
address, and start / elements per word is one for the others; arithmetic within the tensor is
fine), a dtype its DT_* code (for the helpers), a float its float32 bits, an int itself.
`arena[w]`, one buffer, still works where all the tensors live in one chunk, and a launch whose
tensors live in several is refused.
Tensors must be contiguous. One launch holds at most Kernel.MAX_THREADS invocations (65,535
workgroups of 256, what every device takes); a kernel over more elements loops over them with a
grid stride, as examples/custom_op.py's does, and a larger `threads` raises. The DT_* dtype codes and OP_* codes are predefined. Kernels are
compiled with glslangValidator once per source and version of the headers (cached in
~/.cache/vkgrad/kernels) and get one pipeline per device, like vkgrad's own. `#include` finds
vkgrad's shared headers (common.glsl, philox.glsl), which the package carries in
vkgrad/_spirv/include/ (tools/build_shaders.py copies them there from shaders/).
examples/custom_op.py makes one into a differentiable op.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess

from . import kernels
from .dtypes import DType

INCLUDE = pathlib.Path(__file__).resolve().parent / "_spirv" / "include"
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / \
    "vkgrad" / "kernels"


class Kernel:
    """A compute shader from GLSL source; `launch(threads, *args)` queues it on the args' device."""

    def __init__(self, name, source):
        self.name, self.source = name, source
        self.family = f"user:{name}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"
        self._spirv = None

    def spirv(self):
        """The compiled SPIR-V (compiled on first use, then read from the cache)."""
        if self._spirv is None:
            self._spirv = _compile(self.name, self.source)
        return self._spirv

    # Vulkan guarantees 65,535 workgroups along x, and the grid is one-dimensional: a kernel
    # over more elements loops over them (grid-stride, see examples/custom_op.py).
    MAX_THREADS = kernels.MAX_GROUPS * kernels.WORKGROUP

    def launch(self, threads, *args):
        """Queue one dispatch of at least `threads` invocations (workgroups of the shader's
        local size, assumed 256 along x), with `args` as push constants. `threads` is at most
        MAX_THREADS (16,776,960): a kernel over more elements launches MAX_THREADS and steps
        its index by gl_NumWorkGroups.x * gl_WorkGroupSize.x."""
        from .tensor import Tensor
        if threads > self.MAX_THREADS:
            raise ValueError(
                f"kernel {self.name}: {threads} threads need more than the {kernels.MAX_GROUPS} "
                f"workgroups of {kernels.WORKGROUP} a Vulkan device is sure to launch; launch at "
                f"most vk.Kernel.MAX_THREADS ({self.MAX_THREADS}) and loop over the rest in the "
                "shader: for (uint i = gl_GlobalInvocationID.x; i < n; i += gl_NumWorkGroups.x * "
                "gl_WorkGroupSize.x)")
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors:
            raise ValueError(f"kernel {self.name}: needs at least one tensor argument")
        device = tensors[0].device
        if device.kind != "vulkan" or any(t.device != device for t in tensors):
            raise ValueError(f"kernel {self.name}: every tensor must be on one Vulkan device, got "
                             + ", ".join(str(t.device) for t in tensors))
        push = []
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                if not a._data.is_contiguous():
                    raise ValueError(f"kernel {self.name}: argument {i} (shape {a.shape}) is not "
                                     "contiguous; pass t.contiguous()")
                push.append(a._data.start)
            elif isinstance(a, DType):
                push.append(a.code)
            elif isinstance(a, float):
                push.append(kernels.f32_bits(a))
            elif isinstance(a, int) and not isinstance(a, bool):
                push.append(a & 0xFFFFFFFF)
            else:
                raise TypeError(f"kernel {self.name}: argument {i} must be a Tensor, dtype, float or "
                                f"int, not {type(a).__name__}")
        if len(push) > kernels.PUSH_WORDS:
            raise ValueError(f"kernel {self.name}: {len(push)} arguments, at most "
                             f"{kernels.PUSH_WORDS} fit in push constants")
        device.backend.register_kernel(self.family, self.spirv())
        device.backend.launch(self.family, "", threads, push)


def _compile(name, source):
    headers = [(h.name, h.read_text()) for h in sorted(INCLUDE.glob("*.glsl"))]
    if not headers:
        raise RuntimeError(f"vkgrad's shader headers are missing from {INCLUDE}: "
                           "run `python tools/build_shaders.py` (make shaders) in the checkout")
    digest = hashlib.sha256(repr((source, sorted(kernels.defines().items()), headers))
                            .encode()).hexdigest()
    target = CACHE / f"{name}-{digest[:24]}.spv"
    if not target.exists():
        compiler = shutil.which("glslangValidator")
        if compiler is None:
            raise RuntimeError("glslangValidator not found: install glslang-tools (make setup)")
        CACHE.mkdir(parents=True, exist_ok=True)
        src = target.with_suffix(".comp")
        src.write_text(source)
        partial = target.with_suffix(".spv.tmp")
        result = subprocess.run(kernels.glslang_command(compiler, src, partial, INCLUDE),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ValueError(f"kernel {name} does not compile:\n{result.stdout}{result.stderr}")
        os.replace(partial, target)  # never leave a half-written .spv in the cache
    return target.read_bytes()
