"""Speed of ``lrp_teach.explain`` with AttnLRP/CP-LRP against an input gradient.

A 4-block torch ``nn.TransformerEncoder`` (``d_model`` 128, 4 heads, feed-forward 256,
batch first, post-norm, a key padding mask) on token ids through an ``nn.Embedding``, mean
pooling and a Linear head, random weights, float32, CPU, one thread, batch 8, 64 tokens.
Methods:

* ``gradient``: the reference, an input-only gradient: weights frozen, the embedded input
  as a leaf, ``torch.autograd.grad`` of the target logits with respect to it (one forward
  through torch's own, non-fused slow path, one backward);
* ``attnlrp``: ``lt.explain(model, (ids, pad), target, lt.composites.AttnLRP())``;
* ``cplrp``: the same with ``lt.composites.CPLRP()``.

The engine's rules add no matrix products (halved gradients, detached factors, a ratio
per Linear output), so its floor is the input gradient.  Times are medians over
repetitions run round-robin (load from other processes spreads over all methods).

Run: ``python benchmarks/bench_transformer.py`` (``--repeats N``, ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lrp_teach as lt  # noqa: E402

VOCAB, D_MODEL, HEADS, FF, BLOCKS, SEQ, BATCH = 1000, 128, 4, 256, 4, 64, 8


class Classifier(nn.Module):
    """Embedding -> 4 x TransformerEncoderLayer -> mean over positions -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, BLOCKS, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, 2)

    def body(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x, src_key_padding_mask=pad).mean(1))

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.body(self.emb(ids), pad)


def gradient(model, ids, pad, target):
    x = model.emb(ids).detach().requires_grad_(True)
    with torch.enable_grad():
        out = model.body(x, pad)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    return (x.detach() * g).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Classifier().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    pad = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    pad[::2, SEQ - 8:] = True
    target = torch.zeros(BATCH, dtype=torch.long)
    attn, cp = lt.composites.AttnLRP(), lt.composites.CPLRP()
    methods = {
        "gradient": lambda: gradient(model, ids, pad, target),
        "attnlrp": lambda: lt.explain(model, (ids, pad), target, attn),
        "cplrp": lambda: lt.explain(model, (ids, pad), target, cp),
    }
    repeats = 3 if args.quick else args.repeats
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():  # warm up
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["gradient"])
    print(f"{BLOCKS}-block TransformerEncoder, d_model {D_MODEL}, {HEADS} heads, seq {SEQ}, "
          f"batch {BATCH}, float32, 1 thread, median of {repeats} round-robin runs")
    print(f"{'method':<10} {'median ms':>10} {'x gradient':>11}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<10} {1000 * med:>10.2f} {med / base:>10.2f}x")


if __name__ == "__main__":
    main()
