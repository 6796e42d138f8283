"""The host backend: arrays are numpy arrays and ops run their numpy implementation."""
import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    kind = "host"

    def empty(self, shape, dtype):
        return np.empty(shape, dtype.np_dtype)

    def from_numpy(self, array, dtype):
        return np.asarray(array, dtype=dtype.np_dtype)

    def to_numpy(self, array):
        return array

    def run(self, op, *args, **params):
        return op.host(*args, **params)
