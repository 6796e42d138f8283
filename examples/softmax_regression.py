"""Softmax regression on MNIST: one linear layer (784 -> 10) trained with Adam.

    python examples/softmax_regression.py                      # embedded digits, best device
    python examples/softmax_regression.py --device vulkan --dtype bf16
    python examples/softmax_regression.py --data data/mnist    # the full MNIST IDX files there

The model is p(class | x) = softmax(x @ W.T + b) over the 784 normalised pixels of an image,
trained on the cross-entropy loss. Without --data it uses the 5,000 real MNIST digits embedded
with vkgrad (4,000 to train, 1,000 to test); 3 epochs reach about 85-90% test accuracy (about
92% on the full MNIST). Each epoch prints the train loss, the test accuracy and its seconds.
"""
import argparse
import sys
import time

from tqdm import tqdm

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.datasets import MNIST, DataLoader


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None,
                   help="host, vulkan, vulkan:N (default: the best GPU, else the host)")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data", default=None, help="directory of the MNIST IDX files (full MNIST)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None,
                   help="use only this many training and test images (smoke tests)")
    return p.parse_args(argv)


def accuracy(model, loader):
    """The fraction of the loader's samples whose largest logit is at their label."""
    correct, n = 0, 0
    with vk.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(axis=1) == y).sum().item())
            n += y.shape[0]
    return correct / n


def main(argv=None):
    args = parse(argv)
    device = vk.best_device() if args.device is None else vk.device(args.device)
    dtype = vk.bfloat16 if args.dtype == "bf16" else vk.float32
    vk.manual_seed(args.seed)

    train_set, test_set = (MNIST(args.data, train=split) for split in (True, False))
    if args.limit:
        train_set, test_set = ((s.images[:args.limit], s.labels[:args.limit])
                               for s in (train_set, test_set))
    data = dict(device=device, dtype=dtype, normalize=MNIST.mean_std, flatten=True)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                              seed=args.seed, **data)
    test_loader = DataLoader(test_set, batch_size=1000, **data)
    model = vk.nn.Linear(784, 10, device=device, dtype=dtype)
    optimizer = vk.optim.Adam(model.parameters(), lr=args.lr)
    print(f"softmax regression on {'MNIST' if args.data else 'embedded MNIST'}, Adam lr "
          f"{args.lr}, batch {args.batch_size}, {dtype.name} on {device}: "
          f"{len(train_loader.labels)} training and {len(test_loader.labels)} test images")

    test_acc = None
    for epoch in range(1, args.epochs + 1):
        began = time.perf_counter()
        loss_sum, n = None, 0
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                         leave=False, file=sys.stdout, dynamic_ncols=True):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            with vk.no_grad():  # summed on the device: no host wait inside the epoch
                part = loss.astype(vk.float32) * y.shape[0]
                loss_sum = part if loss_sum is None else loss_sum + part
            n += y.shape[0]
        train_loss = loss_sum.item() / n
        seconds = time.perf_counter() - began  # the training pass only, its loss read back
        test_acc = accuracy(model, test_loader)
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f} | test accuracy "
              f"{test_acc:.2%} | {seconds:.2f} s/epoch")
    if test_acc is not None:
        print(f"test accuracy {test_acc:.2%}")
    return test_acc


if __name__ == "__main__":
    main()
