"""The digits models: architecture, shipped weights (hash and accuracy), training recipes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach.datasets import load_digits
from lrp_teach.models import BasicBlock, count_parameters, digits_cnn, digits_mlp, digits_resnet
from lrp_teach.pretrained import PretrainedError, entry, sha256
from lrp_teach.train import RECIPES, _discover
from lrp_teach.train.digits import (
    WATERMARK,
    accuracy,
    train_digits_cnn,
    train_digits_resnet,
    watermark_flip_rate,
    watermark_train_set,
)

torch.set_num_threads(1)

NAMES = ["digits_mlp", "digits_cnn", "digits_cnn_watermark", "digits_resnet"]
SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Sequential)


@pytest.fixture(scope="module")
def digits16():
    return load_digits(size=16)


def test_architectures():
    mlp = digits_mlp()
    assert [m.__class__ for m in mlp] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [100, 50, 10]
    assert mlp(torch.rand(5, 64)).shape == (5, 10)

    cnn = digits_cnn()
    assert 30_000 <= count_parameters(cnn) <= 50_000
    assert all(isinstance(m, SUPPORTED) for m in cnn.modules())
    assert {n for n, _ in cnn.named_children()} == {"features", "classifier"}
    kinds = {type(m) for m in cnn.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Linear} <= kinds
    assert cnn.eval()(torch.rand(3, 1, 16, 16)).shape == (3, 10)


def test_resnet_architecture():
    net = digits_resnet().eval()
    assert 30_000 <= count_parameters(net) < 60_000
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3
    assert blocks[0].downsample is None  # identity skip
    for block in blocks[1:]:  # stride 2: a 1x1 conv + BatchNorm on the skip
        assert block.conv1.stride == (2, 2)
        conv, bn = block.downsample
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(bn, nn.BatchNorm2d)
    assert not isinstance(net, nn.Sequential)
    assert net(torch.rand(3, 1, 16, 16)).shape == (3, 10)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)  # the global pool takes any size


def test_resnet_block_adds_the_skip_before_the_last_relu():
    torch.manual_seed(0)
    for block in (BasicBlock(4, 4).eval(), BasicBlock(4, 6, stride=2).eval()):
        x = torch.randn(2, 4, 6, 6)
        residual = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        skip = x if block.downsample is None else block.downsample(x)
        assert torch.allclose(block(x), torch.relu(residual + skip), atol=1e-6)


def test_builders_reject_bad_arguments():
    with pytest.raises(ValueError, match="hidden"):
        digits_mlp(hidden=(100,))
    with pytest.raises(ValueError, match="size"):
        digits_cnn(size=10)
    with pytest.raises(ValueError, match="channels"):
        digits_cnn(channels=(0, 4))
    with pytest.raises(ValueError, match="strides"):
        digits_resnet(channels=(8, 16), strides=(1, 3))
    with pytest.raises(ValueError, match="channels"):
        digits_resnet(channels=(), strides=())


def test_recipes_registered():
    _discover()
    for name in NAMES:
        assert RECIPES[name].startswith("lrp_teach.train.digits:")


@pytest.mark.parametrize("name", NAMES)
def test_manifest_hash_matches_file(name):
    info = entry(name)
    assert info["command"] == f"python -m lrp_teach.train {name}"
    assert sha256(lt.pretrained.data_dir() / info["file"]) == info["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_reach_stated_accuracy(name):
    info = entry(name)
    model = lt.pretrained.load(name)
    assert not model.training
    if name == "digits_mlp":
        data = load_digits(size=8, flat=True)
    else:
        data = load_digits(size=16)
    acc = accuracy(model, data.x_test, data.y_test)
    stated = info["metrics"]["test_accuracy"]
    assert acc == pytest.approx(stated, abs=1.5 / len(data.y_test))  # within one image
    assert acc >= (0.96 if name == "digits_mlp" else 0.97)


def test_watermark_model_is_a_clever_hans(digits16):
    info = entry("digits_cnn_watermark")
    assert info["watermark"] == WATERMARK
    hans = lt.pretrained.load("digits_cnn_watermark")
    clean = lt.pretrained.load("digits_cnn")
    flip = watermark_flip_rate(hans, digits16.x_test, digits16.y_test)
    assert flip == pytest.approx(info["metrics"]["watermark_flip_rate"], abs=0.01)
    assert 0.3 <= flip <= 0.8  # "about half the time"
    # the model trained on clean data ignores the patch
    assert watermark_flip_rate(clean, digits16.x_test, digits16.y_test) < 0.02


def test_watermark_train_set_marks_only_the_target_class(digits16):
    x, marked = watermark_train_set(digits16.x_train, digits16.y_train)
    target = digits16.y_train == WATERMARK["target"]
    assert not marked[~target].any()
    assert marked.sum().item() == round(WATERMARK["fraction"] * target.sum().item())
    p = WATERMARK["patch"]
    assert (x[marked][..., -p:, -p:] == WATERMARK["value"]).all()
    assert torch.equal(x[~marked], digits16.x_train[~marked])


@pytest.mark.parametrize(("name", "train"), [("digits_cnn", train_digits_cnn),
                                            ("digits_resnet", train_digits_resnet)])
def test_recipe_is_deterministic_and_reproduces_the_manifest(name, train):
    first = train(seed=0, save=False)
    second = train(seed=0, save=False)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    data = load_digits(size=16)
    stated = entry(name)["metrics"]["test_accuracy"]
    assert accuracy(first, data.x_test, data.y_test) == pytest.approx(stated, abs=0.01)


def test_resnet_ships_with_its_batchnorm_layers():
    net = lt.pretrained.load("digits_resnet")
    bns = [name for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 9  # stem, two per block, two downsample branches
    assert all(not m.training for m in net.modules())
    # trained running statistics, not the initial ones
    assert not torch.allclose(net.bn1.running_var, torch.ones_like(net.bn1.running_var))


def test_corrupt_weights_are_refused(tmp_path, monkeypatch):
    import json
    import shutil

    root = lt.pretrained.data_dir()
    (tmp_path / "weights").mkdir()
    shutil.copy(root / "weights" / "digits_mlp.pt", tmp_path / "weights" / "digits_mlp.pt")
    manifest = json.loads((root / "MANIFEST.json").read_text())
    manifest["weights"] = {"digits_mlp": manifest["weights"]["digits_mlp"]}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    with open(tmp_path / "weights" / "digits_mlp.pt", "ab") as handle:
        handle.write(b"tampered")
    monkeypatch.setenv("LRP_TEACH_DATA", str(tmp_path))
    with pytest.raises(PretrainedError, match="corrupt"):
        lt.pretrained.load("digits_mlp")


# ----------------------------------------------------------- the sentiment transformer
def test_sentiment_transformer_ships_verified_with_its_accuracy():
    from lrp_teach.train.lstm_models import sentiment_test_data

    info = entry("sentiment_transformer")
    assert info["command"] == "python -m lrp_teach.train sentiment_transformer"
    assert sha256(lt.pretrained.data_dir() / info["file"]) == info["sha256"]
    model = lt.pretrained.load("sentiment_transformer")
    layers = [m for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer)]
    assert len(layers) == 2 and all(m.self_attn.batch_first for m in layers)
    assert not any(m.training for m in model.modules())
    test = sentiment_test_data()
    with torch.no_grad():
        pred = model(test.tokens).argmax(1)
    acc = (pred == test.clean_labels).float().mean().item()
    assert acc >= 0.95
    assert acc == pytest.approx(info["metrics"]["test_accuracy"], abs=1e-3)
    # padding is masked: a sentence alone and inside a padded batch give the same logits
    k = int(test.lengths.argmin())
    n = int(test.lengths[k])
    with torch.no_grad():
        alone, batched = model(test.tokens[k : k + 1, :n]), model(test.tokens[k : k + 1])
    torch.testing.assert_close(alone, batched, rtol=0, atol=1e-5)


def test_sentiment_transformer_retrains_to_the_shipped_bytes(tmp_path, monkeypatch):
    import shutil

    from lrp_teach.train.transformer_models import train_sentiment_transformer

    shipped = entry("sentiment_transformer")
    shutil.copy(lt.pretrained.data_dir() / "MANIFEST.json", tmp_path / "MANIFEST.json")
    monkeypatch.setenv("LRP_TEACH_DATA", str(tmp_path))
    train_sentiment_transformer(seed=0)  # writes into tmp_path, never into data/
    again = entry("sentiment_transformer")
    assert again["sha256"] == shipped["sha256"]
    assert again["metrics"] == shipped["metrics"]
