"""3D Slicer scripted module for BoneSegmentation.

Placeholder until the Slicer-module issue lands: it registers the module and exposes the
library through a Qt-free Logic so it can already be used from Slicer's Python console:

    logic = BoneSegmentationLogic()
    labelmap_path = logic.segment_file("/path/ct.nii.gz", "/tmp/bones.nii.gz")
"""

from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)


class BoneSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Bone Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneSegmentation developers"]
        self.parent.helpText = ("Segments 125 distinct bones of the upper body from a CT scan in one "
                                "network pass. See the extension's README for usage.")
        self.parent.acknowledgementText = (
            "Method: E. Schnider et al., 3D Segmentation Networks for Excessive Numbers of Classes: "
            "Distinct Bone Segmentation in Upper Bodies, MLMI 2020.")


class BoneSegmentationWidget(ScriptedLoadableModuleWidget):
    pass


class BoneSegmentationLogic(ScriptedLoadableModuleLogic):
    """Qt-free logic; the heavy lifting is in BoneSegmentationLib."""

    def segment_file(self, input_path: str, output_path: str, model: str = None, device: str = "auto") -> str:
        from BoneSegmentationLib.imageio import read_ct, write_image
        from BoneSegmentationLib.modelfile import load_model
        from BoneSegmentationLib.registry import resolve_model
        from BoneSegmentationLib.segment import segment_image

        image, _ = read_ct(input_path)
        result = segment_image(image, load_model(resolve_model(model)), device=device)
        write_image(result.labels, output_path, overwrite=False)
        return output_path


class BoneSegmentationTest(ScriptedLoadableModuleTest):
    def runTest(self):
        self.test_library_imports()

    def test_library_imports(self):
        from BoneSegmentationLib.bones import default_table
        self.assertEqual(default_table().num_classes, 126)
        self.assertEqual(default_table()[1].name, "cranium")
