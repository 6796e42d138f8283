"""The small training job that tests/test_checkpoint_resume.py interrupts and resumes.

The same code trains in the test process and, resuming from a checkpoint, in a fresh one:

    python tests/checkpoint_job.py CONFIG DEVICE DTYPE CHECKPOINT STEPS OUT

loads CHECKPOINT into a freshly built job (other initial weights, other seed), trains STEPS more
steps and saves the job's checkpoint() to OUT. A job is a model with dropout (an MLP, or a tiny
conv net with batch norm), an optimizer, an lr scheduler stepped every step, a shuffling
DataLoader that a checkpoint may interrupt mid-epoch, and vkgrad's default random generator
(initial weights, dropout masks, the loader's seed).
"""
import sys

import numpy as np

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn
from vkgrad.datasets import DataLoader

# name: (model, optimizer, its arguments, (scheduler, its arguments))
CONFIGS = {
    "sgd-momentum": ("mlp", "SGD",
                     dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                     ("StepLR", dict(step_size=2, gamma=0.5))),
    "adam": ("conv", "Adam", dict(lr=0.01, amsgrad=True),
             ("CosineAnnealingLR", dict(T_max=5, eta_min=1e-3))),
    "adamw": ("mlp", "AdamW", dict(lr=0.01, weight_decay=0.1, master_weights=True),
              ("LinearLR", dict(start_factor=0.2, total_iters=4))),
}
SAMPLES, BATCH = 40, 8  # 5 batches an epoch


def build_model(kind):
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    # no conv bias before batch norm: its gradient is rounding noise, which Adam would amplify
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(36, 3))  # 8x8 -> 6x6 -> 3x3


def dataset(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((SAMPLES, 6) if kind == "mlp" else (SAMPLES, 8, 8))
    return x.astype(np.float32), rng.integers(0, 3, SAMPLES)


class Job:
    """One training run of CONFIGS[config] on `device` in `dtype`, everything seeded by
    `seed` (a resumed job is built with another seed: only the checkpoint may make it equal)."""

    def __init__(self, config, device, dtype, seed=0):
        kind, optimizer, kwargs, (scheduler, sched_kwargs) = CONFIGS[config]
        vk.manual_seed(seed)
        self.model = build_model(kind).to(device, dtype)
        self.optimizer = getattr(vk.optim, optimizer)(self.model.parameters(), **kwargs)
        self.scheduler = getattr(vk.optim.lr_scheduler, scheduler)(self.optimizer,
                                                                   **sched_kwargs)
        self.loader = DataLoader(dataset(kind), batch_size=BATCH, shuffle=True, device=device,
                                 dtype=dtype)

    def train(self, steps):
        self.model.train()
        done = 0
        while done < steps:
            for x, y in self.loader:  # a loop left with break resumes mid-epoch
                self.optimizer.zero_grad()
                F.cross_entropy(self.model(x), y).backward()
                self.optimizer.step()
                self.scheduler.step()
                done += 1
                if done == steps:
                    break

    def checkpoint(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "loader": self.loader.state_dict(),
                "rng": vk.get_rng_state()}

    def restore(self, checkpoint):
        """PyTorch's order: the optimizer's state (with the groups' lr and initial_lr) before
        the scheduler's."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.loader.load_state_dict(checkpoint["loader"])
        vk.set_rng_state(checkpoint["rng"])


def main(config, device, dtype, checkpoint, steps, out):
    job = Job(config, device, dtype, seed=1)
    job.restore(vk.load(checkpoint, device=device))
    job.train(int(steps))
    vk.save(job.checkpoint(), out)


if __name__ == "__main__":
    main(*sys.argv[1:])
