"""API conformance: every name the Slicer module uses on ``slicer``, ``slicer.util``, ``slicer.app``,
``slicer.modules``, ``vtk``, ``qt``, ``ctk`` and on each ``self.ui.<widget>`` (properties, methods,
signals with their exact C++ signatures) exists in the real API: Slicer's and CTK's headers and
Python sources (``Testing/slicer_api/*.json``, made by ``tools/extract_slicer_api.py`` at a
recorded commit), Qt itself (PySide6), and the installed ``vtk`` and slicer-core. The harness's
CTK and qMRML stand-ins are held to the same lists. A copy of the module with one wrong name fails."""

from __future__ import annotations

import ast
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
PySide6 = pytest.importorskip("PySide6")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
import vtk  # noqa: E402

HERE = Path(__file__).resolve().parent
MODULE = HERE.parent / "BoneSegmentation" / "BoneSegmentation.py"
UI = HERE.parent / "BoneSegmentation" / "Resources" / "UI" / "BoneSegmentation.ui"
SLICER_API = json.loads((HERE / "slicer_api" / "slicer.json").read_text())
CTK_API = json.loads((HERE / "slicer_api" / "ctk.json").read_text())
CLASSES = {**SLICER_API["classes"], **CTK_API["classes"]}
# names Slicer's Python manager puts on the `slicer` module at startup (qSlicerCorePythonManager)
APP_NAMES = {"app", "modules", "mrmlScene", "util", "ScriptedLoadableModule", "selfTests"}


def qt_class(name: str):
    return getattr(QtWidgets, name, None) or getattr(QtCore, name, None) or getattr(QtGui, name, None)


def class_members(name: str) -> tuple[set[str], set[str]]:
    """(attribute names, normalized signal signatures) of a Qt, CTK, qMRML or Slicer class."""
    if name in CLASSES:
        api = CLASSES[name]
        names = set(api["properties"]) | set(api["methods"]) | {s.split("(")[0] for s in api["slots"] + api["signals"]}
        names |= {v for values in api["enums"].values() for v in values} | set(api["enums"])
        signals = set(api["signals"])
        if api["base"]:
            base_names, base_signals = class_members(api["base"])
            names, signals = names | base_names, signals | base_signals
        return names, signals
    cls = qt_class(name)
    if cls is None:
        return set(), set()
    if not hasattr(cls, "staticMetaObject"):  # a namespace such as Qt
        return set(dir(cls)), set()
    meta = cls.staticMetaObject
    names = set(dir(cls)) | {meta.property(i).name() for i in range(meta.propertyCount())}
    signals = {meta.method(i).methodSignature().data().decode() for i in range(meta.methodCount())
               if meta.method(i).methodType() == QtCore.QMetaMethod.Signal}
    return names, signals


def normalized(signature: str) -> str:
    return QtCore.QMetaObject.normalizedSignature(signature).data().decode()


