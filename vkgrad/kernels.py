"""The device kernels: which GLSL families exist, their variants, and the codes shared with GLSL.

This module is the single source of the numbers that Python and the shaders must agree on (dtype
codes, op codes, push-constant sizes). `tools/build_shaders.py` turns them into `-D` defines, so a
code is never written twice. It imports nothing from the rest of vkgrad.
"""
import re
import struct

# Device dtype codes (DT_* in GLSL). DT_IMM marks a scalar operand carried in push constants.
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "int32": 2, "uint32": 3, "uint8": 4, "bool": 5, "imm": 6}

# Op codes of elementwise.comp (one shared numbering; each kernel gets its op as a
# specialization constant, as every family below gets its codes and operand dtypes).
ELEMENTWISE_OPS = [
    "identity", "neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal",
    "square", "sin", "cos", "tanh", "sigmoid", "silu", "relu", "gelu", "gelu_tanh", "erf",
    "softplus", "sign", "floor", "ceil", "round", "isnan", "isinf", "isfinite", "logical_not",
    "add", "sub", "mul", "div", "floordiv", "mod", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "bitand", "bitor", "bitxor",
    "where", "clip",
    # (issue 16) unary, binary and ternary ops added later; the numbering has no meaning
    "trunc", "log2", "log10", "exp2", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
    "acosh", "atanh", "bitnot", "selu", "hardsigmoid", "hardswish", "mish", "softsign",
    "logsigmoid", "truncdiv", "fmod", "copysign", "logaddexp", "atan2", "lshift", "rshift",
    "leaky_relu", "lerp", "hardtanh", "elu", "softplus_beta",
]

# The erf fits that the host (vkgrad/ops/elementwise.py, in float64) and elementwise.comp (in
# float32) both evaluate: least-squares fits of the relative error on Chebyshev nodes, against
# Python's math.erf and math.erfc.
#   erf(x) = x P(x^2)                      for |x| <= 1,          relative error < 1.4e-9
#   erfc(z) = exp(-z^2) R(1 / (1 + z / 2))  for 0.5 <= z <= 10.5,  relative error < 1.4e-9
# (erfc(10.5) = 7e-50 is below float32's range, so larger z give 0.)
ERF_P = (1.1283791665100529, -0.376126288433253, 0.11283612428246441, -0.026854808537280166,
         0.005190053577936258, -0.000802435412952508, 7.898210209804199e-05)
ERFC_R = (2.3082557265669646e-06, 0.2820209003163719, 0.28312706099671603, 0.23856178503070122,
          0.21825824265410673, -0.05596403853453498, 0.29998038942251865, -0.4668061326268066,
          0.22683483514659217, -0.012549052216843189, -0.013484628058636167)
ERFC_MAX = 10.5

# Op codes of reduce.comp.
REDUCE_OPS = ["sum", "prod", "max", "min", "argmax", "argmin", "any", "all"]

# Op codes of random.comp (random draws and the index patterns of arange, linspace, eye).
RANDOM_OPS = ["uniform", "normal", "randint", "arange_float", "arange_int", "eye", "words"]

# Modes of gather.comp (strided copies with an index) and scan.comp (prefix sums), passed to
# GLSL as defines of their single variants.
GATHER_CODES = {"MODE_WORDS": 0, "MODE_STORE": 1, "MODE_ADD": 2, "MODE_MUL": 3, "MODE_MAX": 4,
                "MODE_MIN": 5,
                "INDEX_NONE": 0, "INDEX_SRC": 1, "INDEX_DST": 2, "INDEX_VALUE": 3}
SCAN_CODES = {"SCAN_CHUNKS": 0, "SCAN_SUMS": 1, "SCAN_WRITE": 2, "SCAN_COMPACT": 3,
              "COMBINE_SUM": 0, "COMBINE_PROD": 1, "COMBINE_MAX": 2, "COMBINE_MIN": 3,
              "COMBINE_LOGADDEXP": 4}
