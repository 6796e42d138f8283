"""Train a character-level GPT on Python's documentation: the second main job (`make train-gpt`).

    python examples/char_gpt.py                            # best device, the default model
    python examples/char_gpt.py --device vulkan --dtype bf16 --iters 2000 --layers 4 --width 128
    python examples/char_gpt.py --resume                   # continue from the last checkpoint
    python examples/char_gpt.py --prompt "The for statement" --temperature 0.8 --top-k 20

The corpus is `pydoc_data.topics.topics` (about 465 KB of English and code that ships with every
Python: no network needed), the topics joined in sorted order; the last 10% is held out. The model
is nanoGPT's: token and position embeddings, `--layers` pre-norm transformer blocks
(nn.TransformerEncoderLayer with causal attention and GELU), a final layer norm and an untied
head. AdamW decays the matrices only (embeddings, norms and biases are not decayed), the lr warms
up linearly then follows a cosine (SequentialLR), and gradients are clipped to norm 1. A progress
bar shows the running loss; every --eval-interval iterations the validation loss is printed, a
checkpoint (model, optimizer, schedule, history; safetensors, written atomically) is saved and
the learning curve redrawn. Training batches depend only on (seed, iteration), so --resume
continues exactly where the checkpoint stopped. At the end a sample is generated from --prompt.
"""
import argparse
import math
import pathlib
import sys
import time

import numpy as np
from tqdm import tqdm

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn

