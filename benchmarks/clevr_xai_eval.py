"""Chapter 8's ground-truth evaluation on CLEVR-lite, cached in JSON.

Draws ``--per-type`` correctly answered test questions of each of the five question types,
balanced over the named colour and the scenes (:func:`lrp_teach.vqa.balanced_sample`), and
explains the true answer with every method of :data:`lrp_teach.vqa.METHODS` (four LRP
conventions and six other methods) and the two model-free controls of
:data:`lrp_teach.vqa.CONTROLS`, on the shipped ``clevr_rn`` and on two re-initialised copies
(``f`` and ``g``; ``f``, ``g`` and the CNN). Every map is scored against the ground-truth
masks under each of the six channel poolings of CLEVR-XAI; the file keeps means, standard
errors, per-type means, paired differences between methods and trained minus random
(:func:`lrp_teach.vqa.summarise_scores`), and the means of the first ``--check`` questions of
each type, which the chapter recomputes live. The run is deterministic:

    OMP_NUM_THREADS=1 python benchmarks/clevr_xai_eval.py [--per-type 200] [--check 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import lrp_teach as lt
from lrp_teach.vqa import EVALUATION_FILE, evaluation_table, load_evaluation_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-type", type=int, default=200)
    parser.add_argument("--check", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    table = evaluation_table(args.per_type, args.check)
    path = lt.pretrained.data_dir() / EVALUATION_FILE
    path.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    mean = load_evaluation_table()["all"]["mean"]
    for key, (m, se) in mean.items():
        model, pooling, method, score = key.split("|")
        if pooling == "sum,pos" and score in ("mass_single", "share_single"):
            print(f"{model:18s} {method:22s} {score:13s} {m:.3f} ± {se:.3f}")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
