"""Neural-network building blocks in PyTorch's shape: modules, layers, losses and functions.

>>> import vkgrad as vk
>>> from vkgrad import nn
>>> import vkgrad.nn.functional as F
>>> model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)).to("vulkan")
>>> loss = F.cross_entropy(model(x), labels)
>>> loss.backward()
"""
from .parameter import Parameter
from . import functional, init, parallel, utils
from .module import Module, ModuleDict, ModuleList, Sequential
from .activation import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU,
                         LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, ReLU6, SiLU, Sigmoid, Softmax,
                         Softmin, Softplus, Softsign, Tanh)
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from .dropout import Dropout
from .linear import Flatten, Identity, Linear
from .loss import (BCELoss, BCEWithLogitsLoss, CosineSimilarity, CrossEntropyLoss, HuberLoss,
                   KLDivLoss, L1Loss, MSELoss, MultiMarginLoss, NLLLoss, SmoothL1Loss)
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .pooling import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d,
                      MaxUnpool2d, Upsample)
from .sparse import Embedding
from .transformer import MultiheadAttention, TransformerEncoderLayer
