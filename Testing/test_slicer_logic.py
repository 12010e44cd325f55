"""The module's Logic against the real Slicer core (``slicer-core`` from PyPI): volume node ->
segmentation node with the bone table's IDs, names, colours and terminology; back to a label map;
.seg.nrrd round trip; edits; the background process with cancel."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from BoneSegmentationLib.core.bones import default_table  # noqa: E402
from BoneSegmentationLib.core.imageio import read_image  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402
from BoneSegmentationLib.inference.segmenter import segment_image  # noqa: E402
from BoneSegmentationLib.slicer.logic import SlicerSegmentationLogic, volume_from_file  # noqa: E402
from BoneSegmentationLib.slicer.nodes import (SegmentMappingError, add_closed_surfaces,  # noqa: E402
                                              ijk_to_ras, image_to_volume_node, labels_to_segmentation_node,
                                              register_surface_rules, segmentation_node_to_labels,
                                              volume_node_to_image)
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402
import vtk  # noqa: E402
from BoneSegmentationLib.training.corrections import GeometryMismatchError  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions
from conftest import make_random_model  # noqa: E402

T = default_table()


@pytest.fixture()
def scene():
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(2, spacing=4.0, partial=False)


@pytest.fixture(scope="module")
def coarse_model(tmp_path_factory):
    """A random-weight model at 6 mm: fast enough to run three times in a test."""
    return make_random_model(tmp_path_factory.mktemp("coarse") / "coarse.pt", patch=32, spacing=6.0)


def _segments(node) -> dict[str, object]:
    seg = node.GetSegmentation()
    return {seg.GetNthSegmentID(k): seg.GetNthSegment(k) for k in range(seg.GetNumberOfSegments())}


def _terminology(segment) -> str:
    import vtk
    ref = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), ref)
    return str(ref)


def test_real_scan_through_logic_segment(scene, real_data, coarse_model):
    path = real_data / "ts_abdomen_ct.nii.gz"
    volume = volume_from_file(str(path), scene)
    image = read_image(path)
    back = volume_node_to_image(volume)
    assert back.GetOrigin() == pytest.approx(image.GetOrigin()) and back.GetSpacing() == pytest.approx(image.GetSpacing())
    assert back.GetDirection() == pytest.approx(image.GetDirection())

    logic = SlicerSegmentationLogic(scene)
    outcome = logic.segment(volume, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0))
    node = outcome.segmentation_node
    reference = segment_image(image, load_model(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0)).labels
    expected = sitk.GetArrayFromImage(reference)
    present = [int(v) for v in np.unique(expected) if v]
    segments = _segments(node)
    assert list(segments) == [T[v].name for v in present], "segment IDs are the machine names, in table order"
    for value in present:
        bone, segment = T[value], segments[T[value].name]
        assert segment.GetName() == bone.display_name
        assert segment.GetColor() == pytest.approx(tuple(c / 255 for c in bone.rgb))
        assert _terminology(segment) == bone.terminology_entry()
    labels = logic.labels_from_segmentation(node, volume)
    assert np.array_equal(sitk.GetArrayViewFromImage(labels), expected)
    assert labels.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert labels.GetDirection() == pytest.approx(reference.GetDirection())
    assert not logic.is_edited(node, volume)


def test_seg_nrrd_round_trip(scene, phantom, tmp_path):
    ct, labels, _ = phantom
    volume = image_to_volume_node(ct, scene, "ct")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node, reference_volume_node=volume)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "bones.seg.nrrd"))
    assert storage.WriteData(node)

    other = slicer.vtkMRMLScene()
    reader = other.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "bones.seg.nrrd"))
    loaded = other.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert reader.ReadData(loaded)
    back = segmentation_node_to_labels(loaded, ct)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(labels))
    names = {k: s.GetName() for k, s in _segments(loaded).items()}
    assert names == {b.name: b.display_name for b in T.foreground()}
    assert all(_terminology(s) == T.by_name(k).terminology_entry() for k, s in _segments(loaded).items())


def _mask_image(mask: np.ndarray, like: sitk.Image):
    from BoneSegmentationLib.slicer.nodes import ijk_to_ras, oriented_image
    return oriented_image(mask.astype(np.uint8), ijk_to_ras(like))


def test_edits_change_the_label_map_as_expected(scene, phantom):
    ct, labels, _ = phantom
    volume = image_to_volume_node(ct, scene, "ct")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node, reference_volume_node=volume)
    logic = SlicerSegmentationLogic(scene)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
    a = sitk.GetArrayFromImage(labels)
    expected = a.copy()

    femur = T.by_name("femur_left").index  # 1) shrink the left femur: drop its lowest 5 slices
    zs = np.nonzero((a == femur).any(axis=(1, 2)))[0]
    keep = (a == femur) & (np.arange(a.shape[0])[:, None, None] > zs.min() + 4)
    expected[(a == femur) & ~keep] = 0
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(keep, labels), node, "femur_left",
                                                seg_logic.MODE_REPLACE)
    node.GetSegmentation().RemoveSegment("hamate_right")  # 2) delete a bone
    expected[a == T.by_name("hamate_right").index] = 0
    node.GetSegmentation().RemoveSegment("coccyx")  # 3) re-add a bone by hand, under its standard name
    new_id = node.GetSegmentation().AddEmptySegment("", "Coccyx")
    coccyx = a == T.by_name("coccyx").index
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(coccyx, labels), node, new_id, seg_logic.MODE_REPLACE)

    assert logic.is_edited(node, volume)
    edited = sitk.GetArrayFromImage(logic.labels_from_segmentation(node, volume))
    assert np.array_equal(edited, expected)


def test_3d_surfaces_come_from_one_pass_and_follow_edits(scene, phantom):
    """Surfaces added from the label map line up with the voxels (RAS), Slicer keeps them when
    asked for 3D, and an edited segment gets a fresh surface from Slicer's own rule."""
    _, labels, _ = phantom
    register_surface_rules()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ids = labels_to_segmentation_node(labels, node)
    assert add_closed_surfaces(node, labels) > 0
    seg = node.GetSegmentation()
    a = sitk.GetArrayFromImage(labels)
    for seg_id in ("femur_left", "vertebra_C5", "lunate_right"):
        surface = seg.GetSegment(seg_id).GetRepresentation("Closed surface")
        assert surface is not None and surface.GetNumberOfCells() > 0
        points = vtk_to_numpy(surface.GetPoints().GetData())
        voxels = np.argwhere(a == T.by_name(seg_id).index)[:, ::-1]  # (i, j, k)
        ras = (ijk_to_ras(labels) @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3]
        spacing = labels.GetSpacing()[0]  # the surface lies within one voxel of the voxel centres' box
        assert np.allclose(points.min(0), ras.min(0), atol=spacing), seg_id
        assert np.allclose(points.max(0), ras.max(0), atol=spacing), seg_id
    before = {i: seg.GetSegment(i).GetRepresentation("Closed surface") for i in ids}
    c5_points = vtk_to_numpy(before["vertebra_C5"].GetPoints().GetData()).copy()
    node.CreateClosedSurfaceRepresentation()  # what showing 3D does: nothing left to convert
    assert all(seg.GetSegment(i).GetRepresentation("Closed surface") is before[i] for i in ids)
    femur = a == T.by_name("femur_left").index
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
    upper = femur & (np.arange(a.shape[0])[:, None, None] > np.nonzero(femur.any(axis=(1, 2)))[0].mean())
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(upper, labels), node, "femur_left",
                                                seg_logic.MODE_REPLACE)
    node.CreateClosedSurfaceRepresentation()
    edited = vtk_to_numpy(seg.GetSegment("femur_left").GetRepresentation("Closed surface").GetPoints().GetData())
    upper_ras = (ijk_to_ras(labels) @ np.c_[np.argwhere(upper)[:, ::-1], np.ones(upper.sum())].T).T[:, :3]
    assert abs(edited[:, 2].min() - upper_ras[:, 2].min()) < 2 * labels.GetSpacing()[2]  # the new cut
    c5_after = vtk_to_numpy(seg.GetSegment("vertebra_C5").GetRepresentation("Closed surface").GetPoints().GetData())
    assert np.array_equal(c5_after, c5_points)