OUT = pathlib.Path("build") / "char_gpt"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None,
                   help="host, vulkan, vulkan:N (default: the best GPU, else the host)")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=64, help="block size (characters)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=96, help="embedding width")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50, help="iterations of linear warm-up")
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--prompt", default="The ")
    p.add_argument("--sample-length", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--checkpoint", type=pathlib.Path, default=OUT / "checkpoint.safetensors")
    p.add_argument("--plot", type=pathlib.Path, default=OUT / "learning_curve.png")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def corpus():
    """(text, vocabulary): the documentation topics joined in sorted order, and its characters."""
    from pydoc_data.topics import topics
    text = "".join(topics[k] for k in sorted(topics))
    return text, sorted(set(text))


def unigram_entropy(ids, vocab_size):
    """-sum_c p(c) log p(c) in nats: the loss of a model that ignores context."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class GPT(nn.Module):
    """logits[b, t] = head(ln_f(blocks(tok_emb[x] + pos_emb[t]))), every block a pre-norm
    nn.TransformerEncoderLayer attending causally (each position sees itself and the past)."""

    def __init__(self, vocab_size, context, width, layers, heads, dropout=0.0, device=None,
                 dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, width, **kw)
        self.pos_emb = nn.Embedding(context, width, **kw)
        self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, "gelu", batch_first=True, norm_first=True, **kw)
            for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width, **kw)
        self.head = nn.Linear(width, vocab_size, **kw)
        for name, p in self.named_parameters():  # GPT-2's init: N(0, 0.02) matrices, zero biases
            if p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(vk.arange(t, device=self.pos_emb.weight.device))
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.head(self.ln_f(x))


def param_groups(model, weight_decay):
    """AdamW groups: decay on matrices (ndim >= 2), none on vectors (norms, biases)."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def schedule(optimizer, warmup, iters):
    """Linear warm-up from 1% over `warmup` iterations, then a cosine down to 10% at `iters`."""
    s = vk.optim.lr_scheduler
    base = optimizer.param_groups[0]["lr"]
    return s.SequentialLR(optimizer, [
        s.LinearLR(optimizer, start_factor=0.01, total_iters=warmup),
        s.CosineAnnealingLR(optimizer, T_max=max(1, iters - warmup), eta_min=0.1 * base)],
        milestones=[warmup])


def batch(data, rng, batch_size, context, device):
    """(inputs, targets) [batch, context]: random windows of `data` and the same shifted by one."""
    starts = rng.integers(0, len(data) - context - 1, batch_size)
    windows = data[starts[:, None] + np.arange(context + 1)]
    return (vk.tensor(windows[:, :-1], device=device), vk.tensor(windows[:, 1:], device=device))


def loss_of(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape((-1, logits.shape[-1])), y.reshape(-1))


def evaluate(model, data, args, device):
    """Mean loss over --eval-batches fixed windows of `data` (the same ones every time)."""
    model.eval()
    rng, total = np.random.default_rng((args.seed, 1 << 30)), 0.0
    with vk.no_grad():
        for _ in range(args.eval_batches):
            total += loss_of(model, *batch(data, rng, args.batch_size, args.context,
                                           device)).item()
    model.train()
    return total / args.eval_batches


def sample(model, stoi, itos, prompt, length, temperature, top_k, seed):
    """`prompt` continued by `length` characters, each drawn from softmax(logits / temperature)
    restricted to the top_k most likely (the distribution computed on the host, seeded)."""
    model.eval()
    rng, device = np.random.default_rng(seed), model.head.weight.device
    ids = [stoi[c] for c in prompt if c in stoi] or [0]
    with vk.no_grad():
        for _ in range(length):
            x = vk.tensor(np.asarray([ids[-model.context:]], np.int32), device=device)
            logits = model(x)[0, -1].astype(vk.float32).numpy().astype(np.float64) / temperature
            if top_k:
                logits[logits < np.sort(logits)[-min(top_k, len(logits))]] = -np.inf
            p = np.exp(logits - logits.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return "".join(itos[i] for i in ids)


def plot(history, path):
    """Training loss (mean over each interval) and validation loss against the iteration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["iter"], history["train_loss"], "o-", label="train")
    ax.plot(history["iter"], history["val_loss"], "s--", label="validation")
    ax.axhline(history["unigram"], color="gray", lw=0.8, label="unigram entropy")
    ax.set(xlabel="iteration", ylabel="cross-entropy (nats / char)", title=history["title"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse(argv)
    device = vk.best_device() if args.device is None else vk.device(args.device)
    dtype = vk.bfloat16 if args.dtype == "bf16" else vk.float32
    vk.manual_seed(args.seed)

    text, chars = corpus()
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.asarray([stoi[c] for c in text], np.int32)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    model = GPT(len(chars), args.context, args.width, args.layers, args.heads, args.dropout,
                device=device, dtype=dtype)
    optimizer = vk.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                               betas=(0.9, 0.99))
    scheduler = schedule(optimizer, args.warmup, args.iters)
    title = (f"char-GPT {args.layers}x{args.width}, context {args.context}, batch "
             f"{args.batch_size}, {dtype.name} on {device}")
    history = {"title": title, "unigram": unigram_entropy(val_data, len(chars)), "iter": [],
               "train_loss": [], "val_loss": [], "seconds": []}

    start = 0
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if args.resume:
        if not args.checkpoint.exists():
            sys.exit(f"--resume: no checkpoint at {args.checkpoint}; train without --resume first")
        state = vk.load(args.checkpoint, device=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        vk.set_rng_state(state["rng"])
        history, start = state["history"], state["iter"]
        print(f"resumed from {args.checkpoint} after iteration {start}")

    print(f"{title}: {len(train_data)} training and {len(val_data)} validation characters, "
          f"vocabulary {len(chars)}, {sum(p.size for p in model.parameters())} parameters; "
          f"unigram entropy {history['unigram']:.3f} nats")
    bar = tqdm(range(start, args.iters), desc="train", unit="it", initial=start, total=args.iters,
               leave=False, file=sys.stdout, dynamic_ncols=True)
    began, interval_loss, n = time.perf_counter(), 0.0, 0
    model.train()
    for it in bar:
        x, y = batch(train_data, np.random.default_rng((args.seed, it)), args.batch_size,
                     args.context, device)
        optimizer.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        interval_loss += loss.item()  # the step's one host wait: the progress bar shows it
        n += 1
        bar.set_postfix(loss=f"{interval_loss / n:.4f}")
        if (it + 1) % args.eval_interval == 0 or it + 1 == args.iters:
            val = evaluate(model, val_data, args, device)
            seconds = time.perf_counter() - began
            for key, value in (("iter", it + 1), ("train_loss", interval_loss / n),
                               ("val_loss", val), ("seconds", seconds)):
                history[key].append(value)
            tqdm.write(f"iter {it + 1}/{args.iters}: train loss {interval_loss / n:.4f} | val "
                       f"loss {val:.4f} | lr {scheduler.get_last_lr()[0]:.2e} | {seconds:.1f} s",
                       file=sys.stdout)
            vk.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": vk.get_rng_state(),
                     "history": history, "iter": it + 1}, args.checkpoint)
            plot(history, args.plot)
            began, interval_loss, n = time.perf_counter(), 0.0, 0
    bar.close()
    if history["val_loss"]:
        print(f"validation loss {history['val_loss'][-1]:.4f} nats/char (unigram entropy "
              f"{history['unigram']:.3f}, perplexity {math.exp(history['val_loss'][-1]):.2f}); "
              f"checkpoint {args.checkpoint}, learning curve {args.plot}")
    if args.sample_length:
        print("sample:")
        print(sample(model, stoi, chars, args.prompt, args.sample_length, args.temperature,
                     args.top_k, args.seed))
    return history


if __name__ == "__main__":
    main()