# Phases of sort.comp (a bitonic argsort).
SORT_CODES = {"SORT_INIT": 0, "SORT_STEP": 1}
# Modes of conv.comp (im2col, col2im, pooling forward and backward).
CONV_CODES = {"MODE_IM2COL": 0, "MODE_COL2IM": 1, "MODE_MAXPOOL": 2, "MODE_MAXPOOL_BACK": 3,
              "MODE_AVGPOOL": 4, "MODE_AVGPOOL_BACK": 5}
# Modes and flags of rownorm.comp (softmax, log-softmax, layer norm, cross-entropy rows).
ROWNORM_CODES = {"MODE_SOFTMAX": 0, "MODE_LOG_SOFTMAX": 1, "MODE_LAYER_NORM": 2,
                 "MODE_SOFTMAX_BACK": 3, "MODE_LOG_SOFTMAX_BACK": 4, "MODE_LAYER_NORM_BACK": 5,
                 "MODE_CROSS_ENTROPY": 6, "MODE_CE_FINISH": 7, "MODE_CE_BACK": 8,
                 "FLAG_STATS": 1, "FLAG_GXHAT": 2, "FLAG_SMOOTH": 4, "FLAG_MEAN": 8,
                 "FLAG_NONE": 16}
_ROWNORM_DEFINES = [f"{k}={v}" for k, v in ROWNORM_CODES.items()]
# Update rules of optim.comp (one per optimizer) and its flag bits.
OPTIM_RULES = ["sgd", "adam", "rmsprop"]
OPTIM_FLAGS = {"MAXIMIZE": 1, "NESTEROV": 2, "MOMENTUM": 4, "AMSGRAD": 8, "CENTERED": 16,
               "FRESH": 32, "MASTER": 64, "FRESH_MASTER": 128}

# matmul.comp's tiled GEMM: named output tiles (BM rows, BN columns, TM x TN outputs per thread
# as preferred). linalg.py sizes the rest per device (K slice, thread tile where the workgroup
# would exceed the device, warp tile from the subgroup size) and passes every size as a
# specialization constant, in MATMUL_SPEC's order (constant_id = position).
MATMUL_TILES = {"128x128": (128, 128, 8, 8), "64x64": (64, 64, 4, 4), "32x64": (32, 64, 4, 4),
                "flat": (16, 256, 4, 4), "tall": (256, 16, 4, 4)}
MATMUL_BK = (16, 8)   # K slice depths, deepest first: the deepest that fits shared memory
MATMUL_PAD = 4        # floats after each k row of a staged slice (see matmul.comp: bank spread)
MATMUL_SPEC = ["OUT_DT", "A_DT", "B_DT", "WG", "BM", "BN", "BK", "TM", "TN", "WARP", "WARP_N",
               "A_AXIS", "A_LOAD", "B_AXIS", "B_LOAD"]
# How matmul.comp reads an operand's slice: along which axis (K, or M for A and N for B), and
# whether as aligned vectors of words, words one at a time, or elements through a stride.
MATMUL_LAYOUT = {"AXIS_K": 0, "AXIS_MN": 1, "LOAD_STRIDED": 0, "LOAD_CONTIG": 1, "LOAD_ALIGNED": 2}
# matmul.comp's DIRECT variant for CPU devices: (rows TM, columns TN) per invocation (4 x 8
# measured fastest on lavapipe, against 2 x 4 up to 8 x 8).
MATMUL_DIRECT = {"direct": (4, 8)}
_MATMUL_DEFINES = ([f"SPEC_{name}={i}" for i, name in enumerate(MATMUL_SPEC)]
                   + [f"{k}={v}" for k, v in MATMUL_LAYOUT.items()] + [f"MATMUL_PAD={MATMUL_PAD}"])
