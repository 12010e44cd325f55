"""Run the Slicer module (``BoneSegmentation/BoneSegmentation.py``) in CI without the Slicer
application: real Qt widgets (PySide6, offscreen), the real MRML scene, segmentation and
terminology logic of ``slicer-core``, Slicer's own ``slicer.util``; stand-ins only for what the
application alone provides (PythonQt's ``qt`` conventions, CTK and qMRML widgets, ``slicer.app``,
``slicer.modules``, the ``ScriptedLoadableModule`` bases), each a subset of the real members.

    panel = load_panel(scene)   # Module, Widget (set up, entered) and Logic, as Slicer makes them
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "BoneSegmentation"


def _install_modules():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # `import qt`, `import ctk` as in Slicer
    import qt  # noqa: F401
    import ctk  # noqa: F401
    import mrml_widgets
    import slicer
    import ScriptedLoadableModule as bases
    sys.modules["slicer.ScriptedLoadableModule"] = bases
    slicer.ScriptedLoadableModule = bases
    slicer.qMRMLWidget = mrml_widgets.qMRMLWidget
    slicer.qMRMLNodeComboBox = mrml_widgets.qMRMLNodeComboBox
    return slicer


def _application(slicer):
    import qt
    from PySide6 import QtCore, QtWidgets

    class ModuleManager(qt._wrapped("QObject")):
        moduleAboutToBeUnloaded = QtCore.Signal(str)
        CPP_SIGNALS = {"moduleAboutToBeUnloaded(QString)": "moduleAboutToBeUnloaded"}

    class qSlicerApplication(qt._wrapped("QApplication")):
        """The members of qSlicerCoreApplication / qSlicerApplication the module and slicer.util use."""
        startupCompleted = QtCore.Signal()
        CPP_SIGNALS = {"startupCompleted()": "startupCompleted"}

        def __init__(self):
            super().__init__([])
            self._manager = ModuleManager()
            self._testing = True

        def testingEnabled(self):  # a PythonQt decorator in Slicer (qSlicerBaseQTCorePythonQtDecorators.h)
            return self._testing

        def moduleManager(self):
            return self._manager

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = qSlicerApplication()
        app.setApplicationName("Slicer")
    return app


def add_application_nodes(scene) -> None:
    """The nodes Slicer's application logic and layout put in every scene: the selection and
    interaction singletons and the Red, Yellow and Green slice views."""
    import slicer

    if scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is None:
        selection = slicer.vtkMRMLSelectionNode()
        selection.SetSingletonTag("Singleton")
        scene.AddNode(selection)
    if scene.GetNodeByID("vtkMRMLInteractionNodeSingleton") is None:
        interaction = slicer.vtkMRMLInteractionNode()
        interaction.SetSingletonTag("Singleton")
        scene.AddNode(interaction)
    if scene.GetDefaultNodeByClass("vtkMRMLSliceNode") is None:
        default = slicer.vtkMRMLSliceNode()
        scene.AddDefaultNode(default)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        if scene.GetSingletonNode(name, "vtkMRMLSliceNode") is None:
            node = scene.CreateNodeByClass("vtkMRMLSliceNode")
            node.UnRegister(None)
            node.SetName(name)
            node.SetLayoutName(name)
            node.SetSingletonTag(name)
            node.SetDefaultOrientation(orientation)
            node.SetOrientation(orientation)
            node.SetDimensions(256, 256, 1)
            node.SetFieldOfView(250, 250, 1)
            scene.AddNode(node)


class ModuleParent:
    """What Slicer gives a scripted module as ``parent`` (qSlicerScriptedLoadableModule): the
    properties a module sets, its path, and ``logic()`` / ``widgetRepresentation()``."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.title = self.helpText = self.acknowledgementText = ""
        self.categories, self.dependencies, self.contributors = [], [], []
        self._logic = self._widget = None

    def logic(self):
        return self._logic

    def widgetRepresentation(self):
        return self._widget


@dataclass
class Panel:
    module: object
    widget: object
    logic: object
    source: types.ModuleType
    parent: ModuleParent

    @property
    def ui(self):
        return self.widget.ui


def load_panel(scene, module_dir: Path = MODULE_DIR) -> Panel:
    """Import the module file, create its Module, Widget (``setup()``, entered) and Logic as Slicer
    does, against ``scene`` (made ``slicer.mrmlScene``)."""
    slicer = _install_modules()
    app = _application(slicer)
    slicer.app = app
    slicer.mrmlScene = scene
    add_application_nodes(scene)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    parent = ModuleParent(module_dir / "BoneSegmentation.py")
    slicer.modules = types.SimpleNamespace(  # the modules' logics, as slicer.modules.<name>.logic()
        bonesegmentation=parent,
        terminologies=types.SimpleNamespace(logic=lambda: terminologies),
        markups=types.SimpleNamespace(logic=lambda: markups),
        segmentations=types.SimpleNamespace(logic=lambda: segmentations),
        volumes=types.SimpleNamespace(logic=lambda: volumes))
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
    source = importlib.reload(sys.modules["BoneSegmentation"]) if "BoneSegmentation" in sys.modules \
        else importlib.import_module("BoneSegmentation")
    module = source.BoneSegmentation(parent)
    app.startupCompleted.emit()

    import qt
    frame = slicer.qMRMLWidget()
    frame.setLayout(qt.QVBoxLayout())
    frame.setMRMLScene(scene)
    frame.isEntered = True  # qSlicerAbstractModuleWidget's property
    widget = source.BoneSegmentationWidget(frame)
    widget.setup()
    widget.enter()
    parent._widget, parent._logic = frame, widget.logic
    frame.resize(420, 900)
    frame.show()
    return Panel(module, widget, widget.logic, source, parent)


def wait_until(condition, timeout: float = 300.0, step: float = 0.05) -> bool:
    """Run the Qt event loop (the panel's timers) until ``condition()`` or ``timeout`` seconds."""
    import time

    from PySide6 import QtCore, QtWidgets
    app = QtWidgets.QApplication.instance()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.AllEvents, 50)
        if condition():
            return True
        time.sleep(step)
    return False
