"""The layering rule, read from the sources' import statements: ops and everything else above
vkgrad/backend/ reach a backend only through backend/base.py's interface (Backend, Buffer) and
the package's open/probe functions; Kompute (`kp`) and the Vulkan backend module are imported
inside vkgrad/backend/ alone."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vkgrad"
BACKEND = PACKAGE / "backend"


def imported_modules(path):
    """The absolute module names `path` imports (relative imports resolved against its package;
    `from X import name` gives both X and X.name, which may be a submodule)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return out


def test_imported_modules_resolves_relative_imports():
    names = imported_modules(PACKAGE / "ops" / "indexing.py")
    assert "vkgrad.backend.base" in names and "vkgrad.kernels" in names
    assert "vkgrad.backend.open_vulkan" in imported_modules(PACKAGE / "device.py")


def test_only_the_backend_package_imports_kompute_and_the_vulkan_backend():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if BACKEND in path.parents:
            continue
        for name in imported_modules(path):
            if name == "kp" or name.startswith("kp.") or name.startswith("vkgrad.backend.vulkan"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_ops_use_the_backend_interface_only():
    """vkgrad/ops/ imports nothing from vkgrad.backend but base.py (Backend, Buffer)."""
    offenders = [f"{path.name} imports {name}" for path in sorted((PACKAGE / "ops").glob("*.py"))
                 for name in imported_modules(path)
                 if name.startswith("vkgrad.backend")
                 and not name.startswith("vkgrad.backend.base")]
    assert not offenders, "\n".join(offenders)


def test_torch_is_imported_by_tests_alone():
    """torch is the tests' reference (tests/opdb.py), never a dependency of vkgrad."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}" for path in sorted(PACKAGE.rglob("*.py"))
                 if any(n == "torch" or n.startswith("torch.") for n in imported_modules(path))]
    assert not offenders, offenders