# matmul.comp's CONV variants: what the epilogue applies and how B is read (push word `flags`)
# COLS_T: B = cols(x)^T (the weight gradient); GRAD_X: the transposed convolution's columns of g
CONV_GEMM_FLAGS = {"RELU": 1, "BIAS": 2, "COLS_T": 4, "GRAD_X": 8}
_CONV_GEMM_DEFINES = ["CONV", *[f"FLAG_{k}={v}u" for k, v in CONV_GEMM_FLAGS.items()]]

# Kernel families: file in shaders/ -> variant name -> extra defines. One pipeline per variant.
FAMILIES = {
    "elementwise": {"float": ["DOMAIN_FLOAT"], "int": ["DOMAIN_INT"], "uint": ["DOMAIN_UINT"]},
    # "_subgroup" variants use subgroup arithmetic (compiled apart: a module that declares the
    # capability is invalid on a device without it), the others shared memory
    "reduce": {"float": ["DOMAIN_FLOAT"], "int": ["DOMAIN_INT"],
               "float_subgroup": ["DOMAIN_FLOAT", "SUBGROUPS"],
               "int_subgroup": ["DOMAIN_INT", "SUBGROUPS"]},
    # rownorm: the "ce" variants (cross-entropy's modes) alone write the error word
    "rownorm": {"": _ROWNORM_DEFINES, "subgroup": _ROWNORM_DEFINES + ["SUBGROUPS"],
                "ce": _ROWNORM_DEFINES + ["ERROR_WORD"],
                "ce_subgroup": _ROWNORM_DEFINES + ["ERROR_WORD", "SUBGROUPS"]},
    "gather": {"": [f"{k}={v}" for k, v in GATHER_CODES.items()]},
    "scatter": {"": [f"{k}={v}" for k, v in GATHER_CODES.items()]},  # combine.glsl's modes
    "scan": {"": [f"{k}={v}" for k, v in SCAN_CODES.items()]},
    "sort": {"": [f"{k}={v}" for k, v in SORT_CODES.items()]},
    "random": {"": []},
    # "conv" variants: the implicit GEMM of a convolution (ops/conv.py), the tiled one and DIRECT
    "matmul": {"": _MATMUL_DEFINES, "conv": [*_MATMUL_DEFINES, *_CONV_GEMM_DEFINES],
               **{name: [*_MATMUL_DEFINES, "DIRECT", f"DIRECT_TM={tm}", f"DIRECT_TN={tn}"]
                  for name, (tm, tn) in MATMUL_DIRECT.items()},
               **{f"conv_{name}": [*_MATMUL_DEFINES, *_CONV_GEMM_DEFINES, "DIRECT",
                                   f"DIRECT_TM={tm}", f"DIRECT_TN={tn}"]
                  for name, (tm, tn) in MATMUL_DIRECT.items()}},
    "conv": {"": [f"{k}={v}" for k, v in CONV_CODES.items()]},
    "optim": {"": [f"RULE_{r.upper()}={i}" for i, r in enumerate(OPTIM_RULES)]
              + [f"FLAG_{k}={v}" for k, v in OPTIM_FLAGS.items()]},
    "attention": {"": []},
}

# Every kernel declares its push constants within this many 32-bit words (Vulkan guarantees 128 B).
PUSH_WORDS = 32
WORKGROUP = 256  # local_size_x of the one-dimensional kernels
MAX_GROUPS = 65535  # Vulkan's guaranteed maxComputeWorkGroupCount[0]: the grid's cap
# Elements each invocation of elementwise.comp (its quads: uvec4s) and of gather.comp's word
# copies computes: whole 32-bit words of every dtype (1, 2 or 4 to a word).
ELEMS_PER_INVOCATION = 4
# The arena chunks one dispatch binds (common.glsl's arena_chunks), and the bits of a slot.
# A family's kernel finds each operand's slot in its push word `slots` (ARENA_SLOT_BITS per
# operand, in the order of the layout's start fields; see Layout), so an operand's start is a
# plain element index within its chunk: one chunk, so one tensor, may take what one binding
# addresses. vk.Kernel code addresses words with the slot in their top bits instead, a word
# address being slot << ARENA_SLOT_SHIFT | word (element starts keep it log2(elements per word)
# bits higher), so the tensors it touches must lie in a chunk's first 2^27 words (512 MiB).
ARENA_SLOTS = 8
ARENA_SLOT_BITS = 3
ARENA_SLOT_SHIFT = 27


