"""`dataset export-nnunet`: an nnU-Net v2 raw dataset that nnU-Net's own integrity check accepts, in
which the unchecked voxels of a partially labelled case carry the declared ignore label exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.errors import DatasetError
from BoneSegmentationLib.export.nnunet import export_nnunet
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.training.corrections import add_case
from BoneSegmentationLib.training.dataset import image_path, label_path

T = default_table()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two cases: one fully labelled, one where the anatomist checked only the spine."""
    folder = tmp_path_factory.mktemp("ours") / "ds"
    ct, labels = make_phantom(5, spacing=6.0, partial=False)[:2]
    add_case(folder, ct, labels, source_name="full.nii.gz", case_id="full_000")
    add_case(folder, ct, labels, source_name="spine.nii.gz", case_id="spine_000", labelled="spine")
    return folder


def test_partial_case_gets_the_ignore_label_exactly_at_unchecked_voxels(dataset, tmp_path):
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    result = export_nnunet(dataset, tmp_path / "raw", 77)
    assert result.folder == tmp_path / "raw" / "Dataset077_BoneSegmentation"
    assert result.partial_cases == ["spine_000"] and result.ignore_label == T.num_classes == 126
    meta = json.loads((result.folder / "dataset.json").read_text())
    assert meta["labels"]["ignore"] == 126 and meta["labels"]["background"] == 0 and meta["numTraining"] == 2

    source = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path(dataset, "spine_000"))))
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(result.folder / "labelsTr" / "spine_000.nii.gz")))
    spine = np.isin(source, [b.index for b in T.foreground() if b.eval_group == "spine"])
    unchecked = (source > 0) & ~spine
    assert unchecked.sum() == result.ignored_voxels > 1000
    assert (exported[unchecked] == 126).all() and (exported[~unchecked] == source[~unchecked]).all()
    full = sitk.ReadImage(str(result.folder / "labelsTr" / "full_000.nii.gz"))
    assert (sitk.GetArrayFromImage(full) < 126).all()
    assert (result.folder / "imagesTr" / "spine_000_0000.nii.gz").read_bytes() == \
        image_path(dataset, "spine_000").read_bytes()
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before  # source untouched


def test_nnunet_verify_dataset_integrity_passes(dataset, tmp_path):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    result = export_nnunet(dataset, tmp_path, 78)
    verify.verify_dataset_integrity(str(result.folder), num_processes=1)  # raises on any problem


def test_refusals_write_nothing(dataset, tmp_path, capsys):
    export_nnunet(dataset, tmp_path, 79)
    with pytest.raises(DatasetError, match="already has Dataset079_BoneSegmentation"):
        export_nnunet(dataset, tmp_path, 79, name="Other")
    with pytest.raises(DatasetError, match="1 to 999"):
        export_nnunet(dataset, tmp_path, 1000)
    with pytest.raises(DatasetError, match="dataset name"):
        export_nnunet(dataset, tmp_path, 80, name="../x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset079_BoneSegmentation"]  # no staging left

    copy = tmp_path / "copy"  # a copy of the dataset whose label file is then edited by hand
    shutil.copytree(dataset, copy)
    lab = sitk.ReadImage(str(label_path(copy, "spine_000")))
    sitk.WriteImage(sitk.Cast(lab * 0, sitk.sitkUInt8), str(label_path(copy, "spine_000")))
    assert main(["dataset", "export-nnunet", str(copy), str(tmp_path / "raw2"), "--id", "82"]) == 2
    assert "spine_000: its label file changed since it was added" in capsys.readouterr().err
    assert not (tmp_path / "raw2").exists()


def test_cli_export(dataset, tmp_path, capsys):
    assert main(["dataset", "export-nnunet", str(dataset), str(tmp_path), "--id", "9", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Dataset009_BoneSegmentation: 2 cases; 1 partially labelled" in out and "ignore label 126" in out
    assert "nnUNetv2_plan_and_preprocess -d 9" in out
