"""Train LeNet5 on MNIST: the main job (`make train`).

    python examples/mnist_lenet5.py                       # embedded digits, best device
    python examples/mnist_lenet5.py --device vulkan --dtype bf16 --epochs 5
    python examples/mnist_lenet5.py --resume              # continue from the last checkpoint
    python examples/mnist_lenet5.py --data data/mnist     # the full MNIST IDX files there
    mpiexec -n 2 python examples/mnist_lenet5.py --distributed   # data-parallel (make train-dist)

Without --data it trains on the 5,000 real MNIST digits embedded with vkgrad (4,000 to train,
1,000 to test; no network needed). Each epoch shows a progress bar with the running loss, then
prints train and test loss and accuracy, saves a checkpoint (model, optimizer, data order, random
state and history in one safetensors file, written atomically) and redraws the learning curves.
--resume continues exactly where the checkpoint stopped: the same weights as an uninterrupted run.

--distributed trains data-parallel on every rank of an MPI job (vkgrad.distributed,
DistributedDataParallel; see docs/distributed.md): each rank takes its DistributedSampler shard
of every epoch in batches of --batch-size (the global batch is that times the number of ranks)
on its own device (--device, else vkgrad.distributed.device()); losses and accuracies are summed
over all ranks, test accuracy over a split of the test set; rank 0 alone shows the progress bar,
prints, plots and writes the checkpoint, which every rank reads on --resume, with any number of
ranks (a checkpoint is taken at the end of an epoch, and epochs are shuffled by (seed, epoch)).
"""
import argparse
import pathlib
import sys
import time

import numpy as np
from tqdm import tqdm

import vkgrad as vk
import vkgrad.distributed as dist
import vkgrad.nn.functional as F
from vkgrad.datasets import MNIST, DataLoader, DistributedSampler
from vkgrad.nn.parallel import DistributedDataParallel

OUT = pathlib.Path("build") / "mnist_lenet5"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None,
                   help="host, vulkan, vulkan:N (default: the best GPU, else the host)")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: 0.01 (sgd), 0.001 (adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--data", default=None, help="directory of the MNIST IDX files (full MNIST)")
    p.add_argument("--checkpoint", type=pathlib.Path, default=OUT / "checkpoint.safetensors")
    p.add_argument("--plot", type=pathlib.Path, default=OUT / "learning_curves.png")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None,
                   help="use only this many training and test images (smoke tests)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI job (run under mpiexec)")
    return p.parse_args(argv)


def summed(*values):
    """`values` summed over all ranks of a distributed run (as they are in a single process)."""
    if not dist.is_initialized():
        return values
    t = vk.tensor(values, dtype=vk.float64, device="host")
    dist.all_reduce(t)
    return tuple(t.tolist())


def is_main():
    """Whether this process prints, plots and writes checkpoints: rank 0, or a single process."""
    return not dist.is_initialized() or dist.rank() == 0


def evaluate(model, loader):
    """(mean loss, accuracy) over a loader (over all ranks' loaders), without recording a
    graph."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with vk.no_grad():
        for x, y in loader:
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(axis=1) == y).sum().item())
            n += y.shape[0]
    loss_sum, correct, n = summed(loss_sum, correct, n)
    return loss_sum / n, correct / n


def training_step(model, optimizer):
    """step(x, y) -> (loss, correct predictions), both on the device, through vk.compile: the
    step is recorded once and replayed for every batch of the same size (bit-exact, no Python
    ops), on Vulkan as a command buffer, on the host as its numpy calls. Distributed steps run
    eagerly (their all-reduces go through MPI, which a replay does not repeat)."""
    def step(x, y):
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        with vk.no_grad():
            return loss, (logits.argmax(axis=1) == y).sum()

    return step if dist.is_initialized() else vk.compile(step)


def train_epoch(model, step, loader, epoch, epochs):
    """One pass over `loader`; (mean loss, accuracy). The loss is read back each step for the
    progress bar (the step's one host wait); correct predictions are counted on the device."""
    model.train()
    loss_sum, n, correct = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
               file=sys.stdout, dynamic_ncols=True, disable=not is_main())
    for x, y in bar:
        loss, hits = step(x, y)
        correct = correct + hits  # a new tensor: a replay overwrites `hits` in place
        loss_sum += loss.item() * y.shape[0]
        n += y.shape[0]
        bar.set_postfix(loss=f"{loss_sum / n:.4f}")
    loss_sum, correct, n = summed(loss_sum, int(correct.item()), n)
    return loss_sum / n, correct / n