class Layout:
    """A kernel family's contract with its shader, declared once here: its push-constant block
    (`fields`, GLSL declarations "uint name", "int name[LEN]", "float name", in order; LEN a
    number, one of `limits` or a limit less a number, "MAXD - 1"), its workgroup size and its
    limits (the dims its strides describe, say: "MAXD"), which read as attributes
    (LAYOUTS["reduce"].MAXD).

    tools/build_shaders.py writes header() to <family>_layout.glsl in the shaders' include
    folder, which the family's .comp includes in place of writing any of it: it defines WG and
    the limits, declares `layout(local_size_x = WG) in;` and the block as `p`. The ops build
    the push constants with pack(name=value, ...). The block must fit PUSH_WORDS (checked when
    this module loads).

    Its specialization constants (`specs`, "NAME" or "NAME = default", uints in constant_id
    order) are declared in the header too, `layout(constant_id = i) const uint NAME`, and the
    ops give them by name: spec(NAME=value, ...). matmul.comp declares its own (its tiled
    variant's sit under an #ifdef), by the ids of the SPEC_<NAME> defines FAMILIES gives it from
    MATMUL_SPEC, which its two layouts take as `specs` with declare_specs=False.

    A kernel whose workgroup size is a specialization constant (matmul.comp's tiles) declares
    `layout(local_size_x = WG, local_size_x_id = ...)` itself (local_size=False); a .comp with
    a block per variant includes the header of each under its #ifdef (matmul.comp's
    "matmul_conv", shader="matmul"). Every family is converted.

    Operands: every `uint` field whose name ends in `_start` (an array field: each entry) is an
    operand's first element in the arena, and the block ends with a field `slots` that Layout
    adds: ARENA_SLOT_BITS per operand, in field order, the slot of arena_chunks that the
    operand's chunk is bound at. The header defines SLOT_<field> for each (SLOT_<field>(i) for
    an array's entry i), which the shader passes to ARENA_AT and the common.glsl helpers with
    the start. pack() leaves `slots` 0 (every operand at slot 0, right while the arena is one
    chunk) and returns a Push, which tells launch where the starts and the slots word are."""

    TYPES = ("uint", "int", "float")

    def __init__(self, family, fields, workgroup=WORKGROUP, local_size=True, shader=None,
                 specs=(), declare_specs=True, **limits):
        self.family, self.workgroup, self.limits = family, workgroup, limits
        self.specs = []  # (name, default)
        for declaration in specs:
            name, _, default = (part.strip() for part in declaration.partition("="))
            self.specs.append((name, int(default or 0)))
        self.declare_specs = declare_specs
        self.local_size = local_size  # False: the .comp declares it from WG (a spec constant's)
        self.shader = shader or family  # the .comp that includes the header
        self.fields = []  # (type, name, length: an int or None, length as written)
        for declaration in fields:
            type_, rest = declaration.split(maxsplit=1)
            name, bracket, written = rest.partition("[")
            if type_ not in self.TYPES:
                raise ValueError(f"{family}: field {name} has type {type_!r}, not one of "
                                 f"{self.TYPES}")
            written = written[:-1] if bracket else None
            self.fields.append((type_, name, None if written is None else
                                self._length(written), written))
        self.fields.append(("uint", "slots", None, None))
        # the starts' words in slot order; each start field with its first slot; `slots`' word
        self.operands, self._operand_fields, self.slots_at, at = [], [], 0, 0
        for type_, name, length, _ in self.fields:
            if name.endswith("_start"):
                if type_ != "uint":
                    raise ValueError(f"{family}: operand {name} must be a uint, not {type_}")
                self._operand_fields.append((name, length, len(self.operands)))
                self.operands += range(at, at + (length or 1))
            self.slots_at = at
            at += length or 1
        self.words = at
        if self.words > PUSH_WORDS:
            raise ValueError(f"{family}: {self.words} words of push constants (with `slots`), "
                             f"more than the {PUSH_WORDS} every kernel fits in")
        if len(self.operands) * ARENA_SLOT_BITS > 32:
            raise ValueError(f"{family}: {len(self.operands)} operands' slots do not fit the "
                             "one word `slots`")

    def _length(self, written):
        """An array field's length from its GLSL text: a number, a limit, or a limit less a
        number."""
        match = re.fullmatch(r"(\w+)(?:\s*-\s*(\d+))?", written.strip())
        if match is None or not (match[1] in self.limits or match[1].isdigit()):
            raise ValueError(f"{self.family}: array length {written!r} is not a number, a limit "
                             f"or a limit less a number")
        base, less = match.groups()
        value = self.limits[base] if base in self.limits else int(base)
        return value - int(less or 0)

    def __getattr__(self, name):
        limits = self.__dict__.get("limits", {})
        if name in limits:
            return limits[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('family')!r} has no "
                             f"limit {name!r}")

    def pack(self, **values):
        """The push constants, one 32-bit value per word in the block's order, from every
        field's value by name: ints as they are (an operand's Buffer.start stays itself, for
        launch; a negative int as two's complement), floats of `float` fields as their float32
        bits; an array field from a sequence of at most its length, padded with zeros."""
        values = {**values, "slots": 0}
        missing = [name for _, name, _, _ in self.fields if name not in values]
        unknown = set(values) - {name for _, name, _, _ in self.fields}
        if missing or unknown:
            raise TypeError(f"{self.family} push constants: missing {missing}, unknown "
                            f"{sorted(unknown)}")
        out = []
        for type_, name, length, _ in self.fields:
            value = values[name]
            items = [value] if length is None else list(value)
            if length is not None and len(items) > length:
                raise ValueError(f"{self.family} push constants: {name} has {len(items)} "
                                 f"entries, at most {length}")
            out += [f32_bits(v) for v in items] if type_ == "float" else items
            out += [0] * ((length or 1) - len(items))
        return Push(out, self.operands, self.slots_at)

    def spec(self, **values):
        """The specialization constants by name, as launch takes them: a tuple in constant_id
        order. Those left out at the end take the shader's defaults; leaving one out before a
        given one is an error, as is a name the family does not declare."""
        names = [name for name, _ in self.specs]
        unknown = sorted(set(values) - set(names))
        given = names[:len(values)]
        if unknown or set(given) != set(values):
            raise TypeError(f"{self.family} specialization constants: unknown {unknown}, left "
                            f"out before a given one {[n for n in given if n not in values]} "
                            f"(the order: {names})")
        return tuple(int(values[name]) for name in given)

    def header(self):
        """The GLSL header that the family's .comp includes (see the class's docstring)."""
        guard = f"{self.family.upper()}_LAYOUT_GLSL"
        lines = [f"// {self.shader}.comp's workgroup, limits and push constants, generated by",
                 f"// tools/build_shaders.py from vkgrad/kernels.py (LAYOUTS[{self.family!r}]):",
                 "// change them there.",
                 f"#ifndef {guard}", f"#define {guard}",
                 f"#define WG {self.workgroup}",
                 *[f"#define {name} {value}" for name, value in self.limits.items()],
                 *(["layout(local_size_x = WG) in;"] if self.local_size else []),
                 "layout(push_constant) uniform Params {",
                 *[f"    {type_} {name}{'' if written is None else f'[{written}]'};"
                   for type_, name, _, written in self.fields],
                 "} p;",
                 *self._slot_macros(),
                 *([f"layout(constant_id = {i}) const uint {name} = {default}u;"
                    for i, (name, default) in enumerate(self.specs)]
                   if self.declare_specs else []),
                 "#endif", ""]
        return "\n".join(lines)

    def _slot_macros(self):
        """SLOT_<field>: the slot of each operand, from the word `slots`."""
        mask, lines = (1 << ARENA_SLOT_BITS) - 1, []
        for name, length, k in self._operand_fields:
            shift = f"{ARENA_SLOT_BITS * k}u"
            if length is None:
                lines.append(f"#define SLOT_{name} ((p.slots >> {shift}) & {mask}u)")
            else:
                lines.append(f"#define SLOT_{name}(i) ((p.slots >> ({shift} + "
                             f"{ARENA_SLOT_BITS}u * uint(i))) & {mask}u)")
        return lines


