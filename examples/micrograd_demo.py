"""The micrograd demo: a scalar expression built from +, *, **, relu and /, and its gradients.

    python examples/micrograd_demo.py [--device host|vulkan]

Prints the value of g and dg/da, dg/db, computed by vkgrad's autograd and, when PyTorch is
installed, by torch for comparison (g = 24.7041, dg/da = 138.8338, dg/db = 645.5773).
"""
import argparse

import vkgrad as vk


def expression(a, b):
    """The graph of micrograd's README; works on vkgrad and torch tensors alike. (`c += ...` on a
    tensor in a recorded graph makes a new tensor, as autograd needs, and rebinds the name.)"""
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    return g


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(vk.default_device()))
    args = parser.parse_args(argv)

    a = vk.tensor(-4.0, device=args.device, requires_grad=True)
    b = vk.tensor(2.0, device=args.device, requires_grad=True)
    g = expression(a, b)
    g.backward()
    print(f"vkgrad ({g.device}): g = {g.item():.4f}, dg/da = {a.grad.item():.4f}, "
          f"dg/db = {b.grad.item():.4f}")
    try:
        import torch
    except ImportError:
        return
    ta = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    tg = expression(ta, tb)
    tg.backward()
    print(f"torch:          g = {tg.item():.4f}, dg/da = {ta.grad.item():.4f}, "
          f"dg/db = {tb.grad.item():.4f}")


if __name__ == "__main__":
    main()
