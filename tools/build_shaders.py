"""Compile shaders/*.comp to SPIR-V with glslangValidator, one file per kernel variant.

Usage: python tools/build_shaders.py [--out DIR] [--force]

A variant is rebuilt when its .comp file, any shared header (shaders/*.glsl) or vkgrad/kernels.py
(which supplies the defines and the families' layouts) is newer than its .spv. Output defaults
to vkgrad/_spirv/. Its include/ folder gets the shared headers, copied, and each kernel family's
<family>_layout.glsl, generated from vkgrad/kernels.py's LAYOUTS (workgroup size, limits, push
constants: see kernels.Layout); the shaders compile against that folder, and so does vk.Kernel
for user kernels: the package carries both (shaders/ itself is not part of an installed vkgrad).
"""
import argparse
import importlib.util
import pathlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHADERS = ROOT / "shaders"


def load_kernel_table():
    # Load vkgrad/kernels.py on its own: the package's __init__ needs numpy and more.
    spec = importlib.util.spec_from_file_location("vkgrad_kernels", ROOT / "vkgrad" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_headers(headers, generated, include):
    """Make `include` hold exactly `headers` (copied; one removed from shaders/ is removed there
    too) and `generated`, name -> text (rewritten only when it changed)."""
    clash = {h.name for h in headers} & set(generated)
    if clash:
        sys.exit(f"shaders/ has headers named like generated ones: {sorted(clash)}")
    include.mkdir(exist_ok=True)
    keep = {h.name for h in headers} | set(generated)
    for stale in include.glob("*.glsl"):
        if stale.name not in keep:
            stale.unlink()
    for header in headers:
        shutil.copy2(header, include / header.name)
    for name, text in generated.items():
        path = include / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "vkgrad" / "_spirv")
    parser.add_argument("--force", action="store_true", help="rebuild every variant")
    args = parser.parse_args(argv)

    compiler = shutil.which("glslangValidator")
    if compiler is None:
        sys.exit("glslangValidator not found: install it with `apt-get install glslang-tools` "
                 "(or run `make setup`)")
    kernels = load_kernel_table()
    args.out.mkdir(parents=True, exist_ok=True)
    headers = sorted(SHADERS.glob("*.glsl"))
    shared_mtime = max([p.stat().st_mtime for p in headers]
                       + [(ROOT / "vkgrad" / "kernels.py").stat().st_mtime])
    include = args.out / "include"
    write_headers(headers, {kernels.layout_header_name(family): layout.header()
                            for family, layout in kernels.LAYOUTS.items()}, include)

    jobs = []
    for family, variants in kernels.FAMILIES.items():
        source = SHADERS / f"{family}.comp"
        newest_input = max(shared_mtime, source.stat().st_mtime)
        for variant, extra in variants.items():
            target = args.out / kernels.spirv_name(family, variant)
            if args.force or not target.exists() or target.stat().st_mtime < newest_input:
                jobs.append((target.name, kernels.glslang_command(compiler, source, target,
                                                                   include, [*extra, "FAMILY"])))

    def run(job):
        name, cmd = job
        result = subprocess.run(cmd, capture_output=True, text=True)
        return name, result.returncode, result.stdout + result.stderr

    failed = False
    with ThreadPoolExecutor() as pool:
        for name, code, log in pool.map(run, jobs):
            if code != 0:
                failed = True
                print(f"FAILED {name}:\n{log}", file=sys.stderr)
    if failed:
        sys.exit(1)
    print(f"shaders: {len(jobs)} compiled, output in {args.out}")


if __name__ == "__main__":
    main()
