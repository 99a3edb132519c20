"""The transformer chapter's comparison on ground truth and by token deletion, cached in JSON.

Explains the shipped ``sentiment_transformer`` on the first ``N`` test sentences of the
sentiment grammar that it and chapter 7's ``sentiment_bilstm`` both classify correctly, for
the true class, with each method of :data:`lrp_teach.transformer.METHOD_NAMES`, a random
ranking, and LRP of the BiLSTM on the same sentences.  Per sentence it records the rank and
mass accuracy on the decisive words, and the accuracy after deleting 1..4 words
most-relevant-first and least-relevant-first (:func:`lrp_teach.evaluation.deletion_curve`);
it writes means, standard errors and paired differences against AttnLRP to
``data/transformer_comparison.json``, also for the first ``--check`` sentences, which the
chapter recomputes live.  The run is deterministic, and running it again reproduces the file
byte for byte:

    OMP_NUM_THREADS=1 python benchmarks/transformer_comparison.py [--n 300] [--check 40]
"""

from __future__ import annotations

import argparse
import json

import torch

import lrp_teach as lt
from lrp_teach.transformer import COMPARISON_FILE, comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--check", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = comparison(args.n, args.check)
    path = lt.pretrained.data_dir() / COMPARISON_FILE
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    for name, row in result["all"]["methods"].items():
        print(f"{name:22s} " + "  ".join(f"{m} {row[m][0]:.3f} ± {row[m][1]:.3f}"
                                          for m in ("rank", "mass", "area")))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