def test_unknown_and_overlapping_segments_are_refused(scene, phantom):
    ct, labels, _ = phantom
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
    a = sitk.GetArrayFromImage(labels)
    extra = node.GetSegmentation().AddEmptySegment("", "Tumour")
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(a == 1, labels), node, extra, seg_logic.MODE_REPLACE)
    with pytest.raises(SegmentMappingError, match="matching no bone of the table: Tumour"):
        segmentation_node_to_labels(node, ct)
    node.GetSegmentation().RemoveSegment(extra)
    dup = node.GetSegmentation().AddEmptySegment("", "Mandible copy")  # own layer: may overlap the mandible
    segment = node.GetSegmentation().GetSegment(dup)
    segment.SetName("mandible")
    mandible = a == T.by_name("mandible").index
    layer = _mask_image(mandible, labels)
    segment.AddRepresentation("Binary labelmap", layer)  # a separate layer, as "allow overlap" editing makes
    segment.SetLabelValue(1)
    with pytest.raises(SegmentMappingError, match="several segments for one bone"):
        segmentation_node_to_labels(node, ct)
    node.GetSegmentation().RemoveSegment("hyoid")
    segment.SetName("Hyoid bone")  # a bone of the table, but painted over the mandible
    with pytest.raises(SegmentMappingError, match="overlapping segments.*Hyoid bone"):
        segmentation_node_to_labels(node, ct)


