"""The self-describing model file: round trip, and refusal of bad files with specific messages."""

import json
import zipfile

import pytest
import torch

from BoneSegmentationLib.core.errors import ModelFileError
from BoneSegmentationLib.model.modelfile import (ModelMetadata, load_model, make_metadata, read_metadata,
                                                 read_model_metadata, save_model)
from BoneSegmentationLib.model.network import NoNewNet, count_parameters

from conftest import make_random_model


def test_round_trip_keeps_metadata_and_weights(tmp_path):
    path = make_random_model(tmp_path / "m.pt", seed=7)
    model = load_model(path)
    assert model.num_classes == 126
    assert model.class_names[1] == "cranium" and model.class_names[-1] == "femur_right"
    assert model.spacing == (2.0, 2.0, 2.0) and model.metadata["orientation"] == "LPS"
    torch.manual_seed(7)
    fresh = NoNewNet(126, base_features=4, levels=3)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(model.module(x), fresh.eval()(x))
    assert read_metadata(path) == model.metadata


def test_typed_metadata_matches_the_file(tmp_path):
    """Code reads the typed view; the raw JSON is kept for writing back unchanged."""
    path = make_random_model(tmp_path / "m.pt", seed=7)
    info = read_model_metadata(path)
    assert info.raw == read_metadata(path) and info == load_model(path).info
    assert info.spacing_mm == (2.0, 2.0, 2.0) and info.orientation == "LPS" and info.num_classes == 126
    assert info.intensity.clip_low == -1024.0 and info.intensity.std == 1000.0
    assert info.classes[1].name == "cranium" and len(info.classes[1].color) == 3
    assert info.label == f"{info.name} {info.version}" and info.size_divisor == 2 ** (3 - 1)
    bad = dict(info.raw, intensity={"clip_low": 0, "clip_high": -1, "mean": 0, "std": 1})
    with pytest.raises(ModelFileError, match="empty clip window"):
        ModelMetadata.from_dict(bad)


def test_default_network_matches_no_new_net():
    net = NoNewNet(126)
    assert 14.4e6 < count_parameters(net) < 14.6e6
    assert net.classifier.out_channels == 126 and net.classifier.bias is None
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert norms and all(m.affine for m in norms)
    assert acts and all(m.negative_slope == 0.02 for m in acts)
    assert [e[0][0].out_channels for e in net.encoders] == [30, 60, 120, 240]
    assert net.bottom[0][0].out_channels == 480
    assert [d[1][0].out_channels for d in net.decoders] == [120, 60, 30, 30]
    torch.jit.script(net)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(junk)
    good = make_random_model(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(truncated)


def test_plain_torchscript_without_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(NoNewNet(126, base_features=2, levels=2)), str(path))
    with pytest.raises(ModelFileError, match="no embedded metadata.json"):
        load_model(path)


def _with_metadata(tmp_path, meta, net=None):
    net = net or NoNewNet(len(meta["classes"]) if isinstance(meta.get("classes"), list) else 126,
                          base_features=2, levels=2)
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(net), str(path), _extra_files={"metadata.json": json.dumps(meta)})
    return path


def _meta(**overrides):
    meta = make_metadata(name="t", version="0", description="d",
                         network={"size_divisor": 2}, training={})
    meta.update(overrides)
    return meta


@pytest.mark.parametrize("overrides,message", [
    ({"format": "something-else"}, "not a BoneSegmentation model"),
    ({"modality": "MR"}, "only CT models"),
    ({"spacing_mm": [2, 2]}, "'spacing_mm' must be three positive numbers"),
    ({"format_version": 99}, "newer than this software supports"),
    ({"intensity": {"clip_low": 0, "clip_high": 1, "mean": 0}}, "lacks the number 'std'"),
    ({"patch_size": "96"}, "'patch_size' has the wrong type"),
])
def test_bad_metadata_is_refused(tmp_path, overrides, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(_with_metadata(tmp_path, _meta(**overrides)))


def test_missing_key_is_named(tmp_path):
    meta = _meta()
    del meta["orientation"]
    with pytest.raises(ModelFileError, match="lacks the required key 'orientation'"):
        load_model(_with_metadata(tmp_path, meta))


def test_channel_count_mismatch_is_refused(tmp_path):
    path = _with_metadata(tmp_path, _meta(), net=NoNewNet(10, base_features=2, levels=2))
    with pytest.raises(ModelFileError, match="outputs 10 channels but its metadata lists 126 classes"):
        load_model(path)


def test_invalid_json_metadata(tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(NoNewNet(126, base_features=2, levels=2)), str(path),
                   _extra_files={"metadata.json": "{not json"})
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_metadata(path)


def test_save_is_atomic_and_validates(tmp_path):
    bad = _meta(classes=[{"index": 0, "name": "bone"}, {"index": 1, "name": "x"}])
    with pytest.raises(ModelFileError, match="class 0 must be 'background'"):
        save_model(NoNewNet(2, base_features=2, levels=2), bad, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())
    path = save_model(NoNewNet(126, base_features=2, levels=2), _meta(), tmp_path / "ok.pt")
    assert zipfile.is_zipfile(path) and not list(tmp_path.glob("*.tmp"))
