"""Train the same model in vkgrad and PyTorch side by side and check that the losses agree.

    python examples/compare_torch.py                               # LeNet5, 50 steps, best device
    python examples/compare_torch.py --device vulkan --dtype bf16
    python examples/compare_torch.py --model mlp --steps 200 --optimizer adam

Both models start from the same weights (vkgrad's initial state dict copied into the
torch.nn.Sequential twin through numpy), see the same batches (vkgrad's DataLoader batches of
the embedded MNIST, converted to torch tensors) and take the same optimizer steps (vk.optim vs
torch.optim, same hyper-parameters). vkgrad runs on --device in --dtype; torch on the CPU in the
matching dtype. Each step prints both cross-entropy losses and their relative difference
|l_vk - l_torch| / |l_torch|; the script exits with status 1 if that difference ever exceeds
--tol (default 1e-3 for f32, 3e-2 for bf16, whose losses differ by rounding from the first step
and whose trajectories drift apart as the rounded weights do).
"""
import argparse
import math
import sys
import time

import numpy as np
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn
from vkgrad.datasets import MNIST, DataLoader

TOLERANCE = {"f32": 1e-3, "bf16": 3e-2}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None,
                   help="host, vulkan, vulkan:N (default: the best GPU, else the host)")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--model", default="lenet5", choices=["lenet5", "mlp"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=None, help="default: 0.01 (sgd), 0.001 (adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    p.add_argument("--tol", type=float, default=None,
                   help="largest relative loss difference allowed (default: by dtype)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(kind, device, dtype):
    """A vkgrad model: LeNet5, or an MLP 784 -> 128 -> 10 on flattened images."""
    if kind == "lenet5":
        return vk.models.lenet5(device=device, dtype=dtype)
    return nn.Sequential(nn.Linear(784, 128, device=device, dtype=dtype), nn.ReLU(),
                         nn.Linear(128, 10, device=device, dtype=dtype))


def torch_twin(model, dtype):
    """The torch.nn.Sequential with the same layers as the vkgrad Sequential `model`, holding a
    copy of its weights (state dict keys match: "0.weight", ...)."""
    layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            layers.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels,
                                          layer.kernel_size, layer.stride, layer.padding,
                                          layer.dilation, layer.groups,
                                          bias=layer.bias is not None))
        elif isinstance(layer, nn.Linear):
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features,
                                          bias=layer.bias is not None))
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                                             layer.dilation))
        elif isinstance(layer, nn.ReLU):
            layers.append(torch.nn.ReLU())
        elif isinstance(layer, nn.Flatten):
            layers.append(torch.nn.Flatten(layer.start_dim, layer.end_dim))
        else:
            raise TypeError(f"torch_twin: no torch twin for {type(layer).__name__}")
    twin = torch.nn.Sequential(*layers).to(dtype)
    twin.load_state_dict({k: to_torch(v, dtype) for k, v in model.state_dict().items()})
    return twin


def to_torch(t, dtype=None):
    """A vkgrad tensor as a torch CPU tensor (floating ones in `dtype`); bf16 values pass
    through float32 exactly."""
    a = t.numpy()
    if t.dtype.is_floating:
        return torch.from_numpy(a.astype(np.float32)).to(dtype)
    return torch.from_numpy(a.astype(np.int64))


def optimizers(args, model, twin, lr):
    if args.optimizer == "sgd":
        return (vk.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum),
                torch.optim.SGD(twin.parameters(), lr=lr, momentum=args.momentum))
    return vk.optim.Adam(model.parameters(), lr=lr), torch.optim.Adam(twin.parameters(), lr=lr)


def main(argv=None):
    args = parse(argv)
    device = vk.best_device() if args.device is None else vk.device(args.device)
    dtype, torch_dtype = ((vk.bfloat16, torch.bfloat16) if args.dtype == "bf16"
                          else (vk.float32, torch.float32))
    tol = TOLERANCE[args.dtype] if args.tol is None else args.tol
    lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "sgd" else 0.001)
    vk.manual_seed(args.seed)
    torch.manual_seed(args.seed)

    model = build(args.model, device, dtype)
    twin = torch_twin(model, torch_dtype)
    opt, torch_opt = optimizers(args, model, twin, lr)
    train = MNIST(train=True)
    rows = min(len(train), args.steps * args.batch_size)  # only the images the steps use
    loader = DataLoader((train.images[:rows], train.labels[:rows]), batch_size=args.batch_size,
                        shuffle=True, seed=args.seed, device=device, dtype=dtype,
                        normalize=MNIST.mean_std, flatten=args.model == "mlp")
    print(f"{args.model} in vkgrad ({dtype.name} on {device}) and torch {torch.__version__} "
          f"({str(torch_dtype).removeprefix('torch.')} on the CPU), {args.optimizer} lr {lr}, "
          f"batch {args.batch_size}, {args.steps} steps, tolerance {tol:g}")

    worst, seconds, step = 0.0, {"vkgrad": 0.0, "torch": 0.0}, 0
    while step < args.steps:
        for x, y in loader:
            step += 1
            began = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            ours = loss.item()
            seconds["vkgrad"] += time.perf_counter() - began

            tx, ty = to_torch(x, torch_dtype), to_torch(y)
            began = time.perf_counter()
            torch_opt.zero_grad()
            torch_loss = torch.nn.functional.cross_entropy(twin(tx), ty)
            torch_loss.backward()
            torch_opt.step()
            theirs = torch_loss.item()
            seconds["torch"] += time.perf_counter() - began

            rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
            worst = max(worst, math.inf if math.isnan(rel) else rel)
            print(f"step {step:3d}: vkgrad {ours:.6f} torch {theirs:.6f} diff "
                  f"{ours - theirs:+.2e} rel {rel:.2e}")
            if step == args.steps:
                break
    weights = max((to_torch(p, torch.float64) - q.detach().double()).abs().max().item()
                  for p, q in zip(model.parameters(), twin.parameters()))
    print(f"largest relative loss difference {worst:.2e} (tolerance {tol:g}); largest weight "
          f"difference after {step} steps {weights:.2e}; "
          + ", ".join(f"{k} {1e3 * v / max(step, 1):.1f} ms/step" for k, v in seconds.items()))
    if worst > tol:
        print(f"FAIL: the losses diverged beyond the tolerance {tol:g}")
        sys.exit(1)
    print("OK: vkgrad and torch agree")
    return worst


if __name__ == "__main__":
    main()
