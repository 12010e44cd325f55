"""The ``ctk`` module's widgets that the panel's ``.ui`` uses, on PySide6. Each implements a
subset of the real CTK class's members (``Libs/Widgets/ctk*.h`` of commontk/CTK, see
``Testing/slicer_api/ctk.json``): no member the real class lacks, so code that runs here uses
only what CTK offers."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

import qt as _qt

Property, Signal = QtCore.Property, QtCore.Signal


class ctkCollapsibleButton(_qt._wrapped("QAbstractButton")):
    contentsCollapsed = Signal(bool)
    CPP_SIGNALS = {"contentsCollapsed(bool)": "contentsCollapsed"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False
        self.setCheckable(True)
        self.setChecked(True)

    def paintEvent(self, event):  # a plain header line with an arrow, as the real one draws
        painter = QtGui.QPainter(self)
        header = QtCore.QRect(0, 0, QtWidgets.QWidget.width(self), 22)
        painter.fillRect(header, QtWidgets.QWidget.palette(self).button())
        painter.drawText(header.adjusted(6, 0, 0, 0), QtCore.Qt.AlignVCenter,
                         ("\u25b8 " if self._collapsed else "\u25be ") + QtWidgets.QAbstractButton.text(self))
        painter.end()

    def showEvent(self, event):  # the contents start below the header
        layout = QtWidgets.QWidget.layout(self)
        if layout is not None:
            margins = layout.contentsMargins()
            layout.setContentsMargins(margins.left(), 28, margins.right(), margins.bottom())
        if self._collapsed:  # children the loader added after `collapsed` was set
            for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                child.setVisible(False)
        super().showEvent(event)

    def collapsed(self):
        return self._collapsed

    def setCollapsed(self, value):
        if bool(value) != self._collapsed:
            self._collapsed = bool(value)
            for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                child.setVisible(not self._collapsed)
            self.contentsCollapsed.emit(self._collapsed)

    collapsed = Property(bool, collapsed, setCollapsed)


class ctkSliderWidget(_qt._wrapped("QWidget")):
    valueChanged = Signal(float)
    valueIsChanging = Signal(float)
    CPP_SIGNALS = {"valueChanged(double)": "valueChanged", "valueIsChanging(double)": "valueIsChanging"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._spin = QtWidgets.QDoubleSpinBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._spin)
        self._spin.setDecimals(2)
        self._spin.valueChanged.connect(self.valueChanged.emit)

    def setValue(self, value):
        self._spin.setValue(float(value))

    def setMinimum(self, value):
        self._spin.setMinimum(float(value))

    def setMaximum(self, value):
        self._spin.setMaximum(float(value))

    def setRange(self, low, high):
        self._spin.setRange(float(low), float(high))

    def setSingleStep(self, value):
        self._spin.setSingleStep(float(value))

    def setDecimals(self, value):
        self._spin.setDecimals(int(value))

    def reset(self):
        self.setValue(self._spin.minimum())

    value = Property(float, lambda self: self._spin.value(), setValue)
    minimum = Property(float, lambda self: self._spin.minimum(), setMinimum)
    maximum = Property(float, lambda self: self._spin.maximum(), setMaximum)
    singleStep = Property(float, lambda self: self._spin.singleStep(), setSingleStep)
    decimals = Property(int, lambda self: self._spin.decimals(), setDecimals)


class ctkPathLineEdit(_qt._wrapped("QWidget")):
    # enum Filter (ctkPathLineEdit.h): the values the .ui file may name
    Dirs, Files, Drives, NoSymLinks, AllEntries = 0x001, 0x002, 0x004, 0x008, 0x007
    currentPathChanged = Signal(str)
    validInputChanged = Signal(bool)
    CPP_SIGNALS = {"currentPathChanged(QString)": "currentPathChanged", "validInputChanged(bool)": "validInputChanged"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._edit = QtWidgets.QLineEdit(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)
        self._filters = self.AllEntries
        self._edit.textChanged.connect(self.currentPathChanged.emit)

    def setCurrentPath(self, path):
        self._edit.setText(str(path))

    def setFilters(self, filters):
        self._filters = int(filters)

    currentPath = Property(str, lambda self: self._edit.text(), setCurrentPath)
    filters = Property(int, lambda self: self._filters, setFilters)


for _cls in (ctkCollapsibleButton, ctkSliderWidget, ctkPathLineEdit):
    _qt.CUSTOM_WIDGETS[_cls.__name__] = _cls
