"""The Slicer panel driven as a user would: ``BoneSegmentation.py``'s Module, Widget and Logic run
with real Qt (PySide6, offscreen) and slicer-core's real MRML scene (``Testing/slicer_harness``).
Pick the CT, keep the bundled model, click Segment bones; Cancel; click a review item; Export
meshes; Add corrected case; Retrain and Stop; close and reload the scene; an edited segmentation
is not replaced without asking."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("PySide6")

from slicer_harness import add_application_nodes, load_panel, wait_until  # noqa: E402

from BoneSegmentationLib.core.bones import default_table  # noqa: E402
from BoneSegmentationLib.slicer.nodes import image_to_volume_node  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402

T = default_table()


@pytest.fixture(scope="module")
def ct():
    """The pelvis and lumbar spine of a phantom at 6 mm: small enough for a quick run."""
    image = make_phantom(2, spacing=6.0, partial=False)[0]
    return image[:, :, 20:75]


@pytest.fixture(scope="module")
def panel():
    scene = slicer.vtkMRMLScene()
    return load_panel(scene)


def _segments(node) -> dict:
    seg = node.GetSegmentation()
    return {seg.GetNthSegmentID(k): seg.GetNthSegment(k) for k in range(seg.GetNumberOfSegments())}


def _run_segmentation(panel, timeout=300):
    """Click Segment bones and run the event loop until the job ends; the progress values seen."""
    seen = []
    panel.ui.segmentButton.click()
    assert panel.widget._job is not None, panel.ui.statusLabel.text
    assert wait_until(lambda: seen.append(panel.ui.progressBar.value) or panel.widget._job is None, timeout)
    return seen


def test_panel_opens_with_defaults_and_follows_the_scene(panel, ct):
    ui = panel.ui
    assert panel.parent.title == "Bone Segmentation" and panel.parent.categories == ["Segmentation"]
    assert not ui.segmentButton.enabled  # no CT yet
    assert ui.modelComboBox.currentData == "bones-phantom-demo"
    assert ui.mirrorComboBox.currentData == "model" and ui.overlapSliderWidget.value == pytest.approx(0.5)
    assert "synthetic images only" in ui.modelInfoLabel.text
    volume = image_to_volume_node(ct, slicer.mrmlScene, "phantom CT")
    assert wait_until(lambda: ui.segmentButton.enabled, 5)  # the selector picked the CT; the button follows
    assert ui.inputVolumeSelector.currentNode().GetID() == volume.GetID()
    assert panel.widget._parameterNode.GetNodeReference("InputVolume").GetID() == volume.GetID()
    ui.mirrorComboBox.setCurrentIndex(ui.mirrorComboBox.findData("off"))
    assert panel.widget._parameterNode.GetParameter("Mirror") == "off"
    assert ui.anatomyCheckBox.checked and panel.widget._parameterNode.GetParameter("Anatomy") == "true"
    ui.anatomyCheckBox.checked = False  # the step can be switched off, and the logic's options follow
    assert panel.widget._parameterNode.GetParameter("Anatomy") == "false"
    from BoneSegmentationLib.slicer.logic import SlicerSegmentationLogic
    options = SlicerSegmentationLogic.options_from_parameters(panel.widget._parameterNode)
    assert options.anatomy is False and "--no-anatomy" in options.to_argv()
    ui.anatomyCheckBox.checked = True
    assert panel.widget._parameterNode.GetParameter("Anatomy") == "true"
    assert ui.growEdgesCheckBox.checked and panel.widget._parameterNode.GetParameter("GrowEdges") == "true"
    ui.growEdgesCheckBox.checked = False  # edge growth switched off reaches the logic's options and the child's argv
    options = SlicerSegmentationLogic.options_from_parameters(panel.widget._parameterNode)
    assert options.edges is False and "--no-grow-edges" in options.to_argv()
    ui.growEdgesCheckBox.checked = True
    assert panel.widget._parameterNode.GetParameter("GrowEdges") == "true"
    assert not ui.lowMemoryCheckBox.checked and panel.widget._parameterNode.GetParameter("Accumulate") == "float32"
    ui.lowMemoryCheckBox.checked = True  # float16 sums reach the logic's options and the child's argv
    options = SlicerSegmentationLogic.options_from_parameters(panel.widget._parameterNode)
    assert options.accumulate == "float16" and options.to_argv()[-2:] == ["--accumulate", "float16"]
    ui.lowMemoryCheckBox.checked = False
    assert panel.widget._parameterNode.GetParameter("Accumulate") == "float32"


def test_segment_bones_builds_the_named_segmentation(panel):
    ui = panel.ui
    seen = _run_segmentation(panel)
    assert "bones in" in ui.statusLabel.text, ui.statusLabel.text
    assert max(seen) > 0 and not ui.progressBar.visible  # the bar moved, then went away
    node = panel.widget._parameterNode.GetNodeReference("OutputSegmentation")
    segments = _segments(node)
    assert len(segments) > 5
    for seg_id, segment in segments.items():
        bone = T.by_name(seg_id)
        assert segment.GetName() == bone.display_name
        assert segment.GetColor() == pytest.approx(tuple(c / 255 for c in bone.rgb))
        ref = __import__("vtk").reference("")
        segment.GetTag(segment.GetTerminologyEntryTagName(), ref)
        assert str(ref) == bone.terminology_entry()
    assert node.GetSegmentation().ContainsRepresentation("Closed surface")
    assert ui.reviewListWidget.count > 0


def test_review_item_moves_the_slice_views_to_the_bone(panel):
    ui = panel.ui
    red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    before = red.GetSliceOffset()
    item = ui.reviewListWidget.item(0)
    ui.reviewListWidget.itemClicked.emit(item)
    import json
    import qt
    ras = panel.logic.centroid_ras(json.loads(item.data(qt.Qt.UserRole)))
    assert ras is not None and red.GetSliceOffset() == pytest.approx(ras[2], abs=1e-3)
    assert red.GetSliceOffset() != pytest.approx(before)


def test_export_meshes_writes_the_files(panel, tmp_path):
    ui = panel.ui
    ui.meshOutputPathLineEdit.currentPath = str(tmp_path / "meshes")
    ui.meshFormatComboBox.setCurrentText("stl")
    ui.meshTrianglesSpinBox.value = 2000
    ui.exportMeshesButton.click()
    assert "meshes written" in ui.statusLabel.text, ui.statusLabel.text
    node = panel.widget._parameterNode.GetNodeReference("OutputSegmentation")
    written = sorted(p.stem for p in (tmp_path / "meshes").glob("*.stl"))
    assert written == sorted(_segments(node)) and (tmp_path / "meshes" / "bones.json").exists()


def test_exporting_into_a_folder_of_meshes_asks_before_replacing_them(panel, tmp_path, monkeypatch):
    ui = panel.ui
    folder = tmp_path / "meshes"
    folder.mkdir()
    ui.meshOutputPathLineEdit.currentPath = str(folder)
    ui.meshFormatComboBox.setCurrentText("glb")
    ui.meshTrianglesSpinBox.value = 2000
    (folder / "bones.glb").write_bytes(b"the user's own")
    asked = []
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, *a, **k: asked.append(text) or False)
    ui.exportMeshesButton.click()
    assert asked and "bones.glb already exists" in asked[0]
    assert (folder / "bones.glb").read_bytes() == b"the user's own"
    assert "not exported" in ui.statusLabel.text
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, *a, **k: True)
    ui.exportMeshesButton.click()
    assert "meshes written" in ui.statusLabel.text
    assert (folder / "bones.glb").read_bytes()[:4] == b"glTF"


def test_an_edited_segmentation_is_not_replaced_without_asking(panel, monkeypatch):
    ui = panel.ui
    node = panel.widget._parameterNode.GetNodeReference("OutputSegmentation")
    volume = panel.widget._parameterNode.GetNodeReference("InputVolume")
    assert not panel.logic.is_edited(node, volume)
    seg_id = next(iter(_segments(node)))
    array = slicer.util.arrayFromSegmentBinaryLabelmap(node, seg_id, volume)
    array[:] = 0  # the anatomist deletes a bone
    slicer.util.updateSegmentBinaryLabelmapFromArray(array, node, seg_id, volume)
    assert panel.logic.is_edited(node, volume)
    asked = []
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, *a, **k: asked.append(text) or False)
    ui.segmentButton.click()
    assert asked and "has been edited" in asked[0]
    assert panel.widget._job is None  # declined: nothing started, the edits stay
    assert not slicer.util.arrayFromSegmentBinaryLabelmap(node, seg_id, volume).any()


def test_add_corrected_case_retrain_and_stop(panel, tmp_path, monkeypatch):
    ui = panel.ui
    asked = []  # the user answers OK to "train on the CPU anyway?"
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: asked.append(text) or True)
    ui.datasetPathLineEdit.currentPath = str(tmp_path / "dataset")
    ui.addCaseButton.click()
    assert ui.trainingStatusLabel.text.startswith("Added "), ui.trainingStatusLabel.text
    assert "1 cases" in ui.datasetInfoTextEdit.plainText, ui.datasetInfoTextEdit.plainText
    assert len(list((tmp_path / "dataset" / "labelsTr").glob("*.nii.gz"))) == 1

    ui.iterationsSpinBox.value = 50
    ui.retrainButton.click()
    job = panel.widget._job
    assert job is not None and not ui.retrainButton.enabled and ui.stopTrainingButton.enabled
    assert asked and "CPU" in asked[0]
    assert wait_until(lambda: job.fraction > 0 or panel.widget._job is None, 300), job.message
    ui.stopTrainingButton.click()
    assert "Stopping" in ui.trainingStatusLabel.text
    assert wait_until(lambda: panel.widget._job is None, 300)
    assert ui.retrainButton.enabled and not ui.stopTrainingButton.enabled
    assert job.returncode == 0, ui.trainingStatusLabel.text
    assert (job.run_dir / "checkpoint.pt").exists()  # kept: Retrain resumes from it


def test_cancel_stops_a_run(panel):
    ui = panel.ui
    node = panel.widget._parameterNode.GetNodeReference("OutputSegmentation")
    panel.widget._parameterNode.SetNodeReferenceID("OutputSegmentation", None)  # a new segmentation
    ui.segmentButton.click()
    job = panel.widget._job
    assert job is not None and ui.cancelButton.visible
    assert wait_until(lambda: job.message != "starting" or job.process.poll() is not None, 60)
    ui.cancelButton.click()
    assert panel.widget._job is None and ui.statusLabel.text == "Cancelled."
    assert job.process.poll() is not None  # the child process is gone
    assert ui.segmentButton.enabled and not ui.cancelButton.visible
    panel.widget._parameterNode.SetNodeReferenceID("OutputSegmentation", node.GetID())


def test_choosing_openvino_without_it_asks_before_installing(panel, monkeypatch):
    """Engine "openvino" where it is not installed: the panel names it and asks; declined, nothing
    is installed and no run starts. (Its absence is simulated: this machine has OpenVINO.)"""
    import sys
    ui = panel.ui
    module = sys.modules[type(panel.widget).__module__]
    monkeypatch.setattr(module, "openvino_missing", lambda: True)
    asked, installed = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: asked.append(text) or False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: installed.append(a))
    ui.engineComboBox.setCurrentText("openvino")
    assert panel.widget._parameterNode.GetParameter("Engine") == "openvino"
    ui.segmentButton.click()
    assert asked and "openvino" in asked[0] and "Install now?" in asked[0]
    assert not installed and panel.widget._job is None
    ui.engineComboBox.setCurrentText("auto")


def test_parameters_survive_closing_and_reloading_the_scene(panel, tmp_path):
    ui = panel.ui
    scene = slicer.mrmlScene
    ui.overlapSliderWidget.value = 0.25
    ui.finerLabelsCheckBox.checked = True
    ui.mirrorComboBox.setCurrentIndex(ui.mirrorComboBox.findData("on"))
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    scene.Clear(0)
    add_application_nodes(scene)
    assert panel.widget._parameterNode is not None  # a fresh one after the close
    assert ui.overlapSliderWidget.value == pytest.approx(0.5) and ui.mirrorComboBox.currentData == "model"
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Import()
    panel.widget.initializeParameterNode()
    assert ui.overlapSliderWidget.value == pytest.approx(0.25)
    assert ui.finerLabelsCheckBox.checked and ui.mirrorComboBox.currentData == "on"
    assert np.isclose(float(panel.widget._parameterNode.GetParameter("Overlap")), 0.25)


def test_sample_data_offers_a_bone_phantom_made_locally(panel):
    """At startup the module registers "Bone phantom CT" in Sample Data; choosing it makes the
    phantom here (no download) and loads it as a volume the panel can segment."""
    sources = slicer.modules.sampleDataSources["Bone Segmentation"]
    source = next(s for s in sources if s.sampleName == "Bone phantom CT")
    assert source.uris is None and __import__("os").path.isfile(source.thumbnailFileName)
    volume = source.customDownloader(source)
    assert volume.GetName() == "Bone phantom CT" and volume.GetImageData().GetDimensions()[2] > 100
    assert volume.GetSpacing() == pytest.approx((3.0, 3.0, 3.0))