def test_background_process_matches_and_cancels(scene, phantom, coarse_model):
    ct, _, _ = phantom
    volume = image_to_volume_node(ct, scene, "ct")
    logic = SlicerSegmentationLogic(scene)
    # stitch and mirror change the labels of this random-weight model, so equality shows both reach the child
    job = logic.start_background(volume, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0, stitch=2, mirror="on"))
    seen = []
    while job.poll():
        seen.append(job.fraction)
        time.sleep(0.05)
    assert job.returncode == 0, job.error
    outcome = logic.finish_background(job)
    direct = logic.segment(volume, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0, stitch=2, mirror="on"))
    assert np.array_equal(sitk.GetArrayViewFromImage(outcome.labels), sitk.GetArrayViewFromImage(direct.labels))
    assert seen and max(seen) > 0.5
    assert list(_segments(outcome.segmentation_node)) == list(_segments(direct.segmentation_node))
    assert not job.workdir.exists()

    job = logic.start_background(volume, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0))
    job.cancel()
    assert job.returncode != 0 and not job.workdir.exists()

    job = logic.start_background(volume, model="no-such-model", options=InferenceOptions(device="cpu"))
    job.wait()
    assert job.returncode == 2 and "no-such-model" in job.error


def test_logic_imports_without_qt_or_app():
    code = ("import sys, BoneSegmentationLib.slicer.logic, BoneSegmentationLib.slicer.nodes, slicer; "
            "assert 'qt' not in sys.modules and not hasattr(slicer, 'app'), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_corrected_segmentation_becomes_a_case_and_trains(scene, phantom, coarse_model, tmp_path):
    """Segment with a model, edit one bone, delete one, add one; export; fine-tune on two cases."""
    from BoneSegmentationLib.training.dataset import dataset_digest, label_path, read_manifest
    from BoneSegmentationLib.model.modelfile import read_metadata

    ct, _, _ = phantom
    volume = image_to_volume_node(ct, scene, "phantom 2")
    logic = SlicerSegmentationLogic(scene)
    node = logic.segment(volume, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0)).segmentation_node
    predicted = sitk.GetArrayFromImage(logic.labels_from_segmentation(node, volume))
    counts = np.bincount(predicted.ravel(), minlength=126)
    by_size = [int(c) for c in np.argsort(counts)[::-1] if c and counts[c]]
    changed, deleted = T[by_size[0]].name, T[by_size[1]].name
    added = next(b for b in T.foreground() if counts[b.index] == 0)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
    region = predicted == by_size[0]
    erased = region & (np.arange(region.shape[0])[:, None, None] < np.median(np.nonzero(region)[0]))
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(region & ~erased, ct), node, changed,
                                                seg_logic.MODE_REPLACE)
    node.GetSegmentation().RemoveSegment(deleted)
    new_id = node.GetSegmentation().AddEmptySegment("", added.display_name)  # painted by hand, standard name
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(erased, ct), node, new_id, seg_logic.MODE_REPLACE)

    dataset = tmp_path / "corrections"
    manifest = logic.add_training_case(str(dataset), volume, node)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path(dataset, manifest["case_id"]))))
    assert np.array_equal(stored, sitk.GetArrayFromImage(logic.labels_from_segmentation(node, volume)))
    edits = manifest["edits"]
    assert sorted(edits["edited"]) == sorted([changed, deleted, added.name])
    assert edits["added"] == [added.name] and edits["removed"] == [deleted]
    assert edits["voxels_changed"][changed] == int(erased.sum()) == edits["voxels_changed"][added.name]
    assert manifest["prior_model"] == "random-test 0" and manifest["source"]["name"] == "phantom 2"

    before = sorted(p.name for p in dataset.rglob("*"))  # refusals: each its own message, nothing written
    extra = node.GetSegmentation().AddEmptySegment("", "Tumour")
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(erased, ct), node, extra, seg_logic.MODE_REPLACE)
    with pytest.raises(SegmentMappingError, match="matching no bone of the table: Tumour"):
        logic.add_training_case(str(dataset), volume, node)
    node.GetSegmentation().RemoveSegment(extra)
    other = node.GetSegmentation().AddEmptySegment("", T[by_size[2]].display_name)
    node.GetSegmentation().GetSegment(other).AddRepresentation("Binary labelmap", _mask_image(erased, ct))
    node.GetSegmentation().GetSegment(other).SetLabelValue(1)  # own layer, painted over the added bone
    node.GetSegmentation().RemoveSegment(T[by_size[2]].name)
    with pytest.raises(SegmentMappingError, match="overlapping segments"):
        logic.add_training_case(str(dataset), volume, node)
    node.GetSegmentation().RemoveSegment(other)
    shifted = _mask_image(erased, ct)
    m = vtk.vtkMatrix4x4()
    shifted.GetImageToWorldMatrix(m)
    m.SetElement(0, 3, m.GetElement(0, 3) + 0.5 * ct.GetSpacing()[0])  # half a voxel off the CT's grid
    shifted.SetImageToWorldMatrix(m)
    odd = node.GetSegmentation().AddEmptySegment("", T[by_size[3]].display_name)
    node.GetSegmentation().RemoveSegment(T[by_size[3]].name)
    node.GetSegmentation().GetSegment(odd).AddRepresentation("Binary labelmap", shifted)
    node.GetSegmentation().GetSegment(odd).SetLabelValue(1)
    with pytest.raises(GeometryMismatchError, match="not on the CT's voxel grid"):
        logic.add_training_case(str(dataset), volume, node)
    assert sorted(p.name for p in dataset.rglob("*")) == before

    second = image_to_volume_node(make_phantom(3, spacing=4.0, partial=False)[0], scene, "phantom 3")
    logic.segment(second, model=str(coarse_model), options=InferenceOptions(device="cpu", overlap=0.0))
    node2 = scene.GetNodesByClass("vtkMRMLSegmentationNode").GetItemAsObject(
        scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") - 1)
    assert logic.add_training_case(str(dataset), second, node2, labelled="spine")["case_id"] == "phantom_3_000"
    assert len(read_manifest(dataset, "phantom_3_000")["labelled_classes"]) == 26

    job = logic.start_training(str(dataset), str(coarse_model), iterations=6, run_dir=str(tmp_path / "run"))
    assert job.wait(timeout=600) == 0, job.error
    assert "iteration 6/6" in job.message and "validation Dice" in job.message and "s/iteration" in job.message
    assert "registered" in logic.finish_training(job)
    new_model = next((tmp_path / "run").glob("*.pt"))
    meta = read_metadata(new_model)
    coarse_meta = read_metadata(coarse_model)
    assert meta["training"]["parent_model"].startswith(f"{coarse_meta['name']} {coarse_meta['version']} (sha256 ")
    assert meta["training"]["dataset_sha256"] == dataset_digest(dataset, meta["training"]["dataset_cases"])
    assert meta["training"]["iterations"] == 6 and meta["name"] == "random-test-finetuned"
    names = [label for label, _ in logic.model_choices()]
    assert any("random-test-finetuned" in n for n in names)
    result = segment_image(ct, load_model(new_model), options=InferenceOptions(device="cpu", overlap=0.0))
    assert result.labels.GetSize() == ct.GetSize() and result.labels.GetOrigin() == pytest.approx(ct.GetOrigin())


def test_stop_keeps_the_checkpoint_and_retrain_resumes(scene, coarse_model, tmp_path):
    from BoneSegmentationLib.cli import main

    dataset = tmp_path / "ds"
    assert main(["phantom", "-o", str(dataset), "--dataset", "--count", "2", "--spacing", "6", "--seed", "7"]) == 0
    logic = SlicerSegmentationLogic(scene)
    job = logic.start_training(str(dataset), str(coarse_model), iterations=400)  # as the panel does
    run = job.run_dir
    assert run.parent == dataset / "runs"
    deadline = time.monotonic() + 300
    while job.poll() and job.last_record.get("iteration", 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job.request_stop()
    assert job.wait(timeout=300) == 0, job.error
    stopped_at = job.last_record["iteration"]
    assert stopped_at < 400 and [p.name for p in run.glob("*.pt")] == ["checkpoint.pt"]  # no model yet
    assert "resume" in logic.finish_training(job)
    job = logic.start_training(str(dataset), str(coarse_model), iterations=stopped_at + 2)
    assert job.run_dir == run  # Retrain again: the stopped run is resumed
    records = []
    while job.poll():
        if job.last_record and (not records or records[-1] != job.last_record):
            records.append(job.last_record)
        time.sleep(0.05)
    assert job.returncode == 0, job.error
    assert job.last_record["iteration"] == stopped_at + 2
    assert all(r["iteration"] > stopped_at for r in records)  # continued, not restarted
    assert "registered" in logic.finish_training(job)


def test_slicer_terminology_resolves_every_bone_to_itself(scene, phantom):
    """Loaded into slicer-core's terminology logic, each of the 125 entries resolves to its own
    name and colour (the carpals, metacarpals and phalanges used to resolve to a neighbour's), and
    our segments' names and colours are marked as chosen, so Slicer does not regenerate them."""
    from BoneSegmentationLib.core.bones import TERMINOLOGY_CONTEXT
    from BoneSegmentationLib.slicer.nodes import load_bone_terminology

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert load_bone_terminology(logic) == TERMINOLOGY_CONTEXT
    assert load_bone_terminology(logic) == TERMINOLOGY_CONTEXT  # a second call keeps the loaded one
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    assert [names.GetValue(i) for i in range(names.GetNumberOfValues())].count(TERMINOLOGY_CONTEXT) == 1
    wrong = {}
    for bone in T.foreground():
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(bone.terminology_entry(), entry)
        assert logic.UpdateEntryFromLoadedTerminologies(entry, [TERMINOLOGY_CONTEXT], [])
        modifier = entry.GetTypeModifierObject()
        found = modifier if modifier is not None and modifier.GetCodeValue() else entry.GetTypeObject()
        rgb = tuple(int(v) for v in found.GetRecommendedDisplayRGBValue())
        if (found.GetSlicerLabel(), rgb) != (bone.display_name, bone.rgb):
            wrong[bone.name] = (found.GetSlicerLabel(), rgb)
    assert not wrong, f"{len(wrong)} entries resolve to another bone: {dict(list(wrong.items())[:5])}"

    ct, labels, _ = phantom
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node)
    assert not any(s.GetNameAutoGenerated() or s.GetColorAutoGenerated() for s in _segments(node).values())


def test_segment_writes_a_slicer_segmentation_that_slicerio_and_slicer_read(scene, tmp_path, capsys, coarse_model):
    """`segment -o bones.seg.nrrd` writes a real segmentation: slicerio and Slicer's storage node
    read back the same IDs, names, colours, terminology and labels as the label map."""
    slicerio = pytest.importorskip("slicerio")
    from BoneSegmentationLib.cli import main

    ct, _, _ = make_phantom(2, spacing=6.0, partial=False)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    common = ["--model", str(coarse_model), "--device", "cpu", "--no-mirror", "-q"]
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "bones.seg.nrrd"), *common]) == 0
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "plain.nii.gz"), *common]) == 0
    labels = sitk.ReadImage(str(tmp_path / "plain.nii.gz"))
    expected = sitk.GetArrayFromImage(labels)
    present = [int(v) for v in np.unique(expected) if v]
    assert len(present) > 10

    seg = slicerio.read_segmentation(str(tmp_path / "bones.seg.nrrd"))
    assert [s["id"] for s in seg["segments"]] == [T[v].name for v in present]
    for s in seg["segments"]:
        bone = T.by_name(s["id"])
        assert s["name"] == bone.display_name and s["labelValue"] == bone.index and s["layer"] == 0
        assert s["color"] == pytest.approx([c / 255 for c in bone.rgb], abs=1e-5)
        assert not s["nameAutoGenerated"] and not s["colorAutoGenerated"]
        assert s["terminology"]["type"] == ["SCT", bone.sct_code, bone.sct_meaning]
    assert np.array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), expected)  # slicerio is i, j, k

    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "bones.seg.nrrd"))
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert reader.ReadData(node)
    segments = _segments(node)
    assert list(segments) == [T[v].name for v in present]
    assert all(s.GetName() == T.by_name(k).display_name and _terminology(s) == T.by_name(k).terminology_entry()
               for k, s in segments.items())
    back = segmentation_node_to_labels(node, labels)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), expected)

    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "b2.nii.gz"), *common,
                 "--confidence", str(tmp_path / "conf.seg.nrrd")]) == 2
    assert "a .seg.nrrd holds a label map, not float32 values" in capsys.readouterr().err


