"""Adding an op with your own GLSL kernel and its backward, on the host and on Vulkan.

    python examples/custom_op.py [--device host|vulkan] [--dtype float32|bfloat16]

The op is squareplus, a smooth ReLU: y = (x + sqrt(x^2 + b)) / 2, with dy/dx = (1 + x / sqrt(x^2
+ b)) / 2. Three pieces make it a vkgrad op:

1. a Vulkan kernel: GLSL source given to `vk.Kernel`, compiled on first use. It reads and writes
   the arena (every tensor lives in it) through the helpers of shaders/common.glsl, so one source
   serves float32 and bfloat16 (two elements packed per word: each invocation writes one whole
   word, so neighbours never race);
2. a host implementation in numpy, with the same semantics;
3. a `vk.autograd.Function` whose forward picks one of them by device, and whose backward is
   written in Tensor ops, so it runs anywhere and can itself be differentiated (create_graph).
"""
import argparse

import numpy as np

import vkgrad as vk

SQUAREPLUS = vk.Kernel("squareplus", """
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform Params { uint n; uint dt; uint x; uint y; float b; } p;

void main() {
    uint per = elems_per_word(p.dt);           // elements per 32-bit word: 1 (f32) or 2 (bf16)
    uint words = (p.n + per - 1u) / per;
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    // grid-stride: the grid holds at most vk.Kernel.MAX_THREADS invocations, words may be more
    for (uint word = gl_GlobalInvocationID.x; word < words; word += threads) {
        uint bits = 0u;
        for (uint k = 0u; k < per && word * per + k < p.n; ++k) {
            uint i = word * per + k;
            float v = load_f32(p.dt, p.x, int(i));
            float r = 0.5 * (v + sqrt(v * v + p.b));
            bits |= place_bits(p.dt, f32_to_bits(p.dt, r), i);
        }
        ARENA(p.y / per + word) = bits;        // y is fresh, so it starts on a word boundary
    }
}
""")


def squareplus_forward(x, b):
    """y = (x + sqrt(x^2 + b)) / 2 without recording: the kernel on Vulkan, numpy on the host."""
    if x.device.kind == "host":
        v = x.numpy().astype(np.float32)
        return vk.tensor(0.5 * (v + np.sqrt(v * v + b)), dtype=x.dtype)
    x = x.contiguous()
    y = vk.empty(x.shape, dtype=x.dtype, device=x.device)
    per = 2 if x.dtype == vk.bfloat16 else 1
    words = -(-x.size // per)
    SQUAREPLUS.launch(min(words, vk.Kernel.MAX_THREADS), x.size, x.dtype, x, y, float(b))
    return y


class Squareplus(vk.autograd.Function):
    @staticmethod
    def forward(ctx, x, b=4.0):
        ctx.save_for_backward(x)
        ctx.b = b
        return squareplus_forward(x, b)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 + x / (x * x + ctx.b).sqrt()) * 0.5, None  # no gradient for b


def squareplus(x, b=4.0):
    """Squareplus with autograd: `squareplus(x).sum().backward()` fills x.grad."""
    return Squareplus.apply(x, b)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(vk.default_device()))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    x = vk.tensor(np.linspace(-3, 3, 7), dtype=args.dtype, device=args.device,
                  requires_grad=True)
    y = squareplus(x)
    (dy,) = vk.grad(y.sum(), x, create_graph=True)   # first derivative, itself differentiable
    (d2y,) = vk.grad(dy.sum(), x)                     # second derivative: b / (2 (x^2 + b)^1.5)
    print(f"squareplus on {x.device} in {x.dtype.name}")
    for name, t in (("x", x), ("y", y), ("dy/dx", dy), ("d2y/dx2", d2y)):
        print(f"  {name:8s}", np.array2string(t.numpy().astype(np.float32), precision=4))


if __name__ == "__main__":
    main()
