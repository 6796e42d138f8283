"""Backends: where tensor memory lives and how kernels run. See base.Backend for the interface."""
from .base import Backend, Counters

__all__ = ["Backend", "Counters"]
