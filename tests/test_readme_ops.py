"""The README's table of supported ops: every name it lists exists, and the ops it does not mark
as waiting for the device queue their work without a host synchronisation on Vulkan."""
import pathlib
import re

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn as nn
import vkgrad.nn.functional as F

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def table_rows():
    text = README.read_text()
    section = text.split("## Supported ops", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("family", "---"):
            ops = re.sub(r"\([^()]*\)", "", cells[1])  # parameters and operator spellings
            names = [n for n in re.findall(r"`([^`]+)`", ops) if re.fullmatch(r"[\w.]+", n)]
            rows.append((cells[0], names, cells[2].startswith("waits")))
    return rows


def resolve(name):
    if name.startswith(("F.", "nn.")):
        module, attr = name.split(".", 1)
        return getattr({"F": F, "nn": nn}[module], attr, None)
    for namespace in (vk, vk.Tensor, F, nn):
        if hasattr(namespace, name):
            return getattr(namespace, name)
    return None


def test_the_table_is_there_and_says_which_ops_wait():
    rows = table_rows()
    assert len(rows) >= 15 and sum(len(names) for _, names, _ in rows) > 150
    waiting = {name for _, names, waits in rows if waits for name in names}
    assert {"nonzero", "masked_select", "item", "allclose"} <= waiting


def test_every_listed_op_exists():
    missing = [(family, name) for family, names, _ in table_rows() for name in names
               if resolve(name) is None]
    assert not missing, missing


# Ops the table says do not wait, run on Vulkan on small inputs (listed by table family).
def _queued(x, m, i):
    return {
        "sorting": [lambda: x.sort(), lambda: vk.argsort(x), lambda: vk.topk(x, 2)],
        "reductions": [lambda: x.sum(axis=1), lambda: x.logsumexp(axis=0), lambda: vk.cumprod(x, 1),
                       lambda: vk.cummax(x, 1), lambda: x.argmax(axis=1)],
        "indexing": [lambda: x[:, i], lambda: vk.take_along_axis(x, i.reshape(3, 1), 1),
                     lambda: vk.scatter_reduce(x, 1, i.reshape(3, 1), x[:, :1], "amax"),
                     lambda: vk.masked_fill(x, m, 0.0)],
        "shapes": [lambda: vk.tril(m.astype(vk.float32)), lambda: vk.diagonal(x),
                   lambda: F.pad(x.reshape(1, 3, 4), (1, 2), mode="reflect"),
                   lambda: vk.meshgrid(x[0], x[1])],
        "algebra": [lambda: vk.einsum("ij,kj->ik", x, x), lambda: x @ x.swapaxes(0, 1)],
        "convolution": [lambda: F.interpolate(x.reshape(1, 1, 3, 4), scale_factor=2,
                                              mode="bilinear"),
                        lambda: F.conv_transpose2d(x.reshape(1, 1, 3, 4), x[:2, :2].reshape(
                            1, 1, 2, 2)),
                        lambda: F.max_pool2d(x.reshape(1, 1, 3, 4), 2, ceil_mode=True)],
        "math": [lambda: vk.logaddexp(x, x), lambda: vk.isclose(x, x), lambda: x.atan2(x),
                 lambda: F.softplus(x, beta=2.0), lambda: x.asinh()],
    }


def test_ops_not_marked_waits_queue_without_a_host_sync(vulkan, rng):
    x = vk.tensor(rng.standard_normal((3, 4)).astype(np.float32), device=vulkan)
    m = vk.tensor(rng.random((3, 4)) > 0.5, device=vulkan)
    i = vk.tensor(np.array([3, 0, 2]), device=vulkan)
    vk.synchronize()
    for family, calls in _queued(x, m, i).items():
        for call in calls:
            call()  # first call: may create pipelines, never waits
            vk.reset_stats()
            call()
            assert vk.stats()["host_syncs"] == 0, (family, vk.stats())


def test_ops_marked_waits_do_read_back(vulkan, rng):
    x = vk.tensor(rng.standard_normal((3, 4)).astype(np.float32), device=vulkan)
    for call in (lambda: vk.nonzero(x > 0), lambda: vk.masked_select(x, x > 0),
                 lambda: x[x > 0], lambda: vk.allclose(x, x), lambda: x.sum().item()):
        vk.synchronize()
        vk.reset_stats()
        call()
        assert vk.stats()["host_syncs"] >= 1
