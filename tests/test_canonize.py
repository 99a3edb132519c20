"""BatchNorm folding: same outputs, original untouched, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_teach as lt
import lrp_teach.canonize

torch.set_num_threads(1)


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=g))
                m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def models():
    torch.manual_seed(0)
    yield nn.Sequential(  # BN after conv / linear (preceding layer), one without bias
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.Dropout(), nn.BatchNorm2d(4, affine=False)),
        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5), nn.ReLU(),
        nn.Linear(5, 3),
    )
    yield nn.Sequential(  # BN first, and BN after a ReLU (following layers)
        nn.BatchNorm2d(2), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.Flatten(),
        nn.Linear(3 * 6 * 6, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2),
    )


@pytest.mark.parametrize("model", list(models()))
def test_folding_keeps_the_outputs(model):
    model = _randomize_bn(model)
    x = torch.randn(5, 2, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = lt.canonize(model)
    assert folded is not model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) >= 2
    R = lt.explain(folded, x, 0)
    assert R.shape == x.shape and torch.isfinite(R).all()


def test_module_is_importable_and_callable():
    assert callable(lrp_teach.canonize)
    assert lrp_teach.canonize.canonize is lt.canonize.canonize
    model = _randomize_bn(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    x = torch.randn(4, 3)
    torch.testing.assert_close(lt.canonize(model)(x), model(x))


def test_fold_into_padded_following_conv_is_refused():
    model = _randomize_bn(nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)))
    with pytest.raises(ValueError, match="padded"):
        lt.canonize(model)


def test_lonely_batchnorm_is_refused():
    model = _randomize_bn(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="no Linear/Conv layer"):
        lt.canonize(model)
    no_stats = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        lt.canonize(no_stats)
