"""Stand-ins for the parts of 3D Slicer that the slicer-core wheel lacks, to drive BBBAnomaly's panel.

slicer-core gives the real MRML layer (scene, nodes, ``slicer.util.arrayFromVolume``, the real
``VTKObservationMixin``); this file adds what only the application has: ``qt`` (as PythonQt exposes
it), ``ctk``, the qMRML widgets, ``slicer.ScriptedLoadableModule``, ``slicer.app``,
``slicer.modules``, the GUI functions of ``slicer.util`` (dialogs, pip, ``loadUI``), ``SampleData``,
``PyTorchUtils`` and a ``PythonSlicer`` launcher.

They follow the rules that broke the panel before:

* **PythonQt's signal rule**: a slot gets as many of the signal's arguments as it has positional
  parameters, defaults included (``co_argcount``; ``self`` not counted); a ``*args`` slot, or a
  callable that is not a Python function or method, gets them all. ``clicked(bool)`` delivers
  ``False`` to ``def onCurves(self, voxel=None)``.
* **String signatures**: ``widget.connect("clicked(bool)", slot)``; a signature the widget does not
  have raises (PythonQt only prints a warning and returns False: stricter here, on purpose).
* **Exceptions in slots** do not propagate to the emitter (PythonQt prints them); they are
  recorded in :data:`SLOT_ERRORS` so that tests can require there were none.
* **Widgets come from the .ui file**: :func:`load_ui` builds exactly the widgets, names, classes,
  properties and designer connections that ``BBBAnomaly.ui`` declares; a name the code uses and the
  file lacks is an AttributeError, as in Slicer.
* **The launcher**: :func:`make_launcher` writes a ``PythonSlicer`` that, like CTK's launcher,
  starts the real interpreter as its child and does *not* forward signals to it.

Where a stand-in is looser than Slicer (it accepts something Slicer would not, or skips work Slicer
does), it says so:

* widgets keep no geometry, draw nothing, and ``deleteLater`` removes at once;
* properties are plain attributes: setting one the Qt class does not have is accepted (PythonQt
  also accepts unknown attributes on wrappers, as Python attributes), so a typo in a property name
  is not caught here;
* ``qMRMLNodeComboBox`` filters by ``nodeTypes`` and attributes, but not by ``hideChildNodeTypes``
  or ``showHidden``; it does not watch the scene (a removed node reads as None on the next call);
* ``qMRMLSegmentSelectorWidget`` accepts any segment id string (Slicer's lists the segments);
* the layout manager, plots logic and slice views record what they were asked and draw nothing;
  ``setSliceViewerLayers`` only sets the composite nodes (no fit);
* dialogs answer from :data:`ANSWERS` (confirm: True unless told; file dialogs: a path the test
  sets); ``pip_install`` "installs" by lifting the import block of :class:`ImportBlocker`;
* ``slicer.app.testingEnabled()`` is False, so ``tryWithErrorDisplay`` shows its dialog;
* the scene gets what Slicer's always has (crosshair, three slice composite nodes, a selection
  node, the sequence-browser class) from :func:`new_scene`, not from the application's start-up.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import inspect
import os
import sys
import tempfile
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

#: (signal, slot, exception) of every exception a slot raised (PythonQt prints them and goes on).
SLOT_ERRORS: list = []
#: What dialogs answer and what they were asked.
ANSWERS = {"confirm": True, "save_file": ""}
DIALOGS: list = []  # (kind, text)
PIP_CALLS: list = []
CALLS: list = []  # (what, details) of recording stand-ins: layouts, charts, slice layers
TIMERS: list = []


# --- PythonQt: signals and slots -------------------------------------------------------------------
def slot_argument_count(slot, available: int) -> int:
    """How many signal arguments PythonQt passes to ``slot``: its positional parameter count,
    defaults included, capped by what the signal has; all of them for ``*args`` or non-functions."""
    function = getattr(slot, "__func__", slot)
    code = getattr(function, "__code__", None)
    if code is None:
        return available
    if code.co_flags & inspect.CO_VARARGS:
        return available
    count = code.co_argcount - (1 if inspect.ismethod(slot) else 0)
    return min(count, available)


class _Signal:
    def __init__(self, owner, signature):
        self.owner, self.signature, self.slots = owner, signature, []

    def emit(self, *args):
        for slot in list(self.slots):
            try:
                slot(*args[:slot_argument_count(slot, len(args))])
            except Exception as exc:  # noqa: BLE001 - PythonQt prints it and returns to the event loop
                SLOT_ERRORS.append((f"{type(self.owner).__name__}.{self.signature}", getattr(slot, "__name__", slot), exc))


class QObject:
    SIGNALS: tuple = ("destroyed()", "objectNameChanged(QString)")

    def __init__(self, parent=None):
        self.__dict__["_signals"] = {}
        self.objectName = ""
        self._parent = None
        self._children = []
        if parent is not None:
            self.setParent(parent)

    @classmethod
    def _all_signals(cls):
        names = []
        for klass in cls.__mro__:
            names += list(getattr(klass, "SIGNALS", ()))
        return names

    def signal(self, signature) -> _Signal:
        if signature not in self._all_signals():
            raise ValueError(f"{type(self).__name__} has no signal {signature!r}")
        return self._signals.setdefault(signature, _Signal(self, signature))

    def connect(self, signature, slot):
        if not isinstance(signature, str):
            raise TypeError("PythonQt connections take a string signature such as 'clicked(bool)'")
        self.signal(signature).slots.append(slot)
        return True

    def disconnect(self, signature, slot=None):
        sig = self.signal(signature)
        sig.slots = [s for s in sig.slots if slot is not None and s != slot]
        return True

    def emit(self, signature, *args):
        if signature in self._signals:
            self._signals[signature].emit(*args)

    @property
    def name(self):  # PythonQt's alias of objectName (slicer.util.childWidgetVariables reads it)
        return self.objectName

    def setParent(self, parent):
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def parent(self):
        return self._parent

    def children(self):
        return list(self._children)

    def findChildren(self):
        out = []
        for child in self._children:
            out.append(child)
            out += child.findChildren()
        return out

    def deleteLater(self):
        self.setParent(None)


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.visible = True
        self.enabled = True
        self.toolTip = ""
        self._layout = None

    def layout(self):
        return self._layout

    def setLayout(self, layout):
        self._layout = layout
        layout._owner = self

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False


class _LayoutItem:
    def __init__(self, widget):
        self._widget = widget

    def widget(self):
        return self._widget


class QLayout(QObject):
    def __init__(self, parent=None):
        super().__init__()
        self._items = []
        self._owner = None
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def _adopt(self, widget):
        if isinstance(widget, QObject) and self._owner is not None:
            widget.setParent(self._owner)

    def addWidget(self, widget, *args):
        self._adopt(widget)
        self._items.append(_LayoutItem(widget))

    def count(self):
        return len(self._items)

    def takeAt(self, index):
        return self._items.pop(index)


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    def addRow(self, *args):
        for item in args:
            if isinstance(item, QWidget):
                self.addWidget(item)
            elif isinstance(item, str):
                self.addWidget(QLabel(item))


class QLabel(QWidget):
    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.wordWrap = False


class QAbstractButton(QWidget):
    SIGNALS = ("clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()")

    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self.__dict__["_checked"] = False

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        value = bool(value)
        if value != self._checked:
            self.__dict__["_checked"] = value
            self.emit("toggled(bool)", value)

    def setChecked(self, value):
        self.checked = value

    def isChecked(self):
        return self._checked

    def click(self):
        """A user's click: nothing happens on a disabled button (as in Qt)."""
        if not self.enabled:
            return False
        if self.checkable:
            self.checked = not self.checked
        self.emit("clicked()")
        self.emit("clicked(bool)", self.checked)
        return True


class QPushButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    def __init__(self, text="", parent=None):
        super().__init__(text, parent)
        self.checkable = True


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._entries = []
        self._index = -1

    def addItem(self, text, data=None):
        self._entries.append((text, data))
        if self._index < 0:
            self.setCurrentIndex(0)

    def count(self):
        return len(self._entries)

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self._entries) if d == data), -1)

    def findText(self, text):
        return next((i for i, (t, _) in enumerate(self._entries) if t == text), -1)

    def setCurrentIndex(self, index):
        index = index if -1 <= index < len(self._entries) else self._index
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentTextChanged(QString)", self.currentText)

    @property
    def currentIndex(self):
        return self._index

    @property
    def currentData(self):
        return self._entries[self._index][1] if self._index >= 0 else None

    @property
    def currentText(self):
        return self._entries[self._index][0] if self._index >= 0 else ""

    def itemData(self, index):
        return self._entries[index][1]


class _SpinBox(QWidget):
    SIGNAL = "valueChanged(double)"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum = 0.0, 99.0
        self.decimals = 2
        self.singleStep = 1.0
        self.specialValueText = ""
        self.suffix = ""
        self.__dict__["_value"] = 0.0

    def _convert(self, value):
        return round(float(value), self.decimals)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):  # Qt clamps to the range and rounds to the decimals
        value = self._convert(min(max(value, self.minimum), self.maximum))
        if value != self._value:
            self.__dict__["_value"] = value
            self.emit(self.SIGNAL, value)

    def setValue(self, value):
        self.value = value

    def setRange(self, low, high):
        self.minimum, self.maximum = low, high
        self.value = self._value


