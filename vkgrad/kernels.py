"""The device kernels: which GLSL families exist, their variants, and the codes shared with GLSL.

This module is the single source of the numbers that Python and the shaders must agree on (dtype
codes, op codes, push-constant sizes). `tools/build_shaders.py` turns them into `-D` defines, so a
code is never written twice. It imports nothing from the rest of vkgrad.
"""

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
    "matmul": {"": _MATMUL_DEFINES, "conv": [*_MATMUL_DEFINES, "CONV"],
               **{name: [*_MATMUL_DEFINES, "DIRECT", f"DIRECT_TM={tm}", f"DIRECT_TN={tn}"]
                  for name, (tm, tn) in MATMUL_DIRECT.items()},
               **{f"conv_{name}": [*_MATMUL_DEFINES, "CONV", "DIRECT", f"DIRECT_TM={tm}",
                                   f"DIRECT_TN={tn}"] for name, (tm, tn) in MATMUL_DIRECT.items()}},
    "conv": {"": [f"{k}={v}" for k, v in CONV_CODES.items()]},
    "optim": {"": [f"RULE_{r.upper()}={i}" for i, r in enumerate(OPTIM_RULES)]
              + [f"FLAG_{k}={v}" for k, v in OPTIM_FLAGS.items()]},
    "attention": {"": []},
}

# Every kernel declares its push constants within this many 32-bit words (Vulkan guarantees 128 B).
PUSH_WORDS = 32
WORKGROUP = 256  # local_size_x of the one-dimensional kernels
# The arena chunks one dispatch binds (common.glsl's arena_chunks), and where a word address
# keeps its slot: slot << ARENA_SLOT_SHIFT | word. Element starts keep it log2(elements per
# word) bits higher, so a uint8 start uses all 32 bits: a chunk holds at most 2^27 words
# (512 MiB).
ARENA_SLOTS = 8
ARENA_SLOT_SHIFT = 27


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
    out.update(ARENA_SLOTS=ARENA_SLOTS, ARENA_SLOT_SHIFT=ARENA_SLOT_SHIFT,
               ARENA_SLOT_MASK=f"{(1 << ARENA_SLOT_SHIFT) - 1}u")
    return out


def spirv_name(family, variant):
    return f"{family}.{variant}.spv" if variant else f"{family}.spv"


def glslang_command(compiler, source, target, include_dir, extra_defines=()):
    """The glslangValidator command line that compiles `source` to SPIR-V `target` with the
    shared headers in `include_dir`, every define above and `extra_defines` ("NAME=value")."""
    return [compiler, "-V", "--target-env", "vulkan1.1", f"-I{include_dir}",
            *[f"-D{k}={v}" for k, v in defines().items()], *[f"-D{d}" for d in extra_defines],
            "-o", str(target), str(source)]
