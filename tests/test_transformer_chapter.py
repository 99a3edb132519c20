"""The transformer chapter's helpers (lrp_teach.transformer) and its cached comparison."""

from __future__ import annotations

import json

import pytest
import torch

import lrp_teach as lt
from lrp_teach import transformer as tfm
from lrp_teach.evaluation import deletion_curve
from lrp_teach.train.lstm_models import sentiment_test_data

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setting():
    model = lt.pretrained.load("sentiment_transformer")
    test = sentiment_test_data()
    idx = torch.arange(30)
    width = int(test.lengths[idx].max())
    return model, test.tokens[idx, :width], test.clean_labels[idx], test.lengths[idx], \
        test.decisive[idx, :width]


def test_token_scores_cover_every_method_with_one_score_per_token(setting):
    model, ids, y, _, _ = setting
    scores = tfm.token_scores(model, ids, y)
    assert tuple(scores) == tfm.METHOD_NAMES
    for name, s in scores.items():
        assert s.shape == ids.shape, name
        assert (s[ids == 0] == 0).all(), name  # padding is masked: it gets nothing
    for name in ("Raw attention", "Attention rollout"):
        torch.testing.assert_close(scores[name].sum(1), torch.ones(len(ids)), rtol=0, atol=1e-5)
    # LRP's word share plus the positions' share plus what the layers absorb is the logit
    (r_tok, r_pos), report = lt.explain(model, (ids, tfm.positions_like(ids)), y,
                                        composite=lt.composites.AttnLRP(), check=True)
    torch.testing.assert_close(scores["AttnLRP"], r_tok.float())
    gap = r_tok.sum(1) + r_pos.sum(1) + sum(e.absorbed for e in report.layers) - report.logit
    assert gap.abs().max() < 1e-4


def test_per_sentence_deletion_averages_to_the_batched_curve(setting):
    model, ids, y, lengths, _ = setting
    scores = tfm.token_scores(model, ids, y, ("Gradient x Input",))["Gradient x Input"]
    for order in ("most", "least"):
        rows = tfm.per_sentence_deletion(model, (ids,), scores, y, lengths, 3, order)
        assert rows.shape == (len(ids), 4) and set(rows.unique().tolist()) <= {0.0, 1.0}
        batched = deletion_curve(model, (ids,), scores, y, 3, order=order, lengths=lengths)
        torch.testing.assert_close(rows.mean(0), batched, rtol=0, atol=1e-6)


def test_ground_truth_metrics_of_the_mask_itself_and_of_its_opposite(setting):
    *_, decisive = setting
    perfect = tfm.ground_truth_metrics(decisive.float(), decisive)
    assert (perfect["rank"] == 1).all() and (perfect["mass"] == 1).all()
    opposite = tfm.ground_truth_metrics((~decisive).float(), decisive)
    assert (opposite["rank"] == 0).all() and (opposite["mass"] == 0).all()
    m, se = tfm.mean_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and se == pytest.approx(torch.tensor([1.0, 2, 3, 4]).std().item() / 2)


def test_the_cached_comparison_is_reproduced_on_its_check_sentences():
    cache = json.loads((lt.pretrained.data_dir() / tfm.COMPARISON_FILE).read_text())
    assert cache["n"] >= 200
    names = set(cache["all"]["methods"])
    assert names == {*tfm.METHOD_NAMES, "Random", "BiLSTM LRP"}
    live = tfm.comparison(n=cache["check_n"], check=cache["check_n"])["all"]
    for name, row in cache["check"]["methods"].items():
        for measure in ("rank", "mass", "area"):
            assert live["methods"][name][measure] == pytest.approx(row[measure], abs=1e-4)
