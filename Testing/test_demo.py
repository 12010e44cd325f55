"""The main job end to end at a reduced size (4 mm phantom, small random-weight model)."""

import csv
import json

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.cli import main

from conftest import make_random_model


def test_demo_end_to_end_reduced(tmp_path, capsys):
    model = make_random_model(tmp_path / "m.pt", patch=48, spacing=4.0)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--model", str(model), "--spacing", "4", "--device", "cpu", "-q",
                 "--mirror"]) == 0
    stdout = capsys.readouterr().out
    assert "| spine |" in stdout and "bones found" in stdout
    ct = sitk.ReadImage(str(out / "phantom_ct.nii.gz"))
    labels = sitk.ReadImage(str(out / "bones.nii.gz"))
    assert labels.GetSize() == ct.GetSize() and labels.GetOrigin() == ct.GetOrigin()
    assert sitk.ReadImage(str(out / "confidence.nii.gz")).GetSpacing() == (4.0, 4.0, 4.0)
    with open(out / "evaluation.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["group", "median", "p16"] and {r[0] for r in rows[1:6]} == {
        "spine", "ribs", "hands", "large_bones", "all"}
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    review = json.loads((out / "review.json").read_text())
    assert {b["name"] for b in review["bones"]} == {b.name for b in default_table().foreground()}
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "phantom_reference_labels.nii.gz")))
    assert len(np.unique(ref)) == 126
    assert "Foreground Dice" in (out / "evaluation.md").read_text()
    assert "mirror averaging on, stitch 1" in (out / "evaluation.md").read_text()


def test_evaluate_cli_on_identical_maps(tmp_path, capsys):
    assert main(["phantom", "-o", str(tmp_path), "--seed", "5", "--spacing", "4"]) == 0
    lab = tmp_path / "phantom_0005_labels.nii.gz"
    assert main(["evaluate", str(lab), str(lab), "--csv", str(tmp_path / "e.csv"), "--plot", str(tmp_path / "e.png")]) == 0
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "| all | 1.000 | 1.000 | 1.000 | 125/125 |" in out
    assert "Foreground Dice (all bone vs background): 1.000" in out