def plot(history, path):
    """Loss and accuracy per epoch, train and test, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "o-"), ("test", "s--")):
        left.plot(epochs, history[f"{split}_loss"], style, label=split)
        right.plot(epochs, 100 * np.asarray(history[f"{split}_acc"]), style, label=split)
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss", yscale="log")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(history["title"])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse(argv)
    if args.distributed:
        dist.init()
        device = dist.device(args.device)
    else:
        device = vk.best_device() if args.device is None else vk.device(args.device)
    dtype = vk.bfloat16 if args.dtype == "bf16" else vk.float32
    lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "sgd" else 0.001)
    vk.manual_seed(args.seed)

    train_set, test_set = (MNIST(args.data, train=split) for split in (True, False))
    if args.limit:
        train_set, test_set = ((s.images[:args.limit], s.labels[:args.limit])
                               for s in (train_set, test_set))
    model = vk.models.lenet5(device=device, dtype=dtype)
    if args.optimizer == "sgd":
        optimizer = vk.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum)
    else:
        optimizer = vk.optim.Adam(model.parameters(), lr=lr)
    data = dict(device=device, dtype=dtype, normalize=MNIST.mean_std)
    if args.distributed:  # every rank its shard of each epoch, and its part of the test set
        r, n = dist.rank(), dist.world_size()
        order = DistributedSampler(range(len(train_set[1] if args.limit else train_set)),
                                   shuffle=True, seed=args.seed)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=order, **data)
        images, labels = (test_set if args.limit else (test_set.images, test_set.labels))
        test_loader = DataLoader((images[r::n], labels[r::n]), batch_size=500, **data)
        model = DistributedDataParallel(model)
        where = f"{n} ranks, {device} on rank 0"
    else:
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                  seed=args.seed, **data)
        test_loader = DataLoader(test_set, batch_size=500, **data)
        where = str(device)
    title = (f"LeNet5 on {'MNIST' if args.data else 'embedded MNIST'}, {args.optimizer} lr {lr}, "
             f"batch {args.batch_size}, {dtype.name} on {where}")
    history = {"title": title, "train_loss": [], "train_acc": [], "test_loss": [],
               "test_acc": [], "seconds": []}

    start = 0
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if args.resume:
        if not args.checkpoint.exists():
            sys.exit(f"--resume: no checkpoint at {args.checkpoint}; train without --resume first")
        state = vk.load(args.checkpoint, device=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        train_loader.load_state_dict(state["loader"])
        vk.set_rng_state(state["rng"])
        history, start = state["history"], state["epoch"]
        if is_main():
            print(f"resumed from {args.checkpoint} after epoch {start}")

    (test_images,) = summed(len(test_loader.labels))
    if is_main():
        print(f"{title}: {len(train_loader.labels)} training and {test_images:.0f} test images, "
              f"{sum(p.size for p in model.parameters())} parameters")
    step = training_step(model, optimizer)
    for epoch in range(start + 1, args.epochs + 1):
        began = time.perf_counter()
        train_loss, train_acc = train_epoch(model, step, train_loader, epoch, args.epochs)
        test_loss, test_acc = evaluate(model, test_loader)
        seconds = time.perf_counter() - began
        for key, value in (("train_loss", train_loss), ("train_acc", train_acc),
                           ("test_loss", test_loss), ("test_acc", test_acc),
                           ("seconds", seconds)):
            history[key].append(value)
        if not is_main():
            continue
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f} acc {train_acc:.2%} | "
              f"test loss {test_loss:.4f} acc {test_acc:.2%} | {seconds:.1f} s")
        vk.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "loader": train_loader.state_dict(), "rng": vk.get_rng_state(),
                 "history": history, "epoch": epoch}, args.checkpoint)
        plot(history, args.plot)
    if history["test_acc"] and is_main():
        print(f"test accuracy {history['test_acc'][-1]:.2%}; checkpoint {args.checkpoint}, "
              f"learning curves {args.plot}")
    return history


if __name__ == "__main__":
    main()
