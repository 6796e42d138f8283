"""The Python/GLSL contract of kernels.LAYOUTS: each converted family's .comp takes its workgroup
size, limits, push constants and specialization constants from the generated header alone (or,
for matmul.comp's constants, the ids of kernels.MATMUL_SPEC), and the ops pack them by name."""
import pathlib
import re

import numpy as np
import pytest

from vkgrad import kernels
from vkgrad.kernel import INCLUDE

SHADERS = pathlib.Path(__file__).resolve().parent.parent / "shaders"


@pytest.mark.parametrize("family", sorted(kernels.LAYOUTS))
def test_a_converted_shader_declares_nothing_its_layout_does(family):
    layout = kernels.LAYOUTS[family]
    assert layout.shader in kernels.FAMILIES
    source = (SHADERS / f"{layout.shader}.comp").read_text()
    assert f'#include "{kernels.layout_header_name(family)}"' in source
    assert "push_constant" not in source
    # the header declares the local size, or (a spec constant's default) the .comp from WG
    sizes = re.findall(r"local_size_x\s*=\s*(\w+)", source)
    assert sizes == [] if layout.local_size else sizes and set(sizes) == {"WG"}, sizes
    for name in ["WG", *layout.limits]:
        assert not re.search(rf"#define {name}\b", source), name
    if layout.declare_specs:
        assert "constant_id" not in source
    else:  # by the SPEC_<name> ids that FAMILIES defines from the layout's names
        ids = re.findall(r"constant_id\s*=\s*(\w+)", source)
        assert ids and set(ids) <= {f"SPEC_{name}" for name, _ in layout.specs}, ids


def _spec_names(spirv):
    """{constant_id: the constant's name} from a SPIR-V module (OpName, OpDecorate SpecId)."""
    words = np.frombuffer(spirv, np.uint32)
    names, ids, i = {}, {}, 5
    while i < len(words):
        count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        if op == 5:  # OpName target "name"
            names[int(words[i + 1])] = words[i + 2:i + count].tobytes().split(b"\0")[0].decode()
        elif op == 71 and int(words[i + 2]) == 1:  # OpDecorate target SpecId id
            ids[int(words[i + 3])] = int(words[i + 1])
        i += count
    return {sid: names.get(target) for sid, target in ids.items()}


@pytest.mark.parametrize("family,variant", [(f, v) for f, vs in kernels.FAMILIES.items()
                                            for v in vs])
def test_each_kernels_spec_ids_are_its_layouts_names(family, variant):
    """What launch passes as spec[i] is what the compiled kernel calls constant_id i, in every
    variant: the layouts that include its header (matmul's two) share its names."""
    from vkgrad.backend.vulkan import SPIRV_DIR
    found = _spec_names((SPIRV_DIR / kernels.spirv_name(family, variant)).read_bytes())
    layouts = [layout for layout in kernels.LAYOUTS.values() if layout.shader == family]
    assert len({tuple(layout.specs) for layout in layouts}) == 1
    names = [name for name, _ in layouts[0].specs]
    assert found and all(i < len(names) for i in found), (found, names)
    # WG, the workgroup size's id, is the size's own constant, which glslang leaves unnamed
    assert {i: name for i, name in found.items() if name is not None} == \
        {i: names[i] for i in found if found[i] is not None}
    if layouts[0].declare_specs:
        assert sorted(found) == list(range(len(names)))


@pytest.mark.parametrize("family", sorted(kernels.LAYOUTS))
def test_the_built_header_is_the_layouts(family):
    """tools/build_shaders.py wrote the header the package carries (for user kernels too)."""
    header = INCLUDE / kernels.layout_header_name(family)
    assert header.read_text() == kernels.LAYOUTS[family].header()


def test_every_family_has_a_layout():
    assert {layout.shader for layout in kernels.LAYOUTS.values()} == set(kernels.FAMILIES)


def test_header_declares_the_block_in_order():
    layout = kernels.Layout("demo", ["uint n", "int strides[MAXD]", "float h[2]"], MAXD=3)
    header = layout.header()
    assert "#define WG 256\n#define MAXD 3\nlayout(local_size_x = WG) in;" in header
    assert ("layout(push_constant) uniform Params {\n    uint n;\n    int strides[MAXD];\n"
            "    float h[2];\n    uint slots;\n} p;") in header
    assert layout.words == 7 and layout.MAXD == 3 and kernels.workgroup("demo") == 256