class Push(list):
    """A family's push constants as Layout.pack gives them: the words, and where its operands'
    starts (`operands`, word indices in slot order) and its `slots` word (`slots_at`) are."""

    def __init__(self, words, operands, slots_at):
        super().__init__(words)
        self.operands, self.slots_at = operands, slots_at


def layout_header_name(family):
    return f"{family}_layout.glsl"


def workgroup(family):
    """The local_size_x of `family`'s kernels: its Layout's, else WORKGROUP."""
    layout = LAYOUTS.get(family)
    return WORKGROUP if layout is None else layout.workgroup


# The families' contracts (see Layout): what the fields mean is told here and in each .comp.
# inner, magic and shifts: the dims a linear index splits over without dividing (vkgrad.layout.
# div_magic_fields, for common.glsl's split_coord).
LAYOUTS = {layout.family: layout for layout in [
    Layout("elementwise", [
        "uint n", "uint ndim", "uint out_start", "uint a_start", "uint b_start", "uint c_start",
        "int out_strides[MAXD]",  # used for unpacked outputs; packed outputs are contiguous
        "int a_strides[MAXD]", "int b_strides[MAXD]", "int c_strides[MAXD]",
        "uint inner[MAXD - 1]", "uint magic[MAXD - 1]", "uint shifts",
    ], MAXD=4,               # dims (after coalescing)
        # OP: ELEMENTWISE_CODES; operand dtypes DT_* (DT_IMM: a scalar in the push constants)
        specs=["OP", "OUT_DT", "A_DT", "B_DT", "C_DT"]),
    Layout("gather", [
        "uint n", "uint dst_start", "uint src_start", "uint idx_start",
        "uint idx_n", "int idx_scale", "uint idx_check",  # gather.comp's index check
        "int dst_strides[MAXD]", "int src_strides[MAXD]", "int idx_strides[MAXD]",
        "uint inner[MAXD - 1]", "uint magic[MAXD - 1]", "uint shifts",
    ], MAXD=5,               # dims (after coalescing)
        # MODE and SIDE (INDEX_*): GATHER_CODES; the operands' dtypes
        specs=["MODE", "SIDE", "DST_DT", "SRC_DT", "IDX_DT"]),
    Layout("matmul", [
        "uint out_start", "uint a_start", "uint b_start", "uint M", "uint N", "uint K",
        "int a_sm", "int a_sk", "int b_sk", "int b_sn",
        "uint batch[MAXB]", "int a_sb[MAXB]", "int b_sb[MAXB]",  # padded in front: size 1
    ], local_size=False, MAXB=3,  # batch dims (after coalescing); more are looped on the host
        specs=MATMUL_SPEC, declare_specs=False),
    Layout("matmul_conv", [   # matmul.comp's CONV variants: the implicit GEMM of a convolution
        "uint out_start", "uint a_start", "uint b_start", "uint bias_start",
        "uint M", "uint N", "uint K", "int a_sm", "int a_sk", "int bias_s",
        "uint NB", "uint C", "uint H", "uint W", "uint OH", "uint OW",  # x's sizes, out's
        "uint kh", "uint kw", "uint sh", "uint sw", "uint ph", "uint pw", "uint dh", "uint dw",
        "int xs[4]",          # x's strides (n, c, h, w)
        "uint flags",         # CONV_GEMM_FLAGS
        "uint bias_dt", "uint splits",
    ], local_size=False, shader="matmul", specs=MATMUL_SPEC, declare_specs=False),
    Layout("conv", [
        "uint n", "uint out_start", "uint a_start", "uint b_start",
        "uint N", "uint C", "uint H", "uint W", "uint OH", "uint OW",  # batch, channels, sizes
        "uint kh", "uint kw", "uint sh", "uint sw", "uint ph", "uint pw", "uint dh", "uint dw",
        "uint include_pad",  # avg pooling: divide by kh * kw always
        "uint chunk",        # elements per invocation, whole words
        "int a_strides[4]", "int b_strides[4]",  # (n, c, h, w); columns use (row, col)
    ],
        # MODE: CONV_CODES; the operands' dtypes (B_DT DT_IMM: no second operand)
        specs=["MODE", "OUT_DT", "A_DT", "B_DT"]),
    Layout("reduce", [
        "uint n_out", "uint n_red", "uint out_start", "uint a_start",
        "uint scale_bits",   # result multiplier (1/n for mean), float domain only
        "uint ndim_out",     # (the reduced dims' number is the RED_DIMS constant)
        "uint out_shape[MAXD]", "int out_strides[MAXD]",
        "uint red_shape[MAXD]", "int red_strides[MAXD]",
        "uint pieces", "uint chunk",  # pieces per row, reduced elements per piece
        "uint idx_start",    # argmax/argmin indices (STAGE 1: written, 2: read)
    ], MAXD=4,               # kept dims and reduced dims, each (after coalescing)
        # GROUP: threads per output; STAGE: argmax/argmin's; RED_DIMS: the reduced dims, to
        # which the counter's loops unroll
        specs=["OP", "OUT_DT", "A_DT", "GROUP = 1", "STAGE", "RED_DIMS = 1"]),
    Layout("rownorm", [
        "uint rows", "uint n", "uint inner",
        "uint x_start", "uint g_start", "uint out_start", "uint w_start", "uint b_start",
        "uint t_start",
        "uint aux_start",    # row statistics (float32)
        "uint side_start",   # a second float32 output (LAYER_NORM_BACK, CE_FINISH)
        "float eps",         # layer norm's epsilon, or cross-entropy's label smoothing
        "int ignore_index", "uint error_code",
    ],
        # GROUP: threads per row; W_DT, B_DT DT_IMM: no weight (w_start holds its bits), no bias
        specs=["MODE", "GROUP = 1", "X_DT", "G_DT", "OUT_DT", "W_DT", "B_DT", "T_DT", "FLAGS"]),
    Layout("scan", [
        "uint len", "uint rows", "uint chunk", "uint nchunks", "uint ndim",
        "uint src_start", "int src_step", "uint dst_start", "int dst_step", "uint sums_start",
        "uint shape[MAXD]", "int src_strides[MAXD]", "int dst_strides[MAXD]",
    ], MAXD=5,               # row dims (after coalescing)
        # PHASE, COMBINE: SCAN_CODES
        specs=["PHASE", "IS_FLOAT", "SRC_DT", "COMBINE"]),
    Layout("sort", [
        "uint len", "uint rows", "uint pow2", "uint ndim", "uint src_start", "int src_step",
        "uint keys_start", "uint index_start", "uint k", "uint j", "uint descending",
        "uint shape[MAXD]", "int src_strides[MAXD]",
    ], MAXD=5,               # row dims (after coalescing)
        # PHASE: SORT_CODES
        specs=["PHASE", "SRC_DT"]),
    Layout("random", [
        "uint n", "uint out_start", "uint a", "uint b", "uint c", "uint d",
        "uint cursor_start",  # random draws: the generator's cursor
    ],
        # OP: RANDOM_CODES
        specs=["OP", "OUT_DT"]),
    Layout("optim", [
        "uint n", "uint ndim", "uint p_start", "uint g_start",
        "uint s_start[4]",   # starts (in f32 elements) of the contiguous f32 state buffers
        "uint step_start", "uint arrive_start",  # ADAM, RMSPROP: the f32 step count, its arrivals
        "uint advance",      # 0: read the step only (a split parameter's earlier parts)
        "float h[11]",       # hyper-parameters (optim.comp's table)
        "uint shape[MAXD]", "int p_strides[MAXD]", "int g_strides[MAXD]",
    ], MAXD=3,               # dims (after coalescing)
        # RULE: OPTIM_RULES' index; FLAGS: OPTIM_FLAGS
        specs=["RULE", "FLAGS", "P_DT", "G_DT"]),
    Layout("attention", [
        "uint rows", "uint L", "uint S", "uint E", "uint EV", "float scale",
        "uint q_start", "uint k_start", "uint v_start", "uint lse_start", "uint o32_start",
        "uint g_start", "uint d_start",
        "uint out_start", "uint outv_start",  # out (pass 0); dq (1); dk and dv (2)
        "uint mask_start", "uint n_lo", "int s_hi", "int s_lo", "int s_l", "int s_s",
    ], MAXE=128,             # the longest q/k and v rows, kept in registers
        # PASS 0 forward, 1 dq, 2 dk and dv; MASK 0 none, 1 bool, 2 additive of dtype MDT
        specs=["DT", "CAUSAL", "PASS", "MASK", "MDT", "ODT", "ODTV"]),
    Layout("scatter", [
        "uint m", "uint nfree", "uint nk", "uint nf", "uint dst_start", "uint src_start",
        "uint keys_start", "uint keys_step", "uint perm_start", "uint perm_step",
        "uint kshape[KD]", "int ksrc[KD]",                # keyed dims: src strides
        "uint fshape[FD]", "int fdst[FD]", "int fsrc[FD]",  # free dims: dst and src strides
    ], KD=3, FD=5,           # keyed and free dims (after coalescing)
        # MODE: GATHER_CODES (combine.glsl's)
        specs=["MODE", "DST_DT", "SRC_DT"]),
]}