class QDoubleSpinBox(_SpinBox):
    SIGNALS = ("valueChanged(double)", "valueChanged(QString)")


class QSpinBox(_SpinBox):
    SIGNALS = ("valueChanged(int)", "valueChanged(QString)")
    SIGNAL = "valueChanged(int)"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self.__dict__["_value"] = 0, 99, 0

    def _convert(self, value):
        return int(round(value))


class QProgressBar(QWidget):
    """``history``: every value the panel set, so a test sees progress however the events were
    batched between two polls (under load the worker's progress can arrive with its final event)."""

    SIGNALS = ("valueChanged(int)",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.history = []
        self.value, self.minimum, self.maximum = 0, 0, 100

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v):
        self._value = v
        self.history.append(v)


class QPlainTextEdit(QWidget):
    SIGNALS = ("textChanged()",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lines = []
        self.readOnly = False

    def appendPlainText(self, text):
        self._lines.append(str(text))

    def clear(self):
        self._lines = []

    def toPlainText(self):
        return "\n".join(self._lines)


class QTimer(QObject):
    """Fired by :func:`process_events` (the test's event loop), never by a thread."""

    SIGNALS = ("timeout()",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._interval, self._single, self._due = 0, False, None
        TIMERS.append(self)

    def setInterval(self, ms):
        self._interval = ms

    def setSingleShot(self, single):
        self._single = bool(single)

    def start(self, ms=None):
        if ms is not None:
            self._interval = ms
        self._due = time.monotonic() + self._interval / 1000.0

    def stop(self):
        self._due = None

    def isActive(self):
        return self._due is not None

    @staticmethod
    def singleShot(ms, callable_):
        timer = QTimer()
        timer.setSingleShot(True)
        timer.connect("timeout()", callable_)
        timer.start(ms)

    def _fire_if_due(self, now):
        if self._due is not None and now >= self._due:
            self._due = None if self._single else now + self._interval / 1000.0
            self.emit("timeout()")
            return True
        return False


def process_events(duration: float = 0.0) -> None:
    """Run the stand-in event loop for ``duration`` seconds (at least one pass)."""
    end = time.monotonic() + duration
    while True:
        now = time.monotonic()
        for timer in list(TIMERS):
            timer._fire_if_due(now)
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def wait_until(condition, timeout: float = 120.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        process_events(0.05)


class QFileDialog:
    @staticmethod
    def getSaveFileName(parent=None, caption="", directory="", filters=""):
        DIALOGS.append(("save", caption))
        return ANSWERS["save_file"]


class QDir:
    @staticmethod
    def homePath():
        return str(Path.home())


class Qt:
    WaitCursor = 3


# --- CTK and qMRML widgets ----------------------------------------------------------------------------
class ctkCollapsibleButton(QAbstractButton):
    SIGNALS = ("contentsCollapsed(bool)",)

    def __init__(self, parent=None):
        super().__init__("", parent)
        self.collapsed = False


class ctkSliderWidget(QWidget):
    SIGNALS = ("valueChanged(double)",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self.singleStep = 0.0, 99.0, 1.0
        self.__dict__["_value"] = 0.0

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        value = min(max(float(value), self.minimum), self.maximum)
        if value != self._value:
            self.__dict__["_value"] = value
            self.emit("valueChanged(double)", value)


class qMRMLWidget(QWidget):
    SIGNALS = ("mrmlSceneChanged(vtkMRMLScene*)",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):
    SIGNALS = ("currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)", "currentNodeIDChanged(QString)",
               "nodeAdded(vtkMRMLNode*)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes = []
        self.noneEnabled = self.addEnabled = self.removeEnabled = self.renameEnabled = self.editEnabled = False
        self.showChildNodeTypes = True
        self.hideChildNodeTypes = []
        self._attributes = []
        self._node = None

    def addAttribute(self, node_type, name, value=None):
        self._attributes.append((node_type, name, value))

    def _accepts(self, node):
        if node is None:
            return True
        if self._scene is None or node.GetScene() is not self._scene or self._scene.GetNodeByID(node.GetID()) is not node:
            return False
        if not any(node.IsA(t) for t in self.nodeTypes):
            return False
        for node_type, name, value in self._attributes:
            if node.IsA(node_type) and (node.GetAttribute(name) is None or (value is not None and node.GetAttribute(name) != value)):
                return False
        return True

    def currentNode(self):
        if self._node is not None and not self._accepts(self._node):
            self._node = None  # removed from the scene (the real combo box notices at once)
        return self._node

    def setCurrentNode(self, node):
        if not self._accepts(node):
            return  # Slicer's combo box cannot select a node it does not list
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)

    def setMRMLScene(self, scene):
        super().setMRMLScene(scene)
        self.currentNode()


class qMRMLSegmentSelectorWidget(qMRMLNodeComboBox):
    SIGNALS = ("currentSegmentChanged(QString)", "segmentSelectionChanged(QStringList)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes = ["vtkMRMLSegmentationNode"]
        self._segment = ""

    def currentSegmentID(self):
        return self._segment if self.currentNode() is not None else ""

    def setCurrentSegmentID(self, segment_id):
        if segment_id != self._segment:
            self._segment = segment_id or ""
            self.emit("currentSegmentChanged(QString)", self._segment)


WIDGET_CLASSES = {c.__name__: c for c in (QWidget, QLabel, QPushButton, QCheckBox, QComboBox, QSpinBox, QDoubleSpinBox,
                                          QProgressBar, QPlainTextEdit, ctkCollapsibleButton, ctkSliderWidget,
                                          qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentSelectorWidget)}
LAYOUT_CLASSES = {"QVBoxLayout": QVBoxLayout, "QHBoxLayout": QHBoxLayout, "QFormLayout": QFormLayout,
                  "QGridLayout": QFormLayout}


def _property_value(element):
    child = element[0]
    if child.tag in ("string", "enum", "set", "cstring"):
        return child.text or ""
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text)
    if child.tag == "double":
        return float(child.text)
    if child.tag == "stringlist":
        return [s.text for s in child.findall("string")]
    return None


def load_ui(path):
    """Widgets, layouts, properties and designer connections of a .ui file, as stand-ins."""
    root = ET.parse(path).getroot()
    named = {}

    def build(element, parent):
        cls = WIDGET_CLASSES.get(element.get("class"))
        if cls is None:
            raise RuntimeError(f"{path}: no stand-in for widget class {element.get('class')}")
        widget = cls(parent)
        widget.objectName = element.get("name")
        named[widget.objectName] = widget
        for prop in element.findall("property"):
            value = _property_value(prop)
            if value is not None and prop.get("name") not in ("geometry", "sizePolicy", "textInteractionFlags"):
                setattr(widget, prop.get("name"), value)
        for layout in element.findall("layout"):
            build_layout(layout, widget)
        return widget

    def build_layout(element, owner):
        layout = LAYOUT_CLASSES[element.get("class")](owner)
        for item in element.findall("item"):
            for child in item:
                if child.tag == "widget":
                    layout.addWidget(build(child, owner))
                elif child.tag == "layout":
                    build_layout(child, owner)
        return layout

    top = build(root.find("widget"), None)
    for connection in root.iter("connection"):
        sender, receiver = named[connection.findtext("sender")], named[connection.findtext("receiver")]
        slot = connection.findtext("slot").split("(")[0]
        sender.connect(connection.findtext("signal"), getattr(receiver, slot))
    return top


def child_widget_variables(widget):
    ui = types.SimpleNamespace()
    for child in widget.findChildren():
        if child.name:
            setattr(ui, child.name, child)
    return ui


# --- slicer.ScriptedLoadableModule ---------------------------------------------------------------------
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else QWidget()
        if self.parent.layout() is None:
            QVBoxLayout(self.parent)
        self.layout = self.parent.layout()
        # qSlicerAbstractModuleWidget's isEntered property: Slicer sets it while the module is shown (a test sets it)
        if not hasattr(self.parent, "isEntered"):
            self.parent.isEntered = False
        self.moduleName = type(self).__name__.removesuffix("Widget")

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(inspect.getfile(type(self))), "Resources", filename)

    def setup(self):  # Slicer adds the Reload & Test section here in developer mode
        pass


class ScriptedLoadableModuleLogic:
    """``getParameterNode`` as Slicer's: a singleton vtkMRMLScriptedModuleNode tagged with the module name."""

    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node = slicer.mrmlScene.AddNode(node)
        elif node.GetAttribute("ModuleName") != self.moduleName:
            node.SetAttribute("ModuleName", self.moduleName)
        return node


# --- imports made impossible, and "installed" by pip ------------------------------------------------
class ImportBlocker(importlib.abc.MetaPathFinder):
    """Makes top-level packages unimportable, as on a stock Slicer that lacks them."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{name}' (not bundled with Slicer)", name=name)
        return None

    def install(self):
        sys.meta_path.insert(0, self)
        for name in list(sys.modules):
            if name.split(".")[0] in self.names:
                del sys.modules[name]
        return self


BLOCKER: ImportBlocker | None = None
PIP_TO_MODULE = {"nibabel": "nibabel", "scikit-learn": "sklearn", "matplotlib": "matplotlib", "torch": "torch"}


#: set True to make pip_install / installTorch fail as Slicer's do offline (CalledProcessError from the pip run)
PIP_FAILS = False


def pip_install(requirements, **kwargs):
    PIP_CALLS.append(requirements)
    if PIP_FAILS:
        import subprocess

        raise subprocess.CalledProcessError(1, "pip install")
    names = requirements if isinstance(requirements, list) else requirements.split()
    if BLOCKER is not None:
        for requirement in names:
            base = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
            BLOCKER.names.discard(PIP_TO_MODULE.get(base, base))


# --- the application ----------------------------------------------------------------------------------
def make_launcher(folder) -> Path:
    """A ``PythonSlicer`` like CTK's launcher: starts this Python as its child, forwards no signal."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    launcher.write_text(f"#!{sys.executable}\n"
                        "import subprocess, sys\n"
                        "# like the CTK launcher: the real interpreter is a child; SIGTERM ends only this process\n"
                        "sys.exit(subprocess.Popen([sys.executable] + sys.argv[1:]).wait())\n", encoding="utf-8")
    launcher.chmod(0o755)
    return launcher


class _Recorder:
    def __init__(self, what):
        self.what = what

    def __getattr__(self, name):
        return lambda *args, **kwargs: CALLS.append((f"{self.what}.{name}", args))


class _App:
    def __init__(self, home):
        self.slicerHome = str(home)
        self.temporaryPath = str(Path(home) / "tmp")
        os.makedirs(self.temporaryPath, exist_ok=True)
        self._layout_manager = _Recorder("layoutManager")

    def connect(self, signature, slot):
        CALLS.append(("app.connect", (signature,)))
        return True

    def layoutManager(self):
        return self._layout_manager

    def applicationLogic(self):
        import slicer

        class _ApplicationLogic:
            def GetSelectionNode(self):
                return slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSelectionNode")

            def PropagateTableSelection(self):
                CALLS.append(("applicationLogic.PropagateTableSelection", ()))

        return _ApplicationLogic()

    def testingEnabled(self):
        return False

    def setOverrideCursor(self, cursor):
        pass

    def restoreOverrideCursor(self):
        pass

    def processEvents(self):
        process_events()


def new_scene(slicer):
    """Clear the scene and give it the singletons Slicer's application always has."""
    scene = slicer.mrmlScene
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    if scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetSingletonTag("default")
        scene.AddNode(crosshair)
    if scene.GetFirstNodeByClass("vtkMRMLSelectionNode") is None:
        selection = slicer.vtkMRMLSelectionNode()
        selection.SetSingletonTag("Singleton")
        scene.AddNode(selection)
    for view in ("Red", "Yellow", "Green"):
        if scene.GetSingletonNode(view, "vtkMRMLSliceCompositeNode") is None:
            composite = slicer.vtkMRMLSliceCompositeNode()
            composite.SetSingletonTag(view)
            scene.AddNode(composite)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return scene


def install(home=None, block=()):
    """Put the stand-ins in ``sys.modules`` beside the real slicer-core; returns the slicer module.

    ``block``: top-level packages to make unimportable first (nibabel, torch, ...)."""
    global BLOCKER
    if block:
        BLOCKER = ImportBlocker(block).install()
    home = Path(home or tempfile.mkdtemp(prefix="slicer-home-"))
    import slicer
    import slicer.util as util

    qt = types.ModuleType("qt")
    for name, value in list(globals().items()):
        if name.startswith("Q") and isinstance(value, type):
            setattr(qt, name, value)
    qt.Qt = Qt
    ctk = types.ModuleType("ctk")
    ctk.ctkCollapsibleButton, ctk.ctkSliderWidget = ctkCollapsibleButton, ctkSliderWidget
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    import unittest

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            CALLS.append(("delayDisplay", (message,)))

    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    sample_data = types.ModuleType("SampleData")
    sample_data.SOURCES = []

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            sample_data.SOURCES.append(types.SimpleNamespace(**kwargs))

    sample_data.SampleDataLogic = SampleDataLogic
    torch_utils = types.ModuleType("PyTorchUtils")

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            return importlib.util.find_spec("torch") is not None if BLOCKER is None or "torch" not in BLOCKER.names else False

        def installTorch(self, askConfirmation=True, torchVersionRequirement=None):
            DIALOGS.append(("installTorch", torchVersionRequirement))
            if PIP_FAILS:  # SlicerPyTorch runs light-the-torch through slicer.util._executePythonModule, which raises
                import subprocess

                raise subprocess.CalledProcessError(1, "light_the_torch")
            return None

    torch_utils.PyTorchUtilsLogic = PyTorchUtilsLogic
    sys.modules.update({"qt": qt, "ctk": ctk, "slicer.i18n": i18n, "slicer.ScriptedLoadableModule": slm,
                        "SampleData": sample_data, "PyTorchUtils": torch_utils})
    slicer.i18n, slicer.ScriptedLoadableModule = i18n, slm
    if getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = slicer.vtkMRMLScene()
    new_scene(slicer)
    slicer.app = _App(home)
    make_launcher(home / "bin")
    slicer.modules = types.SimpleNamespace(plots=types.SimpleNamespace(logic=lambda: _Recorder("plots")))

    def record_dialog(kind):
        def dialog(text, windowTitle=None, **kwargs):
            DIALOGS.append((kind, text))
            return ANSWERS["confirm"] if kind == "confirm" else None
        return dialog

    @contextlib.contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:
            if show:
                DIALOGS.append(("error", f"{message}\n\n{exc}" if message else str(exc)))
            raise

    def set_slice_viewer_layers(background="keep-current", foreground="keep-current", label="keep-current",
                                foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False):
        CALLS.append(("setSliceViewerLayers", (background, foreground)))
        scene = slicer.mrmlScene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if background != "keep-current":
                composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
            if foreground != "keep-current":
                composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)

    @contextlib.contextmanager
    def wait_cursor():
        yield

    class WaitCursor:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    util.loadUI = load_ui
    util.childWidgetVariables = child_widget_variables
    util.errorDisplay = record_dialog("error")
    util.warningDisplay = record_dialog("warning")
    util.infoDisplay = record_dialog("info")
    util.confirmOkCancelDisplay = record_dialog("confirm")
    util.pip_install = pip_install
    util.tryWithErrorDisplay = try_with_error_display
    util.setSliceViewerLayers = set_slice_viewer_layers
    util.WaitCursor = WaitCursor
    util.startupEnvironment = lambda: dict(os.environ)
    return slicer


def import_module_file(module_py):
    """BBBAnomaly.py as Slicer loads it: a module named after the file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("BBBAnomaly", module_py)
    module = importlib.util.module_from_spec(spec)
    sys.modules["BBBAnomaly"] = module
    spec.loader.exec_module(module)
    return module
