"""The command line: one clear error line and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from BoneSegmentationLib.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "BoneSegmentationLib", *args], capture_output=True, text=True)


def test_segment_writes_nifti_and_confidence(real_data, random_model_file_4mm, tmp_path, capsys):
    out, conf = tmp_path / "labels.nii.gz", tmp_path / "conf.nii.gz"
    rc = main(["segment", str(real_data / "ts_abdomen_ct.nii.gz"), "-o", str(out), "--model",
               str(random_model_file_4mm), "--overlap", "0", "--confidence", str(conf), "--confidence-grid", "model",
               "-q", "-v"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "bones found" in stdout and "wrote" in stdout
    ct, labels = sitk.ReadImage(str(real_data / "ts_abdomen_ct.nii.gz")), sitk.ReadImage(str(out))
    assert labels.GetSize() == ct.GetSize() and labels.GetOrigin() == pytest.approx(ct.GetOrigin())
    assert sitk.ReadImage(str(conf)).GetSpacing() == pytest.approx((4, 4, 4))
    review = json.loads((tmp_path / "labels.review.json").read_text())
    assert len(review["bones"]) == 125 and review["model"] == "random-test 0"
    scores = [b["score"] for b in review["bones"]]
    assert scores == sorted(scores, reverse=True)
    before = out.read_bytes()
    rc = main(["segment", str(real_data / "ts_abdomen_ct.nii.gz"), "-o", str(out), "--model",
               str(random_model_file_4mm), "-q"])
    assert rc == 2 and out.read_bytes() == before, "an existing result must not be overwritten"
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["segment", "missing.nii.gz", "-o", "x.nii.gz"], "input not found"),
    (["segment", "in.nii.gz", "-o", "x.png"], "use one of"),
    (["segment", "in.nii.gz", "-o", "."], "it is a folder; name a file in it"),
    (["info", "missing.pt"], "model file not found"),
    (["info", "no-such-model"], "neither a model file nor a registered model"),
])
def test_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "BoneSegmentationLib", *args], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_corrupt_model_refused(real_data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    result = run_cli("segment", str(real_data / "ts_abdomen_ct.nii.gz"), "-o", str(tmp_path / "o.nii.gz"),
                     "--model", str(bad))
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_cuda_request_without_gpu_is_explained(real_data, random_model_file, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_cli("segment", str(real_data / "ts_abdomen_ct.nii.gz"), "-o", str(tmp_path / "o.nii.gz"),
                     "--model", str(random_model_file), "--device", "cuda")
    assert result.returncode == 2 and "CUDA was requested but no CUDA GPU" in result.stderr


def test_info_prints_metadata_table(random_model_file, capsys):
    assert main(["info", str(random_model_file), "--check"]) == 0
    out = capsys.readouterr().out
    assert "random-test" in out and "126 (incl. background)" in out and "2 x 2 x 2" in out


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    assert "cache:" in capsys.readouterr().out


def test_models_trained_on_synthetic_data_say_so(tmp_path, capsys):
    """segment and the panel's model text carry one line for synthetic-only models, none otherwise."""
    import numpy as np
    import torch

    from BoneSegmentationLib.model.metadata import SYNTHETIC_NOTICE
    from BoneSegmentationLib.model.modelfile import make_metadata, save_model
    from BoneSegmentationLib.model.network import NoNewNet
    from BoneSegmentationLib.slicer.environment import model_description

    ct = sitk.GetImageFromArray((np.random.default_rng(0).normal(0, 300, (24, 24, 24))).astype(np.int16))
    ct.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    for synthetic in (True, False):
        torch.manual_seed(0)
        meta = make_metadata(name="synthetic-test", version="1", description="d",
                             network={"architecture": "NoNewNet", "base_features": 4, "levels": 3, "size_divisor": 4},
                             training={"trained_on_synthetic_data_only": synthetic}, patch_size=32, spacing_mm=4.0)
        model = save_model(NoNewNet(126, base_features=4, levels=3), meta, tmp_path / f"m{synthetic}.pt")
        out = tmp_path / f"labels{synthetic}.nii.gz"
        assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--model", str(model), "-q"]) == 0
        err = capsys.readouterr().err
        assert (SYNTHETIC_NOTICE in err) is synthetic
        assert ("trained on synthetic images only" in model_description(str(model))) is synthetic


def test_info_says_whether_the_file_is_registered_and_that_the_check_passed(random_model_file, capsys):
    assert main(["info"]) == 0
    assert "verified: SHA-256 matches bones-phantom-demo" in capsys.readouterr().out
    assert main(["info", str(random_model_file), "--check"]) == 0
    out = capsys.readouterr().out
    assert "unverified" in out and "passed: archive intact, only network operations, 126 output channels" in out


def test_confidence_overlays_the_ct_by_default(real_data, random_model_file_4mm, tmp_path):
    ct_path = real_data / "ts_abdomen_ct.nii.gz"
    conf = tmp_path / "conf.nii.gz"
    assert main(["segment", str(ct_path), "-o", str(tmp_path / "l.nii.gz"), "--model", str(random_model_file_4mm),
                 "--overlap", "0", "--confidence", str(conf), "-q"]) == 0
    ct, c = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(conf))
    assert c.GetSize() == ct.GetSize() and c.GetDirection() == ct.GetDirection()
    assert c.GetOrigin() == pytest.approx(ct.GetOrigin()) and c.GetSpacing() == pytest.approx(ct.GetSpacing())
    values = sitk.GetArrayViewFromImage(c)
    assert 0.0 <= float(values.min()) and float(values.max()) <= 1.0 + 1e-6 and float(values.max()) > 0


def test_every_option_of_every_command_has_help_text():
    import argparse

    from BoneSegmentationLib.cli import build_parser

    missing = []

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, prefix + [name])
            elif not action.help:
                missing.append(f"{' '.join(prefix)} {action.option_strings or action.dest}")

    walk(build_parser(), [])
    assert not missing, missing


@pytest.mark.parametrize("array, message", [
    (lambda a: a.astype("float32") + 0.5, "the prediction's voxels are float32, not integers"),
    (lambda a: a.astype("int16") + 200, r"the prediction's label values \[200, 201\] are outside the bone table"),
])
def test_evaluate_refuses_what_is_not_a_bone_label_map(tmp_path, capsys, array, message):
    """A float map or values beyond the table were scored as missing bones; now one line says why."""
    import numpy as np
    import re

    ref = np.zeros((10, 12, 14), np.uint8)
    ref[2:6, 3:8, 4:9] = 1
    sitk.WriteImage(sitk.GetImageFromArray(ref), str(tmp_path / "ref.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(array(ref)), str(tmp_path / "pred.nii.gz"))
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz")]) != 0
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "ref.nii.gz"), str(tmp_path / "ref.nii.gz")]) == 0
    assert "Foreground Dice (all bone vs background): 1.000" in capsys.readouterr().out


def test_meshes_into_an_existing_file_that_is_no_mesh_is_refused(tmp_path, capsys):
    """``-o labels.nii.gz`` (the input itself) was taken for a folder and failed with a bare errno."""
    import numpy as np

    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:6, 3:8, 4:9] = 30
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path))
    before = path.read_bytes()
    assert main(["meshes", str(path), "-o", str(path), "--overwrite"]) != 0
    assert "is an existing file and not a mesh file name" in capsys.readouterr().err
    assert path.read_bytes() == before
