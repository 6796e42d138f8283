"""Optimizers and learning-rate schedulers in PyTorch's shape, with fused updates on the device.

>>> import vkgrad as vk
>>> opt = vk.optim.Adam(model.parameters(), lr=1e-3)
>>> sched = vk.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
>>> for x, y in batches:
...     opt.zero_grad()
...     loss_fn(model(x), y).backward()
...     opt.step()                         # one fused kernel per parameter, no host sync
...     sched.step()
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "RMSprop", "SGD", "lr_scheduler"]
