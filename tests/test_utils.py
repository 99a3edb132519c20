import torch

import lrp_teach as lt


def test_seed_everything_makes_runs_repeatable():
    lt.utils.seed_everything(3)
    a = torch.randn(4)
    lt.utils.seed_everything(3)
    assert torch.equal(a, torch.randn(4))


def test_fit_classifier_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(2, 2)
    losses = lt.utils.fit_classifier(model, x, y, epochs=100, lr=0.1)
    assert losses[-1] < losses[0] / 4
    assert lt.utils.accuracy(model, x, y) > 0.95
    assert not model.training


def test_lazy_top_level_names():
    import lrp_teach

    assert "explain" in dir(lrp_teach) and "plot" in dir(lrp_teach)
    try:
        lrp_teach.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("unknown attribute did not raise")
