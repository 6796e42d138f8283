"""The tolerance table itself (tests/tolerances.py): it covers every floating elementwise op, its
tight bounds imply the spec's, and it fails results that are off by a few times the bound,
from a perturbed op or from a kernel that is really wrong."""
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.ops.elementwise import TABLE

import tolerances
from conftest import cast_input, reference_input, to_tensor
from opdb import op_tests

FLOAT_OPS = sorted(name for name, (_, result, _, domain) in TABLE.items()
                   if result != "bool" and domain not in ("int", "shift"))


def test_every_floating_elementwise_op_has_a_bound():
    assert sorted(set(FLOAT_OPS) - set(tolerances.ELEMENTWISE)) == []
    assert sorted(set(tolerances.ELEMENTWISE) - set(TABLE)) == []


def _cases(name):
    """The op's test_ops cases (near 1, and magnitudes 1e-6 to 1e3), float32, as float64."""
    rng = np.random.default_rng(0)
    for spec in op_tests(name):
        for inputs, params in spec.cases(rng):
            inputs = [cast_input(x, "float32") for x in inputs]
            if all(not isinstance(x, np.ndarray) or x.size for x in inputs):
                yield spec, inputs, params


@pytest.mark.parametrize("name", FLOAT_OPS)
def test_tight_bounds_imply_the_spec(name):
    """Lavapipe's IEEE bound is within the spec's, on the op's test inputs: a device that meets
    the tight one meets the spec's (test_ops checks only the tight one where there is one)."""
    for _, inputs, _ in _cases(name):
        exact = [reference_input(x) for x in inputs]
        ieee, ieee_abs = tolerances.allowed(name, exact, "ieee")
        spec, spec_abs = tolerances.allowed(name, exact, "spec")
        assert np.all(np.asarray(ieee) <= spec) and np.all(np.asarray(ieee_abs) <= spec_abs)


@pytest.mark.parametrize("name", FLOAT_OPS)
def test_results_a_few_bounds_off_fail(name, device):
    """The op's own results pass its bound; the same results moved by 3 times the bound (away
    from the reference, at every element) fail it everywhere, and moved by half of it nowhere."""
    which = tolerances.tight(device) or "spec"
    for spec, inputs, params in _cases(name):
        exact = [reference_input(x) for x in inputs]
        exact = [float(np.float32(x)) if isinstance(x, float) else x for x in exact]
        ref = np.asarray(spec.reference(*exact, **params), np.float64)
        got = spec.call(*[to_tensor(x, device, False) for x in inputs], **params)
        got = got.numpy().astype(np.float64)
        tolerances.check(name, got, ref, exact, which)
        ulps, extra = tolerances.allowed(name, exact, which, ref.shape)
        allowed = ulps * tolerances.f32_spacing(ref) + extra
        finite = np.isfinite(ref) & (np.abs(ref) < 3e38) & (allowed > 0)
        side = np.where(got >= ref, 1.0, -1.0)
        off = ref + 3 * side * allowed
        assert tolerances.violations(off, ref, ulps, extra)[finite].all(), name
        near = ref + 0.5 * side * allowed
        assert not tolerances.violations(near, ref, ulps, extra)[finite].any(), name


BUILTIN_SIN = vk.Kernel("builtin_sin", """
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform Params { uint n; uint x; uint y; } p;
void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u)
        ARENA(p.y + i) = floatBitsToUint(sin(uintBitsToFloat(ARENA(p.x + i))));
}""")


def test_the_drivers_sin_fails_the_bound_of_sin(vulkan):
    """A kernel that is really wrong: GLSL's sin, which the spec bounds only inside [-pi, pi]
    (2^-11 absolute), on arguments up to 1e30 fails vkgrad's bound for sin, which holds there."""
    x = (10.0 ** np.linspace(0, 30, 2000)).astype(np.float32)
    ref = np.sin(x.astype(np.float64))
    out = vk.empty(x.size, device=vulkan)
    BUILTIN_SIN.launch(x.size, x.size, vk.tensor(x, device=vulkan), out)
    with pytest.raises(AssertionError, match="beyond the spec bound"):
        tolerances.check("sin", out.numpy(), ref, [x.astype(np.float64)], "spec")
    tolerances.check("sin", vk.tensor(x, device=vulkan).sin().numpy(), ref,
                     [x.astype(np.float64)], "spec")
