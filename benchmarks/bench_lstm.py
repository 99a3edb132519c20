"""Batched LSTM-LRP (lrp_teach.lstm.explain) vs a per-sentence NumPy loop, batch 256.

The per-sentence loop is the float64 NumPy reference of tests/test_lstm.py (dense matrices,
one sentence at a time, as in Arras et al.'s reference code). Both explain the shipped
sentiment BiLSTM on the same sentences; the ratio of time per sentence is reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_lstm.py [--batch 256] [--loop 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_lstm import reference_lrp  # noqa: E402

import lrp_teach as lt  # noqa: E402
from lrp_teach import lstm as L  # noqa: E402
from lrp_teach.train.lstm_models import sentiment_test_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loop", type=int, default=32, help="sentences timed for the loop")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = lt.pretrained.load("sentiment_bilstm")
    data = sentiment_test_data()
    tokens, lengths = data.tokens[: args.batch], data.lengths[: args.batch]
    with torch.no_grad():
        target = model(tokens, lengths).argmax(1)

    results = {}
    for dtype in (torch.float64, torch.float32):
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            res = L.explain(model, tokens, lengths, target, dtype=dtype)
            best = min(best, time.perf_counter() - start)
        results[dtype] = (best / len(tokens), res)

    emb = model.embedding.weight.detach().double().numpy()
    start = time.perf_counter()
    worst = 0.0
    for k in range(args.loop):
        n = int(lengths[k])
        r_x, _, _ = reference_lrp(model, emb[tokens[k, :n].numpy()], int(target[k]))
        batched = results[torch.float64][1].input[k, :n].numpy()
        worst = max(worst, float(np.abs(batched - r_x).max()))
    loop = (time.perf_counter() - start) / args.loop

    print(f"batch {len(tokens)}, max length {tokens.shape[1]}, "
          f"BiLSTM hidden {model.lstm.hidden_size}, 1 thread")
    print(f"per-sentence NumPy loop : {loop * 1e3:8.3f} ms / sentence")
    for dtype, (per, _) in results.items():
        print(f"batched explain {str(dtype):14s}: {per * 1e3:8.3f} ms / sentence  "
              f"-> {loop / per:6.1f}x faster")
    print(f"max |difference| float64 batched vs loop: {worst:.1e}")


if __name__ == "__main__":
    main()
