"""Every op, defined once: host (numpy) implementation, Vulkan kernel binding, backward rule.

`registry.OPS` is the table that Tensor methods, both backends and tests/test_ops.py read.
The modules here are the ones Tensor itself is built on; linalg, indexing and movement add Tensor
methods, so vkgrad/__init__.py imports them once Tensor exists (that import registers their ops).
"""
from . import conv, elementwise, reduce, views  # noqa: F401  (importing registers the ops)
from .registry import OPS, Op, apply

__all__ = ["OPS", "Op", "apply"]
