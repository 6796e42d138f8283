"""First and second partial derivatives of z = 2x^2 + 3y + 1, by autograd.

    python examples/partial_derivatives.py [--device host|vulkan] [--x 2.0] [--y -1.5]

dz/dx = 4x and dz/dy = 3; d2z/dx2 = 4, d2z/dy2 = 0 and d2z/dxdy = 0. The second derivatives
come from differentiating the first ones, which vkgrad.grad(..., create_graph=True) records.
"""
import argparse

import vkgrad as vk


def partials(x_value, y_value, device):
    """{name: value} of z and its first and second partial derivatives at (x, y)."""
    x = vk.tensor(x_value, device=device, requires_grad=True)
    y = vk.tensor(y_value, device=device, requires_grad=True)
    z = 2 * x ** 2 + 3 * y + 1
    dz_dx, dz_dy = vk.grad(z, [x, y], create_graph=True)
    d2z_dx2, d2z_dxdy = _derivatives(dz_dx, [x, y])
    d2z_dydx, d2z_dy2 = _derivatives(dz_dy, [x, y])
    return {"z": z.item(), "dz/dx": dz_dx.item(), "dz/dy": dz_dy.item(),
            "d2z/dx2": d2z_dx2, "d2z/dxdy": d2z_dxdy, "d2z/dydx": d2z_dydx, "d2z/dy2": d2z_dy2}


def _derivatives(first, inputs):
    """d(first)/d(input) for each input, as floats. A derivative that does not depend on any
    input (dz/dy = 3 here) has no graph, and an input it does not use gets None: both are 0."""
    if not first.requires_grad:
        return [0.0] * len(inputs)
    grads = vk.grad(first, inputs, allow_unused=True)
    return [0.0 if g is None else g.item() for g in grads]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(vk.default_device()))
    parser.add_argument("--x", type=float, default=2.0)
    parser.add_argument("--y", type=float, default=-1.5)
    args = parser.parse_args(argv)
    print(f"z = 2x^2 + 3y + 1 at x = {args.x}, y = {args.y} on {args.device}")
    for name, value in partials(args.x, args.y, args.device).items():
        print(f"  {name:9s} = {value:g}")


if __name__ == "__main__":
    main()
