"""3D Slicer module: segment 125 distinct bones of the upper body from a CT in one click.

Widget (thin, Qt) -> Logic (no Qt; ``BoneSegmentationLib.slicer.logic``) -> library
(``BoneSegmentationLib``: the engine, also a command-line tool). Heavy work runs in a child process
that the widget polls with a timer, so Slicer stays responsive and Cancel really stops it.

Console use:
    logic = BoneSegmentationLogic()
    outcome = logic.segment(slicer.util.getNode("CT"), model=None, options=InferenceOptions(device="auto"))
    outcome.segmentation_node
"""

from __future__ import annotations

import json
from pathlib import Path

import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from BoneSegmentationLib.inference.options import ENGINES, InferenceOptions
from BoneSegmentationLib.slicer.environment import OPENVINO_REQUIREMENT, REQUIREMENTS, openvino_missing
from BoneSegmentationLib.slicer.logic import SAMPLE_NAME, SlicerSegmentationLogic, missing_dependencies
from BoneSegmentationLib.slicer.nodes import load_bone_terminology

CITATION = ("E. Schnider, A. Horváth, G. Rauter, A. Zam, M. Müller-Gerbl, P. C. Cattin: 3D Segmentation "
            "Networks for Excessive Numbers of Classes: Distinct Bone Segmentation in Upper Bodies. "
            "MLMI 2020, LNCS 12436, pp. 40-49.")
MESH_FORMATS = ["glb", "gltf", "obj", "stl", "ply"]
LABELLED_CHOICES = {"All bones checked": "all", "Only edited bones checked": "edited"}


class BoneSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Bone Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneSegmentation developers"]
        self.parent.helpText = (
            "Segments 125 distinct bones of the upper body (skull to mid-femur) from a CT in one network pass.<br>"
            "<b>Usage:</b> choose the CT, keep the bundled model (or pick a .pt file), click <i>Segment bones</i>. "
            "Check the bones listed under <i>Review first</i> (click one to centre the views), correct them in "
            "Segment Editor, then <i>Export meshes</i> for VR / 3D printing or <i>Add corrected case</i> to a "
            "training dataset and fine-tune the model.<br>"
            "The bundled model was trained on synthetic images only (images synthesised from a real body's "
            "labels, and phantoms), never on real CT: on real scans treat its labels as a prior to check and "
            "correct (figures in the README).")
        self.parent.acknowledgementText = f"Method: {CITATION}"
        # Segment Editor should know the bones, and Sample Data the phantom, from the start
        slicer.app.connect("startupCompleted()", _onStartupCompleted)


def _onStartupCompleted():
    load_bone_terminology(slicer.modules.terminologies.logic())
    registerSampleData()


def registerSampleData():
    """"Bone phantom CT" in Sample Data, made locally by the phantom generator (no download)."""
    import SampleData
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Bone Segmentation", sampleName=SAMPLE_NAME, nodeNames=SAMPLE_NAME,
        thumbnailFileName=str(Path(__file__).parent / "Resources" / "Icons" / "BoneSegmentation.png"),
        customDownloader=lambda source: BoneSegmentationLogic().load_sample_phantom())


class BoneSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: Segment / Export meshes / Training data. All work goes through the Logic."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._job = None
        self._timer = None
        self._updating = False

    def setup(self):
        import qt
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BoneSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BoneSegmentationLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)

        self.ui.deviceComboBox.addItems(["auto", "cuda", "cpu"])
        self.ui.engineComboBox.addItems(list(ENGINES))
        for label, value in (("Mirror averaging: as the model says", "model"), ("Mirror averaging: on (2x time)", "on"),
                             ("Mirror averaging: off (faster)", "off")):
            self.ui.mirrorComboBox.addItem(label, value)
        self.ui.meshFormatComboBox.addItems(MESH_FORMATS)
        self.ui.meshCoordinatesComboBox.addItems(["RAS", "LPS"])
        self._fillModels()
        self.ui.deviceInfoLabel.text = self.logic.device_description()

        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                                   self.updateParameterNodeFromGUI)
        self.ui.modelComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.engineComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.overlapSliderWidget.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.finerLabelsCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.mirrorComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.anatomyCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.growEdgesCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.lowMemoryCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.modelFileButton.clicked.connect(self.onChooseModelFile)
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.reviewListWidget.itemClicked.connect(self.onReviewItemClicked)
        self.ui.exportMeshesButton.clicked.connect(self.onExportMeshes)
        self.ui.labelledComboBox.addItems(list(LABELLED_CHOICES))
        self.ui.addCaseButton.clicked.connect(self.onAddCase)
        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetChanged)
        self.ui.retrainButton.clicked.connect(self.onRetrain)
        self.ui.stopTrainingButton.clicked.connect(self.onStopTraining)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node: settings survive scene save / load --------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.GetNodeReference("InputVolume"):
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume:
                self._parameterNode.SetNodeReferenceID("InputVolume", volume.GetID())

    def setParameterNode(self, node):
        if node:
            self.logic.setDefaultParameters(node)
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updating:
            return
        self._updating = True
        p = self._parameterNode
        self.ui.inputVolumeSelector.setCurrentNode(p.GetNodeReference("InputVolume"))
        self.ui.outputSegmentationSelector.setCurrentNode(p.GetNodeReference("OutputSegmentation"))
        index = self.ui.modelComboBox.findData(p.GetParameter("Model"))
        self.ui.modelComboBox.setCurrentIndex(max(index, 0))
        self.ui.deviceComboBox.setCurrentText(p.GetParameter("Device"))
        self.ui.engineComboBox.setCurrentText(p.GetParameter("Engine") or "auto")
        self.ui.overlapSliderWidget.value = float(p.GetParameter("Overlap"))
        self.ui.finerLabelsCheckBox.checked = int(p.GetParameter("Stitch") or 1) > 1
        self.ui.mirrorComboBox.setCurrentIndex(max(0, self.ui.mirrorComboBox.findData(p.GetParameter("Mirror") or "model")))
        self.ui.anatomyCheckBox.checked = (p.GetParameter("Anatomy") or "true").lower() != "false"
        self.ui.growEdgesCheckBox.checked = (p.GetParameter("GrowEdges") or "true").lower() != "false"
        self.ui.lowMemoryCheckBox.checked = p.GetParameter("Accumulate") == "float16"
        self.ui.segmentButton.enabled = p.GetNodeReference("InputVolume") is not None and self._job is None
        self.ui.modelInfoLabel.text = self.logic.model_description(self.ui.modelComboBox.currentData)
        self._updating = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or self._updating:
            return
        was = self._parameterNode.StartModify()
        self._parameterNode.SetNodeReferenceID("InputVolume", self.ui.inputVolumeSelector.currentNodeID)
        self._parameterNode.SetNodeReferenceID("OutputSegmentation", self.ui.outputSegmentationSelector.currentNodeID)
        self._parameterNode.SetParameter("Model", self.ui.modelComboBox.currentData or "")
        self._parameterNode.SetParameter("Device", self.ui.deviceComboBox.currentText)
        self._parameterNode.SetParameter("Engine", self.ui.engineComboBox.currentText)
        self._parameterNode.SetParameter("Overlap", str(self.ui.overlapSliderWidget.value))
        self._parameterNode.SetParameter("Stitch", "2" if self.ui.finerLabelsCheckBox.checked else "1")
        self._parameterNode.SetParameter("Mirror", self.ui.mirrorComboBox.currentData or "model")
        self._parameterNode.SetParameter("Anatomy", "true" if self.ui.anatomyCheckBox.checked else "false")
        self._parameterNode.SetParameter("GrowEdges", "true" if self.ui.growEdgesCheckBox.checked else "false")
        self._parameterNode.SetParameter("Accumulate", "float16" if self.ui.lowMemoryCheckBox.checked else "float32")
        self._parameterNode.EndModify(was)

    def _fillModels(self):
        self.ui.modelComboBox.clear()
        for label, value in self.logic.model_choices():
            self.ui.modelComboBox.addItem(label, value)

    def onChooseModelFile(self):
        import qt
        path = qt.QFileDialog.getOpenFileName(self.parent, "Model file", "", "BoneSegmentation model (*.pt)")
        if path:
            self.ui.modelComboBox.addItem(Path(path).name, path)
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.count - 1)

    # -- segment -----------------------------------------------------------------------------
    def onSegment(self):
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        volume, output = p.GetNodeReference("InputVolume"), p.GetNodeReference("OutputSegmentation")
        if output is not None and self.logic.is_edited(output, volume) and not slicer.util.confirmYesNoDisplay(
                f"'{output.GetName()}' has been edited since it was created. Replace its segments?"):
            return
        try:
            self._job = self.logic.start_background(volume, model=p.GetParameter("Model") or None,
                                                    options=self.logic.options_from_parameters(p))
        except Exception as e:
            slicer.util.errorDisplay(str(e))
            return
        self._setBusy(True, "Segmenting...")
        self._timer.start()

    def _poll(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        if job.poll():
            training = getattr(job, "kind", "segment") == "train"
            (self.ui.trainingProgressBar if training else self.ui.progressBar).value = int(100 * job.fraction)
            (self.ui.trainingStatusLabel if training else self.ui.statusLabel).text = job.message
            return
        self._timer.stop()
        self._job = None
        try:
            if getattr(job, "kind", "segment") == "train":
                self._finishTraining(job)
                return
            outcome = self.logic.finish_background(job, self._parameterNode.GetNodeReference("OutputSegmentation"))
        except Exception as e:
            self._setBusy(False, f"Failed: {e}")
            slicer.util.errorDisplay(str(e))
            return
        node = outcome.segmentation_node
        self._parameterNode.SetNodeReferenceID("OutputSegmentation", node.GetID())
        node.CreateClosedSurfaceRepresentation()
        self._showReview(node)
        found = node.GetSegmentation().GetNumberOfSegments()
        self._setBusy(False, f"{found} bones in {outcome.seconds:.1f} s (scene update {outcome.node_seconds:.1f} s)")

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self._job = None
            self._timer.stop()
            self._setBusy(False, "Cancelled.")

    def _setBusy(self, busy, message):
        self.ui.progressBar.visible = busy
        self.ui.cancelButton.visible = busy
        self.ui.segmentButton.enabled = not busy
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = message

    def _showReview(self, node):
        import qt
        self.ui.reviewListWidget.clear()
        for entry in self.logic.review_items(node):
            item = qt.QListWidgetItem(f"{entry['name']}: {'; '.join(entry['reasons'])}")
            item.setData(qt.Qt.UserRole, json.dumps(entry))
            self.ui.reviewListWidget.addItem(item)

    def onReviewItemClicked(self, item):
        import qt
        ras = self.logic.centroid_ras(json.loads(item.data(qt.Qt.UserRole)))
        if ras is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*ras, True)

    # -- dependencies: never installed silently ----------------------------------------------
    def _ensureDependencies(self) -> bool:
        missing = missing_dependencies()
        if self._parameterNode is not None and self._parameterNode.GetParameter("Engine") == "openvino" \
                and openvino_missing():
            missing.append(OPENVINO_REQUIREMENT)
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
                f"Bone Segmentation needs {', '.join(missing)}, which is not installed in Slicer's Python. "
                "Install now? (This can take several minutes; torch is installed through the PyTorch "
                "extension when it is there, so that the build matches your GPU.)"):
            return False
        with slicer.util.WaitCursor():
            if REQUIREMENTS["torch"] in missing:
                try:
                    import PyTorchUtils
                    PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
                    missing.remove(REQUIREMENTS["torch"])
                except ImportError:
                    pass
            if missing:
                slicer.util.pip_install(missing)  # a list: no shell, so ">=" is passed as written
        wants_openvino = self._parameterNode is not None and self._parameterNode.GetParameter("Engine") == "openvino"
        return not missing_dependencies() and not (wants_openvino and openvino_missing())

    # -- meshes -----------------------------------------------------------------------------
    def onExportMeshes(self):
        p = self._parameterNode
        node, volume = p.GetNodeReference("OutputSegmentation"), p.GetNodeReference("InputVolume")
        folder = self.ui.meshOutputPathLineEdit.currentPath
        if node is None or volume is None or not folder:
            slicer.util.errorDisplay("Choose the input CT, a segmentation and an output folder first.")
            return
        def export(overwrite: bool):
            with slicer.util.WaitCursor():
                return self.logic.export_meshes(
                    node, volume, folder, fmt=self.ui.meshFormatComboBox.currentText,
                    smoothing=self.ui.meshSmoothingSliderWidget.value,
                    max_triangles=self.ui.meshTrianglesSpinBox.value,
                    coordinates=self.ui.meshCoordinatesComboBox.currentText,
                    visible_only=self.ui.meshVisibleOnlyCheckBox.checked, overwrite=overwrite)
        try:
            try:
                result = export(overwrite=False)
            except FileExistsError as e:  # checked before any meshing: ask, as a file dialog would
                if not slicer.util.confirmYesNoDisplay(f"{e}.\n\nReplace the meshes in {folder}?"):
                    self.ui.statusLabel.text = f"Meshes not exported: {folder} already holds them"
                    return
                result = export(overwrite=True)
        except Exception as e:
            slicer.util.errorDisplay(str(e))
            return
        self.ui.statusLabel.text = f"{len(result.bones)} meshes written to {folder} in {result.seconds:.1f} s"

    # -- training data and retraining ---------------------------------------------------------
    def onAddCase(self):
        volume = self.ui.inputVolumeSelector.currentNode()
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        folder = self.ui.datasetPathLineEdit.currentPath
        if volume is None or segmentation is None or not folder:
            slicer.util.errorDisplay("Choose the CT, its corrected segmentation and a dataset folder first.")
            return
        labelled = LABELLED_CHOICES[self.ui.labelledComboBox.currentText]
        try:
            manifest = self.logic.add_training_case(folder, volume, segmentation, labelled=labelled)
        except Exception as e:
            slicer.util.errorDisplay(f"The case was not added: {e}")
            return
        edited = manifest.get("edits", {}).get("edited")
        self.ui.trainingStatusLabel.text = (f"Added {manifest['case_id']}" +
                                            (f" ({len(edited)} bones edited)" if edited is not None else ""))
        self.onDatasetChanged(folder)

    def onDatasetChanged(self, folder):
        try:
            self.ui.datasetInfoTextEdit.plainText = self.logic.dataset_summary(folder) if folder else ""
        except Exception as e:
            self.ui.datasetInfoTextEdit.plainText = str(e)

    def onRetrain(self):
        folder = self.ui.datasetPathLineEdit.currentPath
        model = self._parameterNode.GetParameter("Model") or None
        note = self.logic.training_device_note()
        if note and not slicer.util.confirmOkCancelDisplay(note + " Train on the CPU anyway?"):
            return
        try:
            self._job = self.logic.start_training(folder, model, self.ui.iterationsSpinBox.value)
        except Exception as e:
            slicer.util.errorDisplay(str(e))
            return
        self.ui.retrainButton.enabled, self.ui.stopTrainingButton.enabled = False, True
        self._timer.start()

    def onStopTraining(self):
        if self._job is not None:
            self._job.request_stop()
            self.ui.trainingStatusLabel.text = "Stopping after the current iteration (checkpoint kept)..."

    def _finishTraining(self, job):
        self.ui.retrainButton.enabled, self.ui.stopTrainingButton.enabled = True, False
        message = self.logic.finish_training(job)
        self.ui.trainingStatusLabel.text = message
        self._fillModels()