def test_a_seg_nrrd_saved_from_slicer_after_edits_is_read_by_segment_name(scene, phantom, tmp_path, capfd):
    """Slicer gives a segment added by hand the lowest free label value, another bone's index, and
    puts a segment painted with overlap allowed on a layer of its own: `dataset add`, `evaluate` and
    `meshes` read a .seg.nrrd by its segments' names, as the panel reads the node."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.core.imageio import read_label_map
    from BoneSegmentationLib.training.dataset import label_path

    ct, labels, _ = phantom
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    volume = image_to_volume_node(ct, scene, "ct")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node, reference_volume_node=volume)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
    a = sitk.GetArrayFromImage(labels)
    hyoid, coccyx = T.by_name("hyoid").index, T.by_name("coccyx").index
    node.GetSegmentation().RemoveSegment("hyoid")
    node.GetSegmentation().RemoveSegment("coccyx")
    by_hand = node.GetSegmentation().AddEmptySegment("", "Coccyx")  # re-drawn by hand: a free value
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(a == coccyx, labels), node, by_hand, seg_logic.MODE_REPLACE)
    own_layer = node.GetSegmentation().AddEmptySegment("", "Hyoid bone")
    node.GetSegmentation().GetSegment(own_layer).AddRepresentation("Binary labelmap", _mask_image(a == hyoid, labels))
    node.GetSegmentation().GetSegment(own_layer).SetLabelValue(1)
    expected = sitk.GetArrayFromImage(segmentation_node_to_labels(node, ct))
    assert np.array_equal(expected, a)  # the edits above changed how the bones are stored, not which they are

    def save(name: str) -> Path:
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(tmp_path / name))
        assert storage.WriteData(node)
        return tmp_path / name

    edited = save("edited.seg.nrrd")
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(edited)))
    assert stored.ndim == 3  # Slicer merges layers that do not overlap when it saves
    assert not np.any(stored[a == coccyx] == coccyx)  # Slicer's values are not the bones' indices
    assert np.array_equal(sitk.GetArrayViewFromImage(read_label_map(edited)), expected)

    assert main(["dataset", "add", str(tmp_path / "ds"), "--image", str(tmp_path / "ct.nii.gz"),
                 "--labels", str(edited), "--case-id", "edited"]) == 0
    added = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path(tmp_path / "ds", "edited"))))
    assert np.array_equal(added, expected)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    capfd.readouterr()
    assert main(["evaluate", str(edited), str(tmp_path / "labels.nii.gz")]) == 0
    assert "Foreground Dice (all bone vs background): 1.000" in capfd.readouterr().out

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")  # a tumour drawn beside the bones
    labels_to_segmentation_node(labels, node, reference_volume_node=volume)
    tumour = node.GetSegmentation().AddEmptySegment("", "Tumour")
    assert seg_logic.SetBinaryLabelmapToSegment(_mask_image(a == 0, labels), node, tumour, seg_logic.MODE_REPLACE)
    with_tumour = save("tumour.seg.nrrd")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")  # the hyoid painted over the mandible
    labels_to_segmentation_node(labels, node, reference_volume_node=volume)
    node.GetSegmentation().RemoveSegment("hyoid")
    over = node.GetSegmentation().AddEmptySegment("", "Hyoid bone")
    node.GetSegmentation().GetSegment(over).AddRepresentation(
        "Binary labelmap", _mask_image((a == hyoid) | (a == T.by_name("mandible").index), labels))
    node.GetSegmentation().GetSegment(over).SetLabelValue(1)
    overlapping = save("overlap.seg.nrrd")
    assert sitk.ReadImage(str(overlapping)).GetNumberOfComponentsPerPixel() == 2  # two layers kept
    for path, message in ((with_tumour, "segments matching no bone of the table: Tumour"),
                          (overlapping, "overlapping segments (a voxel can belong to one bone only): Mandible")):
        capfd.readouterr()
        assert main(["meshes", str(path), "-o", str(tmp_path / f"{path.stem}-meshes")]) == 2
        err = capfd.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / f"{path.stem}-meshes").exists()


def test_a_colour_table_of_our_name_edited_by_hand_is_left_as_it_is_and_not_used_for_export(scene, phantom):
    """The export colour table is reused only while it names every bone at its value: a table of
    that name renamed or resized by hand (or another tool's) is neither used, which would export
    bones under wrong values, nor overwritten; ours is made beside it. Colours changed by hand do
    not matter to export (it maps by name) and the table is reused."""
    from BoneSegmentationLib.slicer.nodes import COLOUR_TABLE_NAME, names_the_bones

    ct, labels, _ = phantom
    volume = image_to_volume_node(ct, scene, "ct")

    def segment_once():
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        labels_to_segmentation_node(labels, node, reference_volume_node=volume)
        return node.GetLabelmapConversionColorTableNode()

    first = segment_once()
    assert first.GetName() == COLOUR_TABLE_NAME and names_the_bones(first, T)
    femur = T.by_name("femur_left")
    first.SetColor(femur.index, femur.display_name, 0.1, 0.2, 0.3, 1.0)  # recoloured: still ours
    assert segment_once() is first

    first.SetColor(femur.index, "Tumour", 0.1, 0.2, 0.3, 1.0)  # renamed by hand
    second = segment_once()
    assert second is not first and names_the_bones(second, T)
    assert second.GetName().startswith(COLOUR_TABLE_NAME) and second.GetName() != COLOUR_TABLE_NAME
    assert first.GetColorName(femur.index) == "Tumour" and first.GetScene() is scene  # untouched
    assert segment_once() is second

    scene.RemoveNode(second)
    first.SetNumberOfColors(5)  # another tool's table of the same name
    third = segment_once()
    assert third is not first and names_the_bones(third, T) and first.GetNumberOfColors() == 5


def test_a_label_map_slicer_exported_in_list_order_is_read_by_its_colour_table(scene, phantom, tmp_path, capfd):
    """Without a colour table Slicer exports segments as 1, 2, 3... in list order (L1 as 1, the
    cranium's index) and writes the colour table it used beside the file (NAME.labels.csv): the
    values are read back by that table's names or codes. Our segmentations carry the bone table as
    their export colour table, so Slicer's export panels give the table's values to begin with."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.core.imageio import read_label_map
    from BoneSegmentationLib.slicer.nodes import COLOUR_TABLE_NAME
    from BoneSegmentationLib.training.dataset import label_path

    ct, labels, _ = phantom
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    a = sitk.GetArrayFromImage(labels)
    names = ("vertebra_L1", "vertebra_L2", "sacrum", "rib_right_12", "femur_left")
    subset = np.where(np.isin(a, [T.by_name(n).index for n in names]), a, 0).astype(np.uint8)
    bones = sitk.GetImageFromArray(subset)
    bones.CopyInformation(labels)
    volume = image_to_volume_node(ct, scene, "ct")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ids = labels_to_segmentation_node(bones, node, reference_volume_node=volume)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic

    ours = node.GetLabelmapConversionColorTableNode()  # what Slicer's export panels preselect
    assert ours is not None and ours.GetName() == COLOUR_TABLE_NAME
    assert all(ours.GetColorName(b.index) == b.display_name for b in T.foreground())
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert seg_logic.ExportSegmentsToLabelmapNode(node, ids, exported, volume, 0, ours)
    assert np.array_equal(sitk.GetArrayFromImage(volume_node_to_image(exported)), subset)

    in_order = scene.AddNewNodeByClass("vtkMRMLColorTableNode")  # the table Slicer makes without one
    in_order.SetTypeToUser()
    in_order.SetNumberOfColors(len(ids) + 1)
    in_order.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for k, seg_id in enumerate(ids, start=1):
        bone = T.by_name(seg_id)
        renamed = seg_id == "rib_right_12"  # a segment renamed by hand: known by its terminology codes
        in_order.SetColor(k, "Segment_4" if renamed else bone.display_name, *(c / 255 for c in bone.rgb), 1.0)
        if renamed:
            assert in_order.SetTerminologyFromString(k, bone.terminology_entry())
    listed = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert seg_logic.ExportSegmentsToLabelmapNode(node, ids, listed, volume, 0, in_order)
    stored = sitk.GetArrayFromImage(volume_node_to_image(listed))
    assert sorted(int(v) for v in np.unique(stored) if v) == list(range(1, len(ids) + 1))
    sitk.WriteImage(volume_node_to_image(listed), str(tmp_path / "Segmentation.nii.gz"))
    storage = scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    storage.SetFileName(str(tmp_path / "Segmentation.labels.csv"))
    assert storage.WriteData(in_order)

    assert np.array_equal(sitk.GetArrayViewFromImage(read_label_map(tmp_path / "Segmentation.nii.gz")), subset)
    assert main(["dataset", "add", str(tmp_path / "ds"), "--image", str(tmp_path / "ct.nii.gz"),
                 "--labels", str(tmp_path / "Segmentation.nii.gz"), "--case-id", "listed"]) == 0
    added = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path(tmp_path / "ds", "listed"))))
    assert np.array_equal(added, subset)

    csv_text = (tmp_path / "Segmentation.labels.csv").read_text()
    for change, message in ((csv_text.replace('"Left femur"', '"Tumour"'), "matching no bone of the table: Tumour"),
                            ("\n".join(csv_text.splitlines()[:-1]) + "\n", "have no row in its colour table")):
        (tmp_path / "Segmentation.labels.csv").write_text(change)
        capfd.readouterr()
        assert main(["meshes", str(tmp_path / "Segmentation.nii.gz"), "-o", str(tmp_path / "meshes")]) == 2
        err = capfd.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "meshes").exists()