def _chain(node: ast.AST) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def api_problems(source: str, ui_path: Path = UI) -> list[str]:
    """Every use of a name the real API lacks, one line each."""
    widgets = {w.get("name"): w.get("class") for w in ET.parse(ui_path).getroot().iter("widget")}
    app_names = set()
    for cls in ("qSlicerApplication", "qSlicerCoreApplication"):
        app_names |= class_members(cls)[0]
    app_names |= set(dir(QtWidgets.QApplication))
    module_parent = class_members("qSlicerAbstractCoreModule")[0] | {"logic", "path", "title"}
    problems = []
    tree = ast.parse(source)
    for node in ast.walk(tree):  # so that only the outermost attribute of a chain is checked
        for child in ast.iter_child_nodes(node):
            child.parent = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            chain = _chain(node)
            if chain:
                problems += _check_chain(chain, widgets, app_names, module_parent, node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            chain = _chain(node.func.value)
            owner = widgets.get(chain[2]) if chain[:2] == ["self", "ui"] and len(chain) == 3 else \
                "qSlicerApplication" if chain == ["slicer", "app"] else None
            if owner:
                signal = normalized(node.args[0].value)
                if signal not in class_members(owner)[1]:
                    problems.append(f"line {node.lineno}: {owner} has no signal {signal}")
    return problems


def _check_chain(chain, widgets, app_names, module_parent, line) -> list[str]:
    root, rest = chain[0], chain[1:]
    where = f"line {line}: {'.'.join(chain)}"
    if root == "vtk":
        obj = vtk
        for part in rest:
            if not hasattr(obj, part):
                return [f"{where}: vtk has no {part}"]
            obj = getattr(obj, part)
        return []
    if root == "qt" and rest:
        cls = qt_class(rest[0])
        if cls is None or (len(rest) > 1 and rest[1] not in class_members(rest[0])[0] and not hasattr(cls, rest[1])):
            return [f"{where}: Qt has no {'.'.join(rest[:2])}"]
        return []
    if root == "ctk" and rest and rest[0] not in CTK_API["classes"]:
        return [f"{where}: CTK has no {rest[0]}"]
    if root == "slicer" and rest:
        head = rest[0]
        if head == "util":
            return [] if len(rest) < 2 or rest[1] in SLICER_API["util"] else [f"{where}: slicer.util has no {rest[1]}"]
        if head == "app":
            return [] if len(rest) < 2 or rest[1] in app_names else [f"{where}: slicer.app has no {rest[1]}"]
        if head == "modules":
            if len(rest) >= 2 and rest[1] not in SLICER_API["modules"]:
                return [f"{where}: no Slicer module named {rest[1]}"]
            if len(rest) >= 3 and rest[2] not in module_parent:
                return [f"{where}: a Slicer module has no {rest[2]}"]
            return []
        if head == "mrmlScene":
            return [] if len(rest) < 2 or hasattr(slicer.vtkMRMLScene, rest[1]) else \
                [f"{where}: vtkMRMLScene has no {rest[1]}"]
        if head in APP_NAMES or head in CLASSES:
            return []
        return [] if hasattr(slicer, head) else [f"{where}: slicer has no {head}"]
    if chain[:2] == ["self", "ui"] and len(chain) >= 4:
        widget, member = chain[2], chain[3]
        if widget not in widgets:
            return [f"{where}: the .ui has no widget {widget}"]
        if member not in class_members(widgets[widget])[0]:
            return [f"{where}: {widgets[widget]} has no {member}"]
    if chain[:2] == ["self", "parent"] and len(chain) == 3 and chain[2] not in module_parent | \
            class_members("qSlicerAbstractModuleWidget")[0] | class_members("qMRMLWidget")[0]:
        return [f"{where}: a module's parent has no {chain[2]}"]
    return []


def test_reference_lists_record_their_source():
    for api in (SLICER_API, CTK_API):
        assert len(api["commit"]) == 40 and api["source"].startswith("https://github.com/")
    assert "valueChanged(double)" in CTK_API["classes"]["ctkSliderWidget"]["signals"]
    assert "currentNodeChanged(vtkMRMLNode*)" in SLICER_API["classes"]["qMRMLNodeComboBox"]["signals"]
    assert "startupCompleted()" in SLICER_API["classes"]["qSlicerApplication"]["signals"]
    assert {"loadUI", "childWidgetVariables", "confirmYesNoDisplay"} <= set(SLICER_API["util"])


def test_the_module_uses_only_real_api():
    assert api_problems(MODULE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("wrong, right, message", [
    ("vtk.vtkCommand.ModifiedEvent", "slicer.vtkCommand.ModifiedEvent", "slicer has no vtkCommand"),
    ('"currentNodeChanged(vtkMRMLNode*)"', '"currentNodeChanged(vtkMRMLScene*)"',
     "qMRMLNodeComboBox has no signal currentNodeChanged(vtkMRMLScene*)"),
    ("self.ui.overlapSliderWidget.value = ", "self.ui.overlapSliderWidget.values = ", "ctkSliderWidget has no values"),
    ("slicer.util.confirmYesNoDisplay", "slicer.util.confirmYesNoDialog", "slicer.util has no confirmYesNoDialog"),
    ("slicer.modules.markups.logic", "slicer.modules.markup.logic", "no Slicer module named markup"),
    ('"toggled(bool)"', '"toggled(int)"', "QCheckBox has no signal toggled(int)"),
])
def test_a_wrong_name_fails(wrong, right, message):
    source = MODULE.read_text(encoding="utf-8")
    assert wrong in source
    problems = api_problems(source.replace(wrong, right, 1))
    assert any(message in p for p in problems), problems


def test_harness_stand_ins_have_only_real_members():
    """The CTK and qMRML widgets of Testing/slicer_harness add no member the real class lacks."""
    import sys
    sys.path.insert(0, str(HERE / "slicer_harness"))
    import ctk as ctk_stand_in
    import mrml_widgets
    for cls in (ctk_stand_in.ctkCollapsibleButton, ctk_stand_in.ctkSliderWidget, ctk_stand_in.ctkPathLineEdit,
                mrml_widgets.qMRMLWidget, mrml_widgets.qMRMLNodeComboBox):
        real_names, real_signals = class_members(cls.__name__)
        own = {n for n in vars(cls) if not n.startswith("_") and n not in ("CPP_SIGNALS", "staticMetaObject")}
        extra = {n for n in own if n not in real_names}
        assert not extra, f"{cls.__name__} has members the real class lacks: {sorted(extra)}"
        assert set(cls.CPP_SIGNALS) <= real_signals, cls.__name__


def test_harness_module_bases_have_only_real_members():
    """Testing/slicer_harness/ScriptedLoadableModule.py defines no member Slicer's lacks."""
    tree = ast.parse((HERE / "slicer_harness" / "ScriptedLoadableModule.py").read_text(encoding="utf-8"))
    real = SLICER_API["ScriptedLoadableModule"]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            own = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            own |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and isinstance(n.value, ast.Name) and n.value.id == "self"}
            assert own - {"__init__"} <= set(real[node.name]), (node.name, sorted(own - set(real[node.name])))


def test_extension_catalog_entry_and_sample_data_call_match_slicer():
    """BoneSegmentation.json is a valid Extensions Index entry (keys of Slicer's newest schema;
    category and dependencies as in CMakeLists.txt); the Sample Data call uses the real parameters."""
    import re
    schema = SLICER_API["extension_catalog_schema"]
    entry = json.loads((HERE.parent / "BoneSegmentation.json").read_text())
    assert entry["$schema"] == schema["id"]
    assert set(schema["required"]) <= set(entry) <= set(schema["properties"])
    cmake = (HERE.parent / "CMakeLists.txt").read_text()
    assert entry["category"] == re.search(r'EXTENSION_CATEGORY "([^"]+)"', cmake).group(1)
    assert entry["build_dependencies"] == re.search(r'EXTENSION_DEPENDS "([^"]+)"', cmake).group(1).split()
    assert (HERE.parent / "BoneSegmentation.png").is_file()
    real = SLICER_API["SampleData.registerCustomSampleDataSource"]
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "registerCustomSampleDataSource"]
    assert calls and all(k.arg in real for c in calls for k in c.keywords)
    import inspect
    import sys
    sys.path.insert(0, str(HERE / "slicer_harness"))
    import SampleData
    assert list(inspect.signature(SampleData.SampleDataLogic.registerCustomSampleDataSource).parameters) == real


def test_harness_application_and_module_parent_have_only_real_members():
    """slicer.app, its module manager and a module's parent in the harness: no member the real
    qSlicerApplication, qSlicerModuleManager or qSlicerAbstractCoreModule lacks."""
    tree = ast.parse((HERE / "slicer_harness" / "__init__.py").read_text(encoding="utf-8"))
    real = {"qSlicerApplication": class_members("qSlicerApplication"),
            "ModuleManager": class_members("qSlicerModuleManager"),
            "ModuleParent": class_members("qSlicerAbstractCoreModule")}
    seen = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in real:
            seen.add(node.name)
            names, signals = real[node.name]
            own = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
            own |= {t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Name) and t.id != "CPP_SIGNALS"}
            own |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and isinstance(n.value, ast.Name) and n.value.id == "self" and not n.attr.startswith("_")}
            assert own <= names, (node.name, sorted(own - names))
            for n in node.body:
                if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CPP_SIGNALS"
                                                     for t in n.targets):
                    assert set(ast.literal_eval(n.value)) <= signals, node.name
    assert seen == set(real)