def test_an_array_may_be_a_limit_less_a_number():
    layout = kernels.Layout("demo", ["uint inner[MAXD - 1]", "uint shifts"], MAXD=4)
    assert layout.words == 5
    assert "    uint inner[MAXD - 1];\n    uint shifts;\n" in layout.header()
    with pytest.raises(ValueError, match="array length 'MAXD \\+ 1'"):
        kernels.Layout("demo", ["uint inner[MAXD + 1]"], MAXD=4)
    with pytest.raises(ValueError, match="array length 'MAXE - 1'"):
        kernels.Layout("demo", ["uint inner[MAXE - 1]"], MAXD=4)


def test_pack_by_name_pads_arrays_and_takes_float_bits():
    layout = kernels.Layout("demo", ["uint n", "int strides[MAXD]", "float h[2]", "float x"],
                            MAXD=3)
    assert layout.pack(n=7, strides=[-1, 2], h=[1.0], x=-2.0) == \
        [7, -1, 2, 0, 0x3F800000, 0, 0xC0000000, 0]  # and `slots`, 0
    with pytest.raises(TypeError, match=r"missing \['x'\], unknown \['y'\]"):
        layout.pack(n=7, strides=[], h=[], y=1)
    with pytest.raises(ValueError, match="strides has 4 entries, at most 3"):
        layout.pack(n=7, strides=[1, 2, 3, 4], h=[], x=0.0)
    with pytest.raises(AttributeError, match="no limit 'MAXE'"):
        layout.MAXE


def test_pack_keeps_starts_as_they_are():
    """An operand's start (an int that knows its arena chunk) reaches launch unchanged."""
    class Start(int):
        pass
    start = Start(5)
    assert kernels.LAYOUTS["random"].pack(n=1, out_start=start, a=0, b=0, c=0, d=0,
                                          cursor_start=0)[1] is start


def test_operands_are_the_start_fields_and_their_slots_share_the_last_word():
    """Every uint field ending in _start (each entry of an array) is an operand; `slots`, last,
    holds their slots ARENA_SLOT_BITS apiece in field order, which SLOT_<field> reads back."""
    layout = kernels.Layout("demo", ["uint n", "uint a_start", "uint s_start[3]", "int step",
                                     "uint b_start"])
    assert layout.operands == [1, 2, 3, 4, 6] and layout.slots_at == 7 and layout.words == 8
    push = layout.pack(n=1, a_start=10, s_start=[11, 12], step=-1, b_start=13)
    assert isinstance(push, kernels.Push) and push[push.slots_at] == 0
    assert (push.operands, push.slots_at) == (layout.operands, layout.slots_at)
    header = layout.header()
    assert "    uint b_start;\n    uint slots;\n} p;" in header
    assert "#define SLOT_a_start ((p.slots >> 0u) & 7u)" in header
    assert "#define SLOT_s_start(i) ((p.slots >> (3u + 3u * uint(i))) & 7u)" in header
    assert "#define SLOT_b_start ((p.slots >> 12u) & 7u)" in header
    with pytest.raises(ValueError, match="operand x_start must be a uint"):
        kernels.Layout("demo", ["int x_start"])
    with pytest.raises(ValueError, match="11 operands' slots do not fit"):
        kernels.Layout("demo", ["uint a_start[11]"])
    assert all(len(l.operands) * kernels.ARENA_SLOT_BITS <= 32 for l in kernels.LAYOUTS.values())


def test_a_block_over_the_push_constant_budget_is_refused():
    with pytest.raises(ValueError, match="33 words of push constants \\(with `slots`\\)"):
        kernels.Layout("big", ["uint a[30]", "uint b[2]"])
    with pytest.raises(ValueError, match="type 'double'"):
        kernels.Layout("odd", ["double a"])


def test_spec_constants_by_name_in_id_order():
    layout = kernels.Layout("demo", ["uint n"], specs=["OP", "GROUP = 1", "DT"])
    assert ("} p;\nlayout(constant_id = 0) const uint OP = 0u;\n"
            "layout(constant_id = 1) const uint GROUP = 1u;\n"
            "layout(constant_id = 2) const uint DT = 0u;\n") in layout.header()
    assert layout.spec(DT=7, OP=3, GROUP=2) == (3, 2, 7)
    assert layout.spec(OP=3) == (3,)  # the rest: the shader's defaults
    with pytest.raises(TypeError, match=r"unknown \['MODE'\]"):
        layout.spec(OP=1, MODE=2)
    with pytest.raises(TypeError, match=r"left out before a given one \['GROUP'\]"):
        layout.spec(OP=1, DT=2)
    quiet = kernels.Layout("demo", ["uint n"], specs=["OP"], declare_specs=False)
    assert "constant_id" not in quiet.header() and quiet.spec(OP=4) == (4,)
