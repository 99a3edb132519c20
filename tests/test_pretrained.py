import json

import pytest
import torch

import lrp_teach as lt


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LRP_TEACH_DATA", str(tmp_path))
    return tmp_path


SPEC = dict(builder="torch.nn:Linear", kwargs={"in_features": 3, "out_features": 2})


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_round_trip_with_hash(data_dir):
    model = _model()
    path = lt.pretrained.save("tiny", model, **SPEC, metrics={"test_accuracy": 0.5})
    manifest = json.loads((data_dir / "MANIFEST.json").read_text())
    entry = manifest["weights"]["tiny"]
    assert entry["sha256"] == lt.pretrained.sha256(path)
    assert entry["command"] == "python -m lrp_teach.train tiny"
    state = lt.pretrained.load_state_dict("tiny")
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)
    assert lt.pretrained.available() == ["tiny"]
    loaded = lt.pretrained.load("tiny")
    assert torch.equal(loaded.weight, model.weight) and not loaded.training


def test_corrupt_file_is_refused_with_a_clear_message(data_dir):
    path = lt.pretrained.save("tiny", _model(), **SPEC)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(lt.pretrained.PretrainedError, match="corrupt.*python -m lrp_teach.train"):
        lt.pretrained.load_state_dict("tiny")


def test_missing_file_and_unknown_name(data_dir):
    path = lt.pretrained.save("tiny", _model(), **SPEC)
    with pytest.raises(lt.pretrained.PretrainedError, match="no weights called 'huge'.*tiny"):
        lt.pretrained.load("huge")
    path.unlink()
    with pytest.raises(lt.pretrained.PretrainedError, match="missing"):
        lt.pretrained.load("tiny")


def test_missing_manifest(data_dir):
    with pytest.raises(lt.pretrained.PretrainedError, match="LRP_TEACH_DATA"):
        lt.pretrained.available()


def test_shipped_manifest_hashes_match_files():
    root = lt.pretrained.data_dir()
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for name, entry in manifest["weights"].items():
        assert lt.pretrained.sha256(root / entry["file"]) == entry["sha256"], name
        assert entry["command"] == f"python -m lrp_teach.train {name}"
        assert entry["metrics"], f"{name}: the manifest must record the accuracy reached"


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_shipped_image_models_load_verified_and_in_eval_mode(name):
    assert name in lt.pretrained.available()
    entry = lt.pretrained.entry(name)
    assert entry["builder"] == f"lrp_teach.models:{name}"
    assert entry["data"] == "load_digits(size=16)"
    model = lt.pretrained.load(name)
    assert not any(m.training for m in model.modules())
    state = lt.pretrained.load_state_dict(name)
    assert state.keys() == model.state_dict().keys()
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
