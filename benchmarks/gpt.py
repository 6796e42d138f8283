"""A char-GPT training step, vkgrad against torch on this machine, from the same weights.

    .venv/bin/python benchmarks/gpt.py                       # every device, f32 and bf16
    .venv/bin/python benchmarks/gpt.py --quick --devices host --dtypes f32

The model is examples/char_gpt.py's GPT at `make train-gpt`'s size (2 pre-norm blocks of width
96, 4 heads, context 64, vocabulary 103: 250k parameters) and its torch twin with the same module
names, so one state dict loads into both. One step at batch 16 (1,024 tokens) = forward,
cross-entropy, backward, clip_grad_norm_(1.0), AdamW (lr 1e-3, decay 0.1 on matrices), and the
loss read back with .item(). The batches are the same fixed windows of the corpus on both sides.

Agreement is checked before timing: the first CHECK_STEPS losses of every vkgrad row against
torch on the CPU in the same dtype (bf16 looser); a disagreement prints FAIL and exits 1. Timing
takes turns with every torch device (harness.timed_in_turns); the median is reported, with
tokens per second (1,024 / step time). Prints the machine and a markdown table; writes gpt.json
into --out.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch

import vkgrad as vk

from harness import (describe, device_label, machine, median, select_devices, speed_words,
                     timed_in_turns, torch_devices)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
import char_gpt  # noqa: E402  (the model and the corpus of the job it measures)

BATCH, CONTEXT, WIDTH, LAYERS, HEADS, BATCHES = 16, 64, 96, 2, 4, 4
TOKENS = BATCH * CONTEXT
LR, DECAY = 1e-3, 0.1
CHECK_STEPS = 3
DTYPES = {"f32": (vk.float32, torch.float32), "bf16": (vk.bfloat16, torch.bfloat16)}
TOL = {"f32": 1e-4, "bf16": 3e-2}  # largest relative loss difference from torch cpu


class TorchGPT(torch.nn.Module):
    """char_gpt.GPT in torch: the same modules under the same names."""

    def __init__(self, vocab):
        super().__init__()
        self.tok_emb = torch.nn.Embedding(vocab, WIDTH)
        self.pos_emb = torch.nn.Embedding(CONTEXT, WIDTH)
        self.blocks = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(
            WIDTH, HEADS, 4 * WIDTH, 0.0, "gelu", batch_first=True, norm_first=True)
            for _ in range(LAYERS)])
        self.ln_f = torch.nn.LayerNorm(WIDTH)
        self.head = torch.nn.Linear(WIDTH, vocab)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(t, device=idx.device,
                                                                    dtype=x.dtype)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True)
        return self.head(self.ln_f(x))


class VkgradRun:
    def __init__(self, device, dtype, state, vocab, batches):
        self.device = device
        self.model = char_gpt.GPT(vocab, CONTEXT, WIDTH, LAYERS, HEADS, device=device,
                                  dtype=dtype)
        self.model.load_state_dict(state)
        self.opt = vk.optim.AdamW(char_gpt.param_groups(self.model, DECAY), lr=LR)
        self.batches = [(vk.tensor(x, device=device), vk.tensor(y, device=device))
                        for x, y in batches]
        self.i = 0

    def step(self):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad()
        loss = char_gpt.loss_of(self.model, x, y)
        loss.backward()
        vk.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return float(loss.item())

    def finish(self):
        vk.synchronize()


class TorchRun:
    def __init__(self, device, sync, dtype, state, vocab, batches):
        self.sync = sync
        self.model = TorchGPT(vocab)
        self.model.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        self.model.to(device, dtype)
        params = list(self.model.parameters())
        self.opt = torch.optim.AdamW(
            [{"params": [p for p in params if p.ndim >= 2], "weight_decay": DECAY},
             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=LR)
        self.batches = [(torch.tensor(x, dtype=torch.long, device=device),
                         torch.tensor(y, dtype=torch.long, device=device)) for x, y in batches]
        self.i = 0

    def step(self):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad()
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return float(loss.item())

    def finish(self):
        self.sync()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", nargs="+", default=None,
                   help="vkgrad devices: host, vulkan, vulkan:N (default: all)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=None, help="most timed runs per row (30)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs after which a row stops (10)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 timed runs")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    args = p.parse_args(argv)
    for name, value in zip(("repeats", "budget"), (3, 0.0) if args.quick else (30, 10.0)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse(argv)
    devices = select_devices(args.devices)
    about = machine()
    print(describe(about), flush=True)
    text, chars = char_gpt.corpus()
    data = np.asarray([chars.index(c) for c in text[:200_000]], np.int32)
    rng = np.random.default_rng(0)
    batches = [tuple(t.numpy() for t in char_gpt.batch(data, rng, BATCH, CONTEXT, "host"))
               for _ in range(BATCHES)]
    vk.manual_seed(0)
    state = {k: v.numpy() for k, v in char_gpt.GPT(len(chars), CONTEXT, WIDTH, LAYERS,
                                                   HEADS).state_dict().items()}
    results, failures = [], []
    for dt in args.dtypes:
        torch_runs, reference = [], None
        for label, dev, sync in torch_devices():
            run = TorchRun(dev, sync, DTYPES[dt][1], state, len(chars), batches)
            losses = [run.step() for _ in range(CHECK_STEPS)]
            reference = reference or losses
            torch_runs.append((label, run))
        for d in devices:
            label = device_label(d)
            run = VkgradRun(d, DTYPES[dt][0], state, len(chars), batches)
            losses = [run.step() for _ in range(CHECK_STEPS)]
            difference = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
            if not difference <= TOL[dt]:
                failures.append(f"{dt} {label}: losses {losses} differ from torch cpu's "
                                f"{reference} by {difference:.3g} > {TOL[dt]:g}")
            times = timed_in_turns([(r.step, r.finish) for r in [run] + [t for _, t in
                                                                         torch_runs]],
                                   args.repeats, budget=args.budget)
            row = {"dtype": dt, "impl": label, "median_ms": median(times[0]) * 1e3,
                   "runs": len(times[0]), "losses": losses, "difference": difference,
                   "torch": {tl: median(tt) * 1e3 for (tl, _), tt in zip(torch_runs, times[1:])}}
            results.append(row)
            print(f"  {dt} {label}: {row['median_ms']:.1f} ms ({row['runs']} runs) vs "
                  + ", ".join(f"{tl} {ms:.1f} ms" for tl, ms in row["torch"].items())
                  + f"; losses {' '.join(f'{x:.5f}' for x in losses)}, difference "
                  f"{difference:.2e}", flush=True)
            del run
    print("\n" + format_table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpt.json"
    path.write_text(json.dumps({"machine": about, "results": results, "failures": failures},
                               indent=1, default=str))
    print(f"\nwrote {path}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)
    print("OK: every row agrees with torch cpu")


def format_table(results):
    """One row per dtype and vkgrad device: ms per step and tokens/s, each torch device's, and
    vkgrad / torch (vkgrad's time over torch's: above 1, torch is faster)."""
    torch_labels = [label for label, _, _ in torch_devices()]
    if "torch cuda" not in torch_labels:
        torch_labels.append("torch cuda")  # shown empty: no CUDA here
    header = ["dtype", "vkgrad on", "vkgrad ms (runs)", "vkgrad tokens/s"]
    for t in torch_labels:
        header += [f"{t} ms", f"{t} tokens/s", f"vkgrad / {t}"]
    lines = [f"train step of the char-GPT ({LAYERS} blocks, width {WIDTH}, {HEADS} heads), "
             f"batch {BATCH} x context {CONTEXT} = {TOKENS} tokens", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["dtype"], r["impl"].removeprefix("vkgrad "),
                 f"{r['median_ms']:.1f} ({r['runs']})", f"{TOKENS / r['median_ms'] * 1e3:,.0f}"]
        for t in torch_labels:
            other = r["torch"].get(t)
            cells += (["—"] * 3 if other is None else
                      [f"{other:.1f}", f"{TOKENS / other * 1e3:,.0f}",
                       f"{r['median_ms'] / other:.2f} ({speed_words(r['median_ms'], other)})"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
