"""Corrected label maps become dataset cases: manifest and edits, refusals that write nothing,
case IDs that never collide, atomic commits that survive a kill, the dataset view, and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.cli import main
from BoneSegmentationLib.training.corrections import GeometryMismatchError, add_case, changes_per_bone, labelled_mask
from BoneSegmentationLib.training.dataset import (case_ids, file_sha256, image_path, label_path, read_manifest,
                                         summarise_dataset)
from BoneSegmentationLib.core.errors import DatasetError
from BoneSegmentationLib.synthetic.phantom import make_phantom

T = default_table()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(5, spacing=4.0, partial=False)


def _edit(labels: sitk.Image):
    """(prediction, correction): the correction shrinks the left femur and deletes the right hamate
    of ``labels``; the prediction is the correction without the coccyx (which the anatomist added)."""
    a = sitk.GetArrayFromImage(labels)
    femur, hamate, coccyx = (T.by_name(n).index for n in ("femur_left", "hamate_right", "coccyx"))
    zs = np.nonzero((a == femur).any(axis=(1, 2)))[0]
    a[(a == femur) & (np.arange(a.shape[0])[:, None, None] < zs.min() + 3)] = 0
    a[a == hamate] = 0
    prior = a.copy()
    prior[a == coccyx] = 0  # the model missed the coccyx; the anatomist adds it
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(labels)
    before = sitk.GetImageFromArray(prior)
    before.CopyInformation(labels)
    return before, out


def test_manifest_lists_exactly_the_edited_bones(phantom, tmp_path):
    ct, reference, _ = phantom
    _, corrected = _edit(reference)
    # against a prediction equal to the reference without the coccyx, the correction shrinks the
    # femur, deletes the hamate and adds the coccyx:
    prior_arr = sitk.GetArrayFromImage(reference)
    prior_arr[prior_arr == T.by_name("coccyx").index] = 0
    prior = sitk.GetImageFromArray(prior_arr)
    prior.CopyInformation(reference)
    m = add_case(tmp_path / "ds", ct, corrected, source_name="patient 7.nii.gz", prior=prior,
                 prior_model="bones-phantom-demo 0.2")
    assert m["case_id"] == "patient_7_000"
    assert sorted(m["edits"]["edited"]) == ["coccyx", "femur_left", "hamate_right"]
    assert m["edits"]["added"] == ["coccyx"] and m["edits"]["removed"] == ["hamate_right"]
    a, p = sitk.GetArrayFromImage(corrected), prior_arr
    for name in ("coccyx", "femur_left", "hamate_right"):
        c = T.by_name(name).index
        assert m["edits"]["voxels_changed"][name] == int(((a == c) != (p == c)).sum())
    assert "vertebra_T5" in m["edits"]["unchanged"]
    assert m["prior_model"] == "bones-phantom-demo 0.2" and m["labelled_classes"] == "all"
    assert m["source"]["name"] == "patient 7.nii.gz" and len(m["source"]["sha256"]) == 64
    folder = tmp_path / "ds"
    stored = sitk.ReadImage(str(label_path(folder, m["case_id"])))
    assert np.array_equal(sitk.GetArrayFromImage(stored), a)
    assert stored.GetOrigin() == pytest.approx(ct.GetOrigin()) and stored.GetSpacing() == pytest.approx(ct.GetSpacing())
    assert read_manifest(folder, m["case_id"])["labels_sha256"] == file_sha256(label_path(folder, m["case_id"]))
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 1


def test_changes_count_a_moved_voxel_for_both_bones():
    prior = np.array([[[1, 1, 2, 0]]], np.uint8)
    now = np.array([[[1, 2, 2, 3]]], np.uint8)
    assert changes_per_bone(prior, now) == {1: 1, 2: 1, 3: 1}


def _on(grid: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def test_refusals_write_nothing(phantom, tmp_path):
    ct, reference, _ = phantom
    folder = tmp_path / "ds"
    shifted = sitk.Image(reference)
    shifted.SetOrigin(tuple(o + 1.3 for o in reference.GetOrigin()))
    with pytest.raises(GeometryMismatchError, match="not on the CT's grid.*Resample it onto the CT"):
        add_case(folder, ct, shifted, source_name="ct")
    bad = sitk.GetArrayFromImage(reference)
    bad[0, 0, 0] = 200
    bad_img = sitk.GetImageFromArray(bad)
    bad_img.CopyInformation(reference)
    with pytest.raises(DatasetError, match=r"label values \[200\] are outside the bone table"):
        add_case(folder, ct, bad_img, source_name="ct")
    bad = bad.astype(np.int16)
    bad[0, 0, 0] = -3
    with pytest.raises(DatasetError, match=r"negative values \(lowest -3\): a bone label map holds .* 0\.\.125"):
        add_case(folder, ct, _on(reference, bad), source_name="ct")
    with pytest.raises(DatasetError, match="voxels are float32, not integers.*integer label map"):
        add_case(folder, ct, _on(reference, (bad > 0).astype(np.float32)), source_name="ct")
    with pytest.raises(DatasetError, match="'spleen' is neither a bone nor a group"):
        add_case(folder, ct, reference, source_name="ct", labelled="spleen")
    assert not folder.exists()


def test_ids_never_collide_and_cases_are_not_overwritten_without_asking(phantom, tmp_path):
    ct, reference, _ = phantom
    folder = tmp_path / "ds"
    ids = [add_case(folder, ct, reference, source_name="scan.nrrd")["case_id"] for _ in range(3)]
    assert ids == ["scan_000", "scan_001", "scan_002"] and case_ids(folder) == ids
    before = file_sha256(label_path(folder, "scan_001"))
    with pytest.raises(DatasetError, match="already exists.*--overwrite"):
        add_case(folder, ct, reference, source_name="scan.nrrd", case_id="scan_001")
    assert file_sha256(label_path(folder, "scan_001")) == before
    spine_only = add_case(folder, ct, reference, source_name="scan.nrrd", case_id="scan_001", overwrite=True,
                          labelled="spine")
    assert len(spine_only["labelled_classes"]) == 26
    mask = labelled_mask(read_manifest(folder, "scan_001"))
    assert mask[0] and mask[T.by_name("vertebra_L3").index] and not mask[T.by_name("femur_left").index]


WRITER = textwrap.dedent("""
    import sys, SimpleITK as sitk
    from BoneSegmentationLib.training.corrections import add_case
    ct, labels = sitk.ReadImage(sys.argv[2]), sitk.ReadImage(sys.argv[3])
    print("ready", flush=True)
    add_case(sys.argv[1], ct, labels, source_name="big.nii", case_id="big_000", overwrite=True)
    print("done", flush=True)
