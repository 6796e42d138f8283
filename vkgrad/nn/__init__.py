"""Neural-network building blocks in PyTorch's shape: modules, layers, losses and functions."""
from .parameter import Parameter
from . import functional, init
