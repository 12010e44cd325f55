"""``slicer.qMRMLWidget`` and ``slicer.qMRMLNodeComboBox`` on PySide6 over slicer-core's real MRML
scene. Members are a subset of the real classes' (``Libs/MRML/Widgets/qMRML*.h`` of Slicer, see
``Testing/slicer_api/slicer.json``)."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

import qt as _qt

Property, Signal = QtCore.Property, QtCore.Signal


class qMRMLWidget(_qt._wrapped("QWidget")):
    mrmlSceneChanged = Signal(object)
    CPP_SIGNALS = {"mrmlSceneChanged(vtkMRMLScene*)": "mrmlSceneChanged"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)


class qMRMLNodeComboBox(_qt._wrapped("QWidget")):
    """Lists the scene's nodes of ``nodeTypes``; with ``noneEnabled`` false a node is always
    selected once one exists, as in Slicer."""

    currentNodeChanged = Signal(object)
    _currentNodeChangedValid = Signal(bool)  # the currentNodeChanged(bool) overload
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)
    nodeActivated = Signal(object)
    CPP_SIGNALS = {"currentNodeChanged(vtkMRMLNode*)": "currentNodeChanged",
                   "currentNodeChanged(bool)": "_currentNodeChangedValid",
                   "currentNodeIDChanged(QString)": "currentNodeIDChanged",
                   "nodeAdded(vtkMRMLNode*)": "nodeAdded", "nodeActivated(vtkMRMLNode*)": "nodeActivated"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self._scene, self._observations = None, []
        self._types: list[str] = []
        self._flags = {"noneEnabled": False, "addEnabled": True, "removeEnabled": True, "editEnabled": False,
                       "renameEnabled": False, "showChildNodeTypes": True, "showHidden": False}
        self._none_display = "None"
        self._current_id = ""
        self._combo.currentIndexChanged.connect(self._on_index)

    # -- scene ---------------------------------------------------------------------------
    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        self._scene, self._observations = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndBatchProcessEvent,
                          scene.EndCloseEvent, scene.EndImportEvent):
                self._observations.append((scene, scene.AddObserver(event, lambda *_: self._refresh())))
        self._refresh()

    def _nodes(self) -> list:
        if self._scene is None:
            return []
        nodes = []
        for k in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(k)
            if not any(node.IsA(t) if self._flags["showChildNodeTypes"] else node.GetClassName() == t
                       for t in self._types):
                continue
            if node.GetHideFromEditors() and not self._flags["showHidden"]:
                continue
            nodes.append(node)
        return nodes

    def _refresh(self):
        current = self._current_id
        self._combo.blockSignals(True)
        self._combo.clear()
        if self._flags["noneEnabled"]:
            self._combo.addItem(self._none_display, "")
        for node in self._nodes():
            self._combo.addItem(node.GetName(), node.GetID())
        index = self._combo.findData(current) if current else -1
        if index < 0:
            index = 0 if self._combo.count() else -1
        self._combo.setCurrentIndex(index)
        self._combo.blockSignals(False)
        self._on_index(index)

    def _on_index(self, index):
        node_id = self._combo.itemData(index) or "" if index >= 0 else ""
        if node_id != self._current_id:
            self._current_id = node_id
            node = self.currentNode()
            self.currentNodeIDChanged.emit(node_id)
            self.currentNodeChanged.emit(node)
            self._currentNodeChangedValid.emit(node is not None)

    # -- selection ---------------------------------------------------------------------------
    def currentNode(self):
        return self._scene.GetNodeByID(self._current_id) if self._scene is not None and self._current_id else None

    def setCurrentNode(self, node):
        node_id = node if isinstance(node, str) else (node.GetID() if node is not None else "")
        index = self._combo.findData(node_id) if node_id else (0 if self._flags["noneEnabled"] else -1)
        if index >= 0:
            self._combo.setCurrentIndex(index)

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(node_id or None)

    def nodeCount(self):
        return len(self._nodes())

    def nodeFromIndex(self, index):
        nodes = self._nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    # -- properties (as in qMRMLNodeComboBox.h) ----------------------------------------------
    def _flag(name):  # noqa: N805 - a property factory
        def get(self):
            return self._flags[name]

        def put(self, value):
            self._flags[name] = bool(value)
            if name in ("noneEnabled", "showChildNodeTypes", "showHidden"):
                self._refresh()
        return Property(bool, get, put)

    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    editEnabled = _flag("editEnabled")
    renameEnabled = _flag("renameEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes")
    showHidden = _flag("showHidden")
    del _flag

    def setNodeTypes(self, types):
        self._types = [str(t) for t in types]
        self._refresh()

    def setNoneDisplay(self, text):
        self._none_display = str(text)
        self._refresh()

    nodeTypes = Property("QStringList", lambda self: list(self._types), setNodeTypes)
    noneDisplay = Property(str, lambda self: self._none_display, setNoneDisplay)
    currentNodeID = Property(str, lambda self: self._current_id, setCurrentNodeID)


for _cls in (qMRMLWidget, qMRMLNodeComboBox):
    _qt.CUSTOM_WIDGETS[_cls.__name__] = _cls
