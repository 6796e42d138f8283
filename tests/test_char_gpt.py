"""examples/char_gpt.py: a small configuration learns, resumes, runs alike on every device; the
recipe it uses (AdamW groups, warm-up then cosine, gradient clipping) steps as torch's does; and
benchmarks/gpt.py's agreement check passes."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import vkgrad as vk

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "char_gpt.py"
SMALL = ["--width", "32", "--layers", "1", "--heads", "2", "--context", "32",
         "--batch-size", "16", "--warmup", "10", "--eval-batches", "4", "--sample-length", "20"]


@pytest.fixture(scope="module")
def char_gpt():
    spec = importlib.util.spec_from_file_location("char_gpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_model_learns_and_resumes(char_gpt, tmp_path, capsys):
    """150 steps take the validation loss well below the unigram entropy (about 3.13 nats: what
    a model that ignores context reaches); --resume then continues the same run."""
    files = ["--checkpoint", str(tmp_path / "ck.safetensors"), "--plot", str(tmp_path / "c.png")]
    history = char_gpt.main(SMALL + files + ["--iters", "150", "--eval-interval", "150",
                                             "--lr", "1e-2", "--device", "host"])
    assert history["val_loss"][-1] < 0.8 * history["unigram"], history
    assert (tmp_path / "c.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "sample:\nThe " in out and "validation loss" in out
    resumed = char_gpt.main(SMALL + files + ["--iters", "155", "--eval-interval", "150",
                                             "--lr", "1e-2", "--device", "host", "--resume"])
    assert "resumed from" in capsys.readouterr().out
    assert resumed["iter"] == [150, 155] and resumed["val_loss"][0] == history["val_loss"][0]


def test_devices_agree(char_gpt, tmp_path, device):
    """Three steps from the same seed: the same losses on every device (float32 sums in other
    orders: a few float32 roundings of each loss, far below the 1e-4 allowed)."""
    def losses(dev):
        files = ["--checkpoint", str(tmp_path / f"{dev}.safetensors"), "--plot",
                 str(tmp_path / f"{dev}.png")]
        h = char_gpt.main(SMALL + files + ["--iters", "3", "--eval-interval", "1",
                                           "--sample-length", "0", "--device", str(dev)])
        return h["train_loss"] + h["val_loss"]
    np.testing.assert_allclose(losses(device), losses("host"), rtol=1e-4)


def test_recipe_steps_as_torch(device):
    """AdamW with decay on matrices only, LinearLR warm-up then CosineAnnealingLR through
    SequentialLR, and clip_grad_norm_ on each step: parameters and lrs follow torch's in lockstep
    (float32 updates, compared to a few float32 roundings per step)."""
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    grads = [[rng.standard_normal(p.shape) * 5 for p in init] for _ in range(12)]

    def run(lib, make):
        params = [make(p) for p in init]
        opt = lib.optim.AdamW([{"params": [params[0]], "weight_decay": 0.1},
                               {"params": [params[1]], "weight_decay": 0.0}], lr=1e-2)
        s = lib.optim.lr_scheduler
        sched = s.SequentialLR(opt, [s.LinearLR(opt, start_factor=0.1, total_iters=4),
                                     s.CosineAnnealingLR(opt, T_max=8, eta_min=1e-3)],
                               milestones=[4])
        lrs = []
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = make(gi, False)
            (torch.nn.utils if lib is torch else vk.nn.utils).clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr())
        return [np.asarray(p.detach().numpy() if lib is torch else p.numpy()) for p in params], lrs

    theirs, their_lrs = run(torch, lambda a, grad=True: torch.tensor(
        a, dtype=torch.float32, requires_grad=grad))
    ours, our_lrs = run(vk, lambda a, grad=True: vk.tensor(
        a, dtype="float32", device=device, requires_grad=grad))
    np.testing.assert_allclose(our_lrs, their_lrs, rtol=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=12 * 8 * 2.0 ** -24 * (np.abs(b).max() + 1))


def test_benchmark_agrees_with_torch(tmp_path):
    """benchmarks/gpt.py's check: vkgrad's first losses match torch's from the same weights."""
    script = EXAMPLE.parent.parent / "benchmarks" / "gpt.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--devices", "host",
                             "--dtypes", "f32", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every row agrees with torch cpu" in result.stdout
    report = json.loads((tmp_path / "gpt.json").read_text())
    assert report["failures"] == [] and report["results"][0]["difference"] <= 1e-4