""")


def test_kill_during_export_leaves_the_old_case_or_the_new_one(tmp_path):
    ct, labels, _ = make_phantom(6, spacing=2.0, partial=False)  # big enough that writing takes a while
    sitk.WriteImage(ct, str(tmp_path / "ct.nii"))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii"))
    folder = tmp_path / "ds"
    old = add_case(folder, ct[:, :, :40], labels[:, :, :40], source_name="big.nii", case_id="big_000")
    outcomes = set()
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2, 1.6, 2.2, 3.0, 8.0):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(tmp_path / "ct.nii"),
                                 str(tmp_path / "labels.nii")], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert case_ids(folder) == ["big_000"]  # never a half case, whatever the moment
        summary = summarise_dataset(folder, min_cases=0)  # runs recovery, checks checksums
        assert not summary["warnings"], summary["warnings"]
        m = read_manifest(folder, "big_000")
        assert m["labels_sha256"] == file_sha256(label_path(folder, "big_000"))
        assert m["image_sha256"] == file_sha256(image_path(folder, "big_000"))
        outcomes.add("new" if m["labels_sha256"] != old["labels_sha256"] else "old")
        assert not any((folder / ".pending").iterdir())  # recovery left nothing behind
    assert "old" in outcomes and "new" in outcomes  # the kills hit before and after the commit point


def test_dataset_info_and_add_through_the_cli(phantom, tmp_path, capsys):
    ct, reference, _ = phantom
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(reference, str(tmp_path / "labels.nii.gz"))
    prior, corrected = _edit(reference)
    sitk.WriteImage(prior, str(tmp_path / "prior.nii.gz"))
    sitk.WriteImage(corrected, str(tmp_path / "corrected.nii.gz"))
    folder = tmp_path / "ds"
    assert main(["dataset", "add", str(folder), "--image", str(tmp_path / "ct.nii.gz"),
                 "--labels", str(tmp_path / "labels.nii.gz")]) == 0
    assert main(["dataset", "add", str(folder), "--image", str(tmp_path / "ct.nii.gz"),
                 "--labels", str(tmp_path / "corrected.nii.gz"), "--prior", str(tmp_path / "prior.nii.gz"),
                 "--labelled", "edited"]) == 0
    out = capsys.readouterr().out
    assert "added case ct_000" in out and "added case ct_001" in out and "edited versus the prediction" in out
    assert main(["dataset", "info", str(folder), "--min-cases", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 cases" in out and "ct_001" in out and "(partial)" in out
    assert "warning:" in out and "fewer than 2 labelled cases" in out
    summary = summarise_dataset(folder, min_cases=2)
    # the second case is labelled "edited": only the coccyx changed against its prediction
    assert summary["cases"][1]["labelled"] == ["coccyx"] and summary["cases"][1]["edited"] == ["coccyx"]
    assert summary["bones"]["coccyx"]["cases"] == 2 and summary["bones"]["vertebra_T5"]["cases"] == 1
    counts = np.bincount(sitk.GetArrayFromImage(reference).ravel(), minlength=126)
    assert summary["bones"]["vertebra_T5"]["voxels"] == counts[T.by_name("vertebra_T5").index]
    assert main(["dataset", "add", str(folder), "--image", str(tmp_path / "ct.nii.gz"),
                 "--labels", str(tmp_path / "labels.nii.gz"), "--case-id", "ct_000"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_compare_scores_models_side_by_side_on_held_out_cases(phantom, tmp_path, capsys):
    from conftest import make_random_model

    ct, reference, _ = phantom
    folder = tmp_path / "ds"
    add_case(folder, ct, reference, source_name="full")
    add_case(folder, ct, reference, source_name="spine", labelled="spine")
    old = make_random_model(tmp_path / "old.pt", patch=32, spacing=6.0, seed=1)
    new = make_random_model(tmp_path / "new.pt", patch=32, spacing=6.0, seed=2)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["full_000"], "val": [], "test": ["full_000", "spine_000"]}))
    assert main(["compare", str(folder), "--models", str(old), str(new), "--split", str(split),
                 "--device", "cpu", "-o", str(tmp_path / "compare.md")]) == 0
    out = capsys.readouterr().out
    table = (tmp_path / "compare.md").read_text()
    assert table in out
    assert "random-test 0: median" in table and "random-test 0 (2): median" in table  # both columns
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"spine", "ribs", "hands", "large_bones", "all"}
    # the spine-only case adds spine samples only: 26 + 26 spine, the other groups from one case
    spine_present = int(rows["spine"].split("|")[3].split("/")[1])
    ribs_present = int(rows["ribs"].split("|")[3].split("/")[1])
    assert (spine_present, ribs_present) == (52, 24)
    with pytest.raises(DatasetError, match="cases not in"):
        from BoneSegmentationLib.evaluation.compare import held_out_cases
        held_out_cases(folder, cases=["nope"])
