"""Ready-made architectures.

>>> model = vk.models.lenet5()          # 47,154 parameters, for 1x28x28 images and 10 classes
>>> model(vk.zeros((8, 1, 28, 28))).shape
(8, 10)
"""
from . import nn


def lenet5(num_classes=10, device=None, dtype=None):
    """LeNet-5 as autograph trains it (ReLU and max pooling instead of the original's tanh and
    subsampling): conv 1->6 5x5, relu, maxpool 2, conv 6->16 5x5, relu, maxpool 2, flatten,
    linear 256->128, relu, linear 128->84, relu, linear 84->num_classes. State dict keys are
    those of the same torch.nn.Sequential ("0.weight", "3.bias", ...)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, device=device, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, device=device, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 128, device=device, dtype=dtype), nn.ReLU(),
        nn.Linear(128, 84, device=device, dtype=dtype), nn.ReLU(),
        nn.Linear(84, num_classes, device=device, dtype=dtype))
