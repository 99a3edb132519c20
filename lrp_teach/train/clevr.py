"""Training recipe ``clevr_rn``: the relation network of :mod:`lrp_teach.vqa` on CLEVR-lite.

``python -m lrp_teach.train clevr_rn`` trains on the generated train split on one CPU thread
(Adam, linear warm-up then cosine decay of the learning rate, mini-batches drawn by a seeded
generator), evaluates on the generated test split per question type, and ships the weights
with :func:`lrp_teach.pretrained.save`. Progress is printed as it goes.

What it took (accuracies on the validation or test split, measured while building chapter 8):

* The first shipped model (``g`` two layers of 64 units, black scenes, 120,000 steps) reached
  1.0 on shape, left and count questions but 0.624 on "closest" and 0.813 on "furthest". Its
  errors were not near-ties: only 0.6% of the closest questions tie on the grid of cells, and its
  accuracy did not grow with the distance of the closest object. It was not overfitting (0.634 on
  closest questions of training scenes). Of its 715 wrong closest answers, 574 named the shape of
  the runner-up.
* On the scenes with a floor, ``g`` of three layers of 128 units and ``f`` of 128 (80,000
  steps) first sat for about 22,000 steps on a plateau where it answered from the scene's shapes
  without binding the colour word to an object (a linear probe found the cells' colour in the CNN
  features only 88% of the time, their shape 100%), then learned the non-relational and count
  questions. On closest questions its accuracy did not depend on how much nearer the answer was
  than the runner-up (0.59 for a gap of 4-6 pixels, 0.57 for more than 12, after 28,000 steps):
  it had not learned the relation, not merely confused near-ties. It ended at test accuracy
  0.814 on relational questions (closest 0.602, furthest 0.736, count 1.0).
* ``g`` of two layers of 256 units (learning rate 1e-3) and of two layers of 128 (1e-3) were
  stopped on the first plateau, after 8,000 and 16,000 steps.
* The shipped configuration, :data:`CONFIG`, gives ``g`` the geometry of each pair of cells
  (``pair_geometry=True``: their offset and distance, a constant input of ``g``), so that ``g``
  need not compute a distance from four coordinates. In 60,000 steps it reached 0.887 on
  relational questions: furthest 0.969 and count 1.0, but closest only 0.621. The accuracies are
  in the manifest. Closest stays the open problem; why the sum over pairs followed by ``f``
  finds the furthest object and not the closest one we have not established.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..datasets.clevr_lite import QUESTION_TYPES, RELATIONAL, ClevrLite, load_clevr_lite
from ..engine.state import preserved
from ..vqa import RelationNetwork, build_relation_network
from . import register

__all__ = ["CONFIG", "accuracy_by_type", "fit_relation_network", "train_clevr_rn"]

register("clevr_rn", "lrp_teach.train.clevr:train_clevr_rn")

#: Hyper-parameters of the shipped model.
CONFIG: dict = {"steps": 60000, "batch_size": 32, "lr": 2e-3, "warmup": 1000,
                "weight_decay": 1e-5, "every": 4000,
                "model": {"g_units": 128, "f_units": 128, "g_layers": 3, "pair_geometry": True}}


@torch.no_grad()
def accuracy_by_type(model: RelationNetwork, data: ClevrLite,
                     batch_size: int = 256) -> dict[str, float]:
    """Test accuracy overall, on non-relational and relational questions, and per type."""
    with preserved(model):
        predictions = []
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)))
            image, tokens, lengths, _ = data.batch(idx)
            predictions.append(model.factored(image, tokens, lengths).argmax(1))
        correct = (torch.cat(predictions) == data.answers).double()
    out = {"accuracy": correct.mean().item()}
    rel = data.relational
    out["non_relational"] = correct[~rel].mean().item()
    out["relational"] = correct[rel].mean().item()
    for k, name in enumerate(QUESTION_TYPES):
        out[name] = correct[data.qtypes == k].mean().item()
    return out


def fit_relation_network(model: RelationNetwork, train: ClevrLite, *, steps: int,
                         batch_size: int, lr: float, warmup: int, weight_decay: float,
                         seed: int, monitor: ClevrLite | None = None, every: int = 1000,
                         checkpoint: str | None = None, log=print) -> RelationNetwork:
    """Adam on cross-entropy, learning rate ``lr * min(1, t/warmup) * cos`` decay to 0."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def schedule(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    start, running = time.time(), 0.0
    for t in range(steps):
        idx = torch.randint(len(train), (batch_size,), generator=generator)
        image, tokens, lengths, answers = train.batch(idx)
        loss = F.cross_entropy(model.factored(image, tokens, lengths), answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.item()
        if (t + 1) % every == 0:
            line = f"step {t + 1} samples {(t + 1) * batch_size} loss {running / every:.4f}"
            running = 0.0
            if monitor is not None:
                acc = accuracy_by_type(model, monitor)
                line += " " + " ".join(f"{k} {v:.3f}" for k, v in acc.items())
            log(f"{line} time {time.time() - start:.0f}s", flush=True)
            if checkpoint:
                torch.save(model.state_dict(), checkpoint)
    return model.eval()


def train_clevr_rn(seed: int = 0, config: dict | None = None, save: bool = True) -> dict:
    """Train, evaluate per question type on the test split, and ship ``clevr_rn``."""
    cfg = {**CONFIG, **(config or {})}
    torch.manual_seed(seed)
    model = build_relation_network(**cfg["model"])
    train = load_clevr_lite("train")
    val = load_clevr_lite("val")
    start = time.time()
    fit_relation_network(model, train, steps=cfg["steps"], batch_size=cfg["batch_size"],
                         lr=cfg["lr"], warmup=cfg["warmup"], weight_decay=cfg["weight_decay"],
                         seed=seed, monitor=val, every=cfg["every"],
                         checkpoint=cfg.get("checkpoint"))
    minutes = (time.time() - start) / 60
    test = load_clevr_lite("test")
    metrics = {f"test_{k}": round(v, 4) for k, v in accuracy_by_type(model, test).items()}
    metrics["train_minutes"] = round(minutes, 1)
    print("test", metrics, flush=True)
    if save:
        from .. import pretrained

        pretrained.save("clevr_rn", model, builder="lrp_teach.vqa:build_relation_network",
                        kwargs=cfg["model"], metrics=metrics,
                        extra={"data": "load_clevr_lite('train'); tested on "
                                       "load_clevr_lite('test')",
                               "relational_types": list(RELATIONAL),
                               "config": {k: v for k, v in cfg.items()
                                          if k not in ("model", "checkpoint")}})
    return metrics