ELEMENTWISE_CODES = {name: i for i, name in enumerate(ELEMENTWISE_OPS)}
REDUCE_CODES = {name: 100 + i for i, name in enumerate(REDUCE_OPS)}
RANDOM_CODES = {name: 200 + i for i, name in enumerate(RANDOM_OPS)}


def defines():
    """The -D defines every shader is compiled with: codes, and the erf fits' coefficients."""
    out = {f"DT_{name.upper()}": code for name, code in DTYPE_CODES.items()}
    codes = {**ELEMENTWISE_CODES, **REDUCE_CODES, **RANDOM_CODES}
    out.update({f"OP_{name.upper()}": code for name, code in codes.items()})
    out.update({f"ERF_P{i}": f"({c!r})" for i, c in enumerate(ERF_P)})
    out.update({f"ERFC_R{i}": f"({c!r})" for i, c in enumerate(ERFC_R)})
    out["ERFC_MAX"] = repr(ERFC_MAX)
    out.update(ELEMS_PER_INVOCATION=f"{ELEMS_PER_INVOCATION}u", ARENA_SLOTS=ARENA_SLOTS, ARENA_SLOT_SHIFT=ARENA_SLOT_SHIFT,
               ARENA_SLOT_MASK=f"{(1 << ARENA_SLOT_SHIFT) - 1}u")
    return out


def f32_bits(x):
    """The bits of `x` as an IEEE float32, for a push constant."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def spirv_name(family, variant):
    return f"{family}.{variant}.spv" if variant else f"{family}.spv"


def glslang_command(compiler, source, target, include_dir, extra_defines=()):
    """The glslangValidator command line that compiles `source` to SPIR-V `target` with the
    shared headers in `include_dir`, every define above and `extra_defines` ("NAME=value")."""
    return [compiler, "-V", "--target-env", "vulkan1.1", f"-I{include_dir}",
            *[f"-D{k}={v}" for k, v in defines().items()], *[f"-D{d}" for d in extra_defines],
            "-o", str(target), str(source)]
