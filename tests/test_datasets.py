import pytest
import torch

import lrp_teach as lt


def test_digits_split_is_deterministic_and_stratified():
    a = lt.datasets.load_digits()
    b = lt.datasets.load_digits()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert len(a.x_train) + len(a.x_test) == 1797
    assert a.x_train.shape[1:] == (1, 8, 8)
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 40  # every class present in the test split
    c = lt.datasets.load_digits(seed=1)
    assert not torch.equal(a.y_test, c.y_test)


def test_digits_scaling_flat_and_upsampling():
    d = lt.datasets.load_digits(low=-1.0, high=1.0, flat=True)
    assert d.x_train.shape[1] == 64
    assert d.x_train.min() == -1.0 and d.x_train.max() == 1.0
    assert (d.low, d.high) == (-1.0, 1.0)
    big = lt.datasets.load_digits(size=16, dtype=torch.float64)
    assert big.x_train.shape[1:] == (1, 16, 16) and big.x_train.dtype == torch.float64
    assert big.x_train.min() >= 0.0 and big.x_train.max() <= 1.0


def test_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 8"):
        lt.datasets.load_digits(size=12)
    with pytest.raises(ValueError, match="high > low"):
        lt.datasets.load_digits(low=1.0, high=0.0)


def test_watermark_stamps_a_copy():
    x = torch.zeros(2, 1, 8, 8)
    y = lt.datasets.add_watermark(x, 1.0, patch=3, corner="bottom-left")
    assert x.sum() == 0  # input untouched
    assert y.sum() == 2 * 9 and torch.all(y[:, :, 5:, :3] == 1.0)
    with pytest.raises(ValueError, match="corner"):
        lt.datasets.add_watermark(x, 1.0, corner="middle")
    with pytest.raises(ValueError, match="N, C, H, W"):
        lt.datasets.add_watermark(torch.zeros(8, 8), 1.0)
