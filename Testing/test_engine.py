"""The OpenVINO engine: the same labels as TorchScript, a cache that is reused and rebuilt when
damaged, and PyTorch with one notice where OpenVINO is not installed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.inference.engine import OpenVinoNetwork, choose_engine, ov_cache_folder
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.phantom import make_phantom

from conftest import make_random_model

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def small_ct():
    """The shoulders of a 4 mm phantom: small enough for seconds, with many bones."""
    ct, _, _ = make_phantom(2, spacing=4.0, partial=False)
    n = ct.GetSize()[2]
    return ct[:, :, n - 90:n - 50]


@pytest.mark.parametrize("mirror", ["off", "on"])
def test_openvino_labels_agree_with_torchscript_on_the_bundled_model(small_ct, mirror):
    """With the mirror on, OpenVINO averages inside its graph (FusedMirrorNetwork), TorchScript around it."""
    model = load_model(resolve_model(None))
    results = {}
    for engine in ("torch", "openvino"):
        seg = Segmenter(model, InferenceOptions(device="cpu", engine=engine, mirror=mirror, anatomy=False))
        assert seg.engine.name == engine
        results[engine] = sitk.GetArrayFromImage(seg.segment(small_ct).labels)
    bone = (results["torch"] > 0) | (results["openvino"] > 0)
    agreement = float(np.mean(results["torch"][bone] == results["openvino"][bone]))
    assert bone.sum() > 1000 and agreement >= 0.999, agreement


def test_the_cache_is_reused_and_a_damaged_entry_rebuilt(tmp_path):
    model = load_model(make_random_model(tmp_path / "r.pt", patch=32))
    x = np.random.default_rng(0).normal(size=(1, 1, 32, 32, 32)).astype(np.float32)  # the one window shape
    import torch
    with torch.inference_mode():
        reference = model.module(torch.from_numpy(x)).numpy()
    first = OpenVinoNetwork(model, cache=tmp_path / "ov")
    assert first.rebuilt and (ov_cache_folder(model, tmp_path / "ov") / "manifest.json").is_file()
    second = OpenVinoNetwork(model, cache=tmp_path / "ov")
    assert not second.rebuilt
    np.testing.assert_allclose(second(torch.from_numpy(x)).numpy(), reference, atol=1e-3)
    weights = ov_cache_folder(model, tmp_path / "ov") / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the manifest no longer matches
    weights.write_bytes(bytes(data))
    third = OpenVinoNetwork(model, cache=tmp_path / "ov")
    assert third.rebuilt
    np.testing.assert_allclose(third(torch.from_numpy(x)).numpy(), reference, atol=1e-3)
    weights.write_bytes(b"")  # truncated
    assert OpenVinoNetwork(model, cache=tmp_path / "ov").rebuilt
    manifest = ov_cache_folder(model, tmp_path / "ov") / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["sha256"]["../../outside.bin"] = doc["sha256"]["model.bin"]  # a hostile manifest naming another path
    manifest.write_text(json.dumps(doc))
    assert OpenVinoNetwork(model, cache=tmp_path / "ov").rebuilt


def test_auto_picks_openvino_on_the_cpu_and_torch_on_request():
    import torch
    assert choose_engine("auto", torch.device("cpu")).name == "openvino"
    assert choose_engine("torch", torch.device("cpu")).name == "torch"
    assert choose_engine("auto", torch.device("cuda")).name == "torch"  # never OpenVINO on a GPU run


WITHOUT_OPENVINO = ("import sys; sys.modules['openvino'] = None  # as if it were not installed\n"
                    "from BoneSegmentationLib.cli import main\n"
                    "sys.exit(main(sys.argv[1:]))\n")


def test_without_openvino_torch_runs_with_one_notice(tmp_path):
    ct, _, _ = make_phantom(3, spacing=6.0, partial=True)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    model = make_random_model(tmp_path / "r.pt", spacing=6.0, patch=32)
    common = [str(tmp_path / "ct.nii.gz"), "--model", str(model), "--device", "cpu", "--no-mirror", "-q"]
    run = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO, "segment", *common, "-o", str(tmp_path / "a.nii.gz")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    notices = [line for line in run.stderr.splitlines() if "OpenVINO" in line]
    assert len(notices) == 1 and "fast-cpu" in notices[0]
    assert json.loads((tmp_path / "a.json").read_text())["resolved"]["engine"] == "torch"
    refused = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO, "segment", *common, "-o",
                              str(tmp_path / "b.nii.gz"), "--engine", "openvino"], capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode == 2 and not (tmp_path / "b.nii.gz").exists()
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not installed" in errors[0] and "fast-cpu" in errors[0]


def test_the_sidecar_names_the_engine(tmp_path, small_ct):
    from BoneSegmentationLib.cli import main
    sitk.WriteImage(small_ct, str(tmp_path / "ct.nii.gz"))
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "bones.nii.gz"), "--device", "cpu",
                 "--no-mirror", "-q"]) == 0
    resolved = json.loads((tmp_path / "bones.json").read_text())["resolved"]
    assert resolved["engine"] == "openvino" and "OpenVINO" in resolved["engine_description"]