class BoneSegmentationLogic(ScriptedLoadableModuleLogic, SlicerSegmentationLogic):
    """Qt-free: everything is in ``SlicerSegmentationLogic`` so that it is tested without the GUI."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        SlicerSegmentationLogic.__init__(self)
        if hasattr(slicer.modules, "terminologies"):  # our names and colours in Segment Editor
            load_bone_terminology(slicer.modules.terminologies.logic())

    def setDefaultParameters(self, parameterNode):
        for key, value in self.default_parameters().items():
            if not parameterNode.GetParameter(key):
                parameterNode.SetParameter(key, value)


class BoneSegmentationTest(ScriptedLoadableModuleTest):
    """Runs the same Logic path as the CI tests, inside real Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segment_phantom()

    def test_segment_phantom(self):
        import numpy as np
        import SimpleITK as sitk
        from BoneSegmentationLib.synthetic.phantom import make_phantom
        from BoneSegmentationLib.slicer.nodes import image_to_volume_node

        self.delayDisplay("Segmenting a 4 mm phantom with the bundled model")
        ct, _, _ = make_phantom(4, spacing=4.0, partial=False)
        volume = image_to_volume_node(ct, slicer.mrmlScene, "phantom")
        logic = BoneSegmentationLogic()
        outcome = logic.segment(volume, options=InferenceOptions(device="cpu"))
        node = outcome.segmentation_node
        segmentation = node.GetSegmentation()
        labels = sitk.GetArrayFromImage(outcome.labels)
        self.assertEqual(segmentation.GetNumberOfSegments(), len([v for v in np.unique(labels) if v]))
        back = sitk.GetArrayFromImage(logic.labels_from_segmentation(node, volume))
        self.assertTrue(np.array_equal(back, labels))
        self.delayDisplay(f"{segmentation.GetNumberOfSegments()} bones in {outcome.seconds:.1f} s")
