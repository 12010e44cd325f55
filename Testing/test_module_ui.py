"""The module's .ui file is valid Qt Designer XML and holds every widget the module code uses."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = Path(__file__).resolve().parent.parent / "BoneSegmentation"


def test_ui_names_used_by_the_module_exist():
    root = ET.parse(MODULE / "Resources" / "UI" / "BoneSegmentation.ui").getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    names = {w.get("name") for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "BoneSegmentation.py").read_text(encoding="utf-8")))
    assert used, "the module uses its .ui widgets"
    assert used <= names, f"widgets missing from the .ui file: {sorted(used - names)}"


def test_module_logic_is_the_qt_free_library_logic():
    source = (MODULE / "BoneSegmentation.py").read_text(encoding="utf-8")
    assert "class BoneSegmentationLogic(ScriptedLoadableModuleLogic, SlicerSegmentationLogic)" in source
    logic_part = source[source.index("class BoneSegmentationLogic"):source.index("class BoneSegmentationTest")]
    assert "import qt" not in logic_part and "slicer.app" not in logic_part
