"""The ``qt`` module as Slicer's PythonQt presents it, built on PySide6 (real Qt widgets).

Slicer's Python sees Qt through PythonQt, whose conventions differ from PySide6's:

- Qt properties are attributes: ``label.text = "x"``, ``checkBox.checked``, ``combo.currentData``
  (PySide6: ``label.setText("x")``, ``checkBox.isChecked()``);
- ``obj.connect("signal(args)", slot)`` with the C++ signature;
- ``QObject.name`` is the object name;
- static dialogs return the value, not a tuple.

Every widget class used here is a subclass of the PySide6 class that adds exactly these
conventions; nothing else. ``QUiLoader`` creates those subclasses (and the CTK / qMRML widgets
of ``ctk.py`` / ``mrml_widgets.py``) and makes the ``.ui`` file's signal-slot connections by their
C++ signatures, as Qt's loader does in Slicer.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

SIGNATURE = re.compile(r"^(\w+)\((.*)\)$")


class _QtProperty:
    """A Qt property read and written as an attribute (PythonQt)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return QtCore.QObject.property(obj, self.name)

    def __set__(self, obj, value):
        if not QtCore.QObject.setProperty(obj, self.name, value):
            raise AttributeError(f"{type(obj).__name__}.{self.name} cannot be set to {value!r}")


class _ObjectName:
    def __get__(self, obj, owner=None):
        return self if obj is None else QtCore.QObject.objectName(obj)

    def __set__(self, obj, value):
        obj.setObjectName(value)


class PythonQtObject:
    """Mixin: ``connect("signal(args)", slot)`` by C++ signature. Classes written in Python (the
    CTK and qMRML stand-ins) list their C++ signal signatures in ``CPP_SIGNALS``."""

    CPP_SIGNALS: dict[str, str] = {}

    def connect(self, signal, slot):  # noqa: D401 - PythonQt's QObject.connect(signal, callable)
        if not isinstance(signal, str):
            raise TypeError("PythonQt connects by signature: obj.connect('signal(args)', slot)")
        signature = QtCore.QMetaObject.normalizedSignature(signal).data().decode()
        if signature in type(self).CPP_SIGNALS:
            return getattr(self, type(self).CPP_SIGNALS[signature]).connect(slot)
        index = self.metaObject().indexOfSignal(signature)
        if index < 0:
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        return QtCore.QObject.connect(self, QtCore.SIGNAL(signature), slot)


def _pythonqt_getattribute(self, name):
    """Shiboken finds a C++ member (``connect``, ``text()``) before a Python subclass's attribute
    of the same name; PythonQt's attributes come first here, as in PythonQt."""
    for klass in type(self).__mro__:
        if klass.__module__.startswith(("PySide6", "shiboken6", "Shiboken")):
            return klass.__getattribute__(self, name)  # Shiboken's own lookup for the rest
        attr = klass.__dict__.get(name)
        if attr is not None and name not in ("__getattribute__", "__dict__", "__class__"):
            if isinstance(attr, QtCore.Property):  # a property of a widget written in Python
                return QtCore.QObject.property(self, name)
            return attr.__get__(self, type(self)) if hasattr(attr, "__get__") else attr
    return object.__getattribute__(self, name)


def pythonqt_class(base: type, extra: dict | None = None) -> type:
    """A subclass of the PySide6 class ``base`` with PythonQt's conventions."""
    namespace: dict = {"__module__": __name__, "__getattribute__": _pythonqt_getattribute}
    meta = base.staticMetaObject
    for i in range(meta.propertyCount()):
        namespace[meta.property(i).name()] = _QtProperty(meta.property(i).name())
    namespace["name"] = _ObjectName()
    namespace.update(extra or {})
    return type(base.__name__, (PythonQtObject, base), namespace)


def _file_dialog_extra() -> dict:
    def getOpenFileName(parent=None, caption="", directory="", filter=""):  # PythonQt returns the path
        return QtWidgets.QFileDialog.getOpenFileName(parent, caption, directory, filter)[0]

    def getExistingDirectory(parent=None, caption="", directory=""):
        return QtWidgets.QFileDialog.getExistingDirectory(parent, caption, directory)
    return {"getOpenFileName": staticmethod(getOpenFileName), "getExistingDirectory": staticmethod(getExistingDirectory)}


_WRAPPED: dict[str, type] = {}


def _wrapped(name: str) -> type:
    if name not in _WRAPPED:
        base = getattr(QtWidgets, name, None) or getattr(QtCore, name, None) or getattr(QtGui, name)
        extra = _file_dialog_extra() if name == "QFileDialog" else None
        if isinstance(base, type) and issubclass(base, QtCore.QObject):
            _WRAPPED[name] = pythonqt_class(base, extra)
        else:
            _WRAPPED[name] = base
    return _WRAPPED[name]


CUSTOM_WIDGETS: dict[str, type] = {}  # filled by ctk.py and mrml_widgets.py


class QUiLoader(pythonqt_class(QtUiTools.QUiLoader)):
    """Creates PythonQt-style widgets and the CTK / qMRML stand-ins; makes the ``.ui`` file's
    connections by C++ signature (PySide's loader cannot see Python-defined signals)."""

    def createWidget(self, className, parent=None, name=""):
        cls = CUSTOM_WIDGETS.get(className) or _wrapped(className)
        widget = cls(parent)
        widget.setObjectName(name)
        return widget

    def load(self, device, parent=None):
        path = device.fileName() if hasattr(device, "fileName") else str(device)
        widget = super().load(device, parent)
        if widget is not None:
            for element in ET.parse(path).getroot().iter("widget"):  # enum / flag properties of custom
                cls = CUSTOM_WIDGETS.get(element.get("class"))  # widgets: Qt's loader cannot read them
                for prop in element.findall("property") if cls else ():
                    value = prop.find("set") if prop.find("set") is not None else prop.find("enum")
                    if value is not None:
                        flags = 0
                        for item in value.text.split("|"):
                            flags |= getattr(cls, item.split("::")[-1])
                        target = widget if element.get("name") == QtCore.QObject.objectName(widget) else \
                            widget.findChild(QtCore.QObject, element.get("name"))
                        setattr(target, prop.get("name"), flags)
            for c in ET.parse(path).getroot().iter("connection"):
                top = QtCore.QObject.objectName(widget)
                sender = widget if c.findtext("sender") == top else \
                    widget.findChild(QtCore.QObject, c.findtext("sender"))
                receiver = widget if c.findtext("receiver") == top else \
                    widget.findChild(QtCore.QObject, c.findtext("receiver"))
                slot = SIGNATURE.match(c.findtext("slot")).group(1)
                sender.connect(c.findtext("signal"), getattr(receiver, slot))
        return widget


def __getattr__(name: str):
    """``qt.QTimer``, ``qt.QListWidgetItem``, ``qt.Qt``, ``qt.QFile``... as PythonQt offers them."""
    if name.startswith("Q") or name == "Qt":
        if name == "Qt":
            return QtCore.Qt
        if name in CUSTOM_WIDGETS:
            return CUSTOM_WIDGETS[name]
        return _wrapped(name)
    raise AttributeError(name)
