"""BBBAnomaly: 3D Slicer scripted module (Module, Widget, Logic, Test).

The science lives in the plain-Python package ``BBBAnomalyLib``; everything that touches MRML nodes
in ``BBBAnomalyLib.mrml`` (tested in CI with the slicer-core wheel). This file is only the panel:
it collects inputs, starts the background worker, shows progress and a log, and loads the results.

Rules this file follows (each one was a defect once; Testing/test_slicer_widget.py drives the panel
with stand-in widgets that follow PythonQt's rules):
* Slicer imports this file at start-up: nothing heavy at module level, and the panel opens with only
  what Slicer bundles (numpy, scipy, SimpleITK, vtk). Other packages are offered once, on first use.
* PythonQt passes a slot as many signal arguments as it has parameters, defaults included: every slot
  connected to a signal with arguments either takes them or is wrapped in a lambda that drops them.
* Cancel is final: the runner ends the worker's whole process tree and passes on nothing after it.
"""

import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MINIMUM_TORCH_VERSION = "2.1"
#: Packages BBBAnomalyLib needs that Slicer does not bundle: import name -> pip requirement.
#: numpy, scipy, SimpleITK and vtk come with Slicer and are never touched.
PIP_PACKAGES = {"nibabel": "nibabel>=5.0", "sklearn": "scikit-learn>=1.2", "matplotlib": "matplotlib>=3.6"}
SAMPLE_CATEGORY = "BBBAnomaly"


def _ensureLibraryImportable():
    """Make ``import BBBAnomalyLib`` work without importing it.

    In a built extension BBBAnomalyLib sits next to this file, in a directory Slicer puts on sys.path,
    and this does nothing. From a source checkout (BBBAnomaly/ added as a module path) the package is
    one level up; that folder is appended to sys.path (appended: it never shadows Slicer's packages).
    """
    if importlib.util.find_spec("BBBAnomalyLib") is not None:
        return
    repoRoot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(repoRoot, "BBBAnomalyLib", "__init__.py")) and repoRoot not in sys.path:
        sys.path.append(repoRoot)


_ensureLibraryImportable()  # only a path lookup


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


#
# BBBAnomaly
#


class BBBAnomaly(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BBBAnomaly")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["BBBAnomaly developers"]
        self.parent.helpText = _(
            "Maps blood-brain-barrier leakage, perfusion and tissue anomalies in glioma MRI with "
            "self-supervised and unsupervised deep learning, shown beside the classic model-based "
            "methods (Tofts/Patlak for DCE, SVD deconvolution for DSC).<br><br>"
            "Pick a pipeline, press <b>Load sample data</b> (or choose your own series, AIF ROI or segment, "
            "tumor and NAWM segments), press Apply, and keep working while it runs in the background. "
            "Results appear as overlays with a colour legend in a folder named after the input; <b>ROI ratios</b> "
            "gives the tumor/NAWM table, <b>Curves</b> the AIF and segment curves with the model's fit, and "
            "<b>Live curve</b> the curve of the voxel under the mouse. "
            "The same pipelines run without Slicer: <code>bbbanomaly --help</code>."
        )
        self.parent.acknowledgementText = _(
            "Developed by the BBBAnomaly developers. The learned methods reimplement published work "
            "on model-free DCE leakage mapping, physics-informed DSC autoencoders, diffusion MRI "
            "anomaly detection and contrast-free BBB assessment; see the project documentation for "
            "references and validation. The phantoms use MNI152 tissue maps (see NOTICE)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """One Sample Data entry per pipeline; the 'download' makes the phantom on this computer."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    for pipeline, sampleName in BBBAnomalyLogic.sampleNames().items():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY, sampleName=sampleName, uris=[f"bbbanomaly://phantom/{pipeline}"],
            fileNames=[f"{pipeline}-phantom"], nodeNames=[sampleName],
            thumbnailFileName=os.path.join(iconsPath, "BBBAnomaly.png"),
            customDownloader=lambda source, p=pipeline: BBBAnomalyLogic().loadSampleAsked(p))


#
# BBBAnomalyWidget
#


class BBBAnomalyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs and parameters from the pipeline registry, a background run, results."""

    AIF_SOURCES = (("auto", "Automatic"), ("roi", "Markups ROI"), ("segment", "Segment"))
    #: parameter-node name -> widget attribute, for the node selectors whose choice is kept in the scene
    NODE_SELECTORS = {"Input": "inputSelector", "SecondInput": "secondInputSelector", "AifRoi": "aifRoiSelector"}
    SEGMENT_SELECTORS = {"AifSegment": "aifSegmentSelector", "BrainSegment": "brainMaskSelector",
                         "NawmSegment": "nawmSegmentSelector", "TumorSegment": "tumorSegmentSelector"}

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.runner = None
        self.runRequest = None
        self.lastRun = None  # {"outputs", "request", "name", "event"} of the last finished run
        self.chartNode = None
        self.ratioTableNode = None
        self.curveCache = None  # (output_dir, CurveSet)
        self.parameterWidgets = {}
        self.parametersReady = False
        self._parameterNode = None
        self._updatingGUI = False
        self._crosshairNode = None
        self._dependenciesDeclined = False
        self._lastLogMessage = None

    # --- opening the panel ------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BBBAnomaly.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)  # the .ui passes the scene on to each MRML widget
        self.logic = BBBAnomalyLogic()

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.liveCurveTimer = qt.QTimer()  # the live curve follows the mouse at most every 100 ms
        self.liveCurveTimer.setSingleShot(True)
        self.liveCurveTimer.setInterval(100)
        self.liveCurveTimer.connect("timeout()", self.updateLiveCurve)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        try:
            version = self.logic.libraryVersion()
            from BBBAnomalyLib.pipelines import PIPELINES
        except Exception as exc:  # a broken install must not stop the panel from opening
            logging.exception("BBBAnomaly: cannot import BBBAnomalyLib")
            self.ui.versionLabel.text = _("BBBAnomalyLib: not available")
            self.ui.statusLabel.text = _("Cannot import BBBAnomalyLib: {error}").format(error=exc)
            return
        self.ui.versionLabel.text = _("BBBAnomalyLib {version}").format(version=version)
        for spec in PIPELINES.values():
            self.ui.pipelineSelector.addItem(spec.label, spec.name)
        self.ui.pipelineSelector.setCurrentIndex(self.ui.pipelineSelector.findData("dsc"))
        for value, text in self.AIF_SOURCES:
            self.ui.aifSourceSelector.addItem(_(text), value)
        for value, text in (("auto", "Auto"), ("cpu", "CPU"), ("cuda", "CUDA")):
            self.ui.deviceSelector.addItem(_(text), value)
        self.ui.outputMapSelector.addAttribute("vtkMRMLScalarVolumeNode", "BBBAnomaly.Map")

        # Slots that take no argument are connected to signals whose arguments they must not get.
        self.ui.pipelineSelector.connect("currentIndexChanged(int)", lambda index: self.onPipelineChanged())
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.onInputChanged())
        self.ui.aifSourceSelector.connect("currentIndexChanged(int)", lambda index: self.onGUIChanged())
        for name in ("secondInputSelector", "aifRoiSelector"):
            getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.onGUIChanged())
        for name in self.SEGMENT_SELECTORS.values():
            getattr(self.ui, name).connect("currentSegmentChanged(QString)", lambda segment: self.onGUIChanged())
            getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.onGUIChanged())
        for box in self.acquisitionBoxes().values():
            box.connect("valueChanged(double)", lambda value: self.onGUIChanged())
        self.ui.deviceSelector.connect("currentIndexChanged(int)", lambda index: self.onGUIChanged())
        self.ui.replaceCheckBox.connect("toggled(bool)", lambda checked: self.onGUIChanged())
        self.ui.applyButton.connect("clicked(bool)", lambda checked: self.onApply())
        self.ui.cancelButton.connect("clicked(bool)", lambda checked: self.onCancel())
        self.ui.loadSampleButton.connect("clicked(bool)", lambda checked: self.onLoadSample())
        self.ui.installButton.connect("clicked(bool)", lambda checked: self.onInstall())
        self.ui.outputMapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOverlayChanged)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.ratiosButton.connect("clicked(bool)", lambda checked: self.onRatios())
        self.ui.curvesButton.connect("clicked(bool)", lambda checked: self.onCurves())
        self.ui.voxelCurveButton.connect("clicked(bool)", lambda checked: self.onVoxelCurve())
        self.ui.exportButton.connect("clicked(bool)", lambda checked: self.onExport())
        self.ui.liveCurveCheckBox.connect("toggled(bool)", self.onLiveCurveToggled)

        self.updateDependencyBanner()
        self.initializeParameterNode()
        self.onPipelineChanged()

    def cleanup(self):
        self.removeObservers()
        if self.runner is not None and not self.runner.finished:
            self.runner.cancel()
        for timer in ("pollTimer", "liveCurveTimer"):
            if hasattr(self, timer):
                getattr(self, timer).stop()

    def enter(self):
        self.initializeParameterNode()

    # --- dependencies -------------------------------------------------------------------------------
    def updateDependencyBanner(self):
        missing = self.logic.missingPackages()
        self.ui.dependencyWidget.visible = bool(missing)
        self.ui.dependencyLabel.text = _(
            "BBBAnomaly needs Python packages that Slicer does not bundle: {packages}. They are installed "
            "once, after you confirm.").format(packages=", ".join(missing)) if missing else ""
        return missing

    def ensurePanelDependencies(self):
        """Offer the missing packages (once per session unless the user asks again); True when all are there."""
        missing = self.logic.missingPackages()
        if not missing:
            return True
        if self._dependenciesDeclined:
            self.ui.statusLabel.text = _("Install the packages first (Install button above).")
            return False
        if not self.logic.installPackages(missing, ask=True):
            self._dependenciesDeclined = True
            self.ui.statusLabel.text = _("Missing Python packages ({packages}); nothing was done.").format(
                packages=", ".join(missing))
            return False
        self.updateDependencyBanner()
        self.onPipelineChanged()  # forms that needed the packages can be built now
        return True

    def onInstall(self):
        self._dependenciesDeclined = False
        self.ensurePanelDependencies()

    # --- the pipeline's inputs and parameters ----------------------------------------------------
    def currentSpec(self):
        from BBBAnomalyLib.pipelines import get_pipeline

        return get_pipeline(self.ui.pipelineSelector.currentData or "dsc")

    def acquisitionBoxes(self):
        return {"frame_interval": self.ui.frameIntervalSpinBox, "echo_time": self.ui.echoTimeSpinBox,
                "repetition_time": self.ui.repetitionTimeSpinBox, "flip_angle": self.ui.flipAngleSpinBox}

    def onPipelineChanged(self):
        spec = self.currentSpec()
        if self._parameterNode is not None:  # first, so that restoring below does not switch back
            self._parameterNode.SetParameter("Pipeline", spec.name)
        self.ui.pipelineDescriptionLabel.text = spec.description + (
            "" if spec.available else "<br><i>" + _("Not available yet: {why}").format(why=spec.unavailable) + "</i>")
        positional = [s for s in spec.inputs if s.positional]
        self.ui.inputLabel.text = positional[0].label + ":"
        self.ui.inputSelector.toolTip = positional[0].tooltip
        self.ui.secondInputLabel.text = (positional[1].label + ":") if len(positional) > 1 else ""
        self.buildParameterWidgets(spec)
        self.ui.deviceLabel.text = self.logic.deviceSummary()
        self.updateVisibility()
        self.restoreChoices()
        self.onInputChanged()

    def buildParameterWidgets(self, spec):
        for layout in (self.ui.parametersWidget.layout(), self.ui.advancedCollapsibleButton.layout()):
            while layout.count():
                item = layout.takeAt(0)
                if item.widget():
                    item.widget().deleteLater()
        self.parameterWidgets = {}
        try:  # the defaults come from the pipeline's parameter class, whose package may need nibabel
            defaults = spec.default_parameters()
        except ImportError as exc:
            self.parametersReady = False
            self.ui.parametersWidget.layout().addRow(qt.QLabel(_("Parameters appear once the missing packages are "
                                                                 "installed ({error}).").format(error=exc)))
            self.updateDependencyBanner()
            return
        self.parametersReady = True
        for p in spec.parameters:
            value = defaults[p.name]
            if p.choices:
                widget = qt.QComboBox()
                for choice, text in p.choices:
                    widget.addItem(text, choice)
                widget.setCurrentIndex(max(widget.findData(value), 0))
                signal = "currentIndexChanged(int)"
            elif isinstance(value, bool):
                widget = qt.QCheckBox()
                widget.checked = value
                signal = "toggled(bool)"
            elif p.decimals == 0:
                widget = qt.QSpinBox()
                widget.setRange(int(p.minimum or 0), int(p.maximum or 1000))
                widget.value = int(value)
                signal = "valueChanged(int)"
            else:
                widget = qt.QDoubleSpinBox()
                widget.decimals = p.decimals
                widget.setRange(p.minimum if p.minimum is not None else -1e6, p.maximum if p.maximum is not None else 1e6)
                widget.singleStep = 10 ** -p.decimals * 5
                if p.optional:  # the minimum stands for None ("unknown")
                    widget.specialValueText = _("unknown")
                widget.value = float(value) if value is not None else widget.minimum
                signal = "valueChanged(double)"
            widget.toolTip = p.tooltip
            widget.connect(signal, lambda value: self.onGUIChanged())  # e.g. concentration input needs no TE
            layout = (self.ui.advancedCollapsibleButton if p.advanced else self.ui.parametersWidget).layout()
            layout.addRow(p.label + ":", widget)
            self.parameterWidgets[p.name] = widget
        self.ui.advancedCollapsibleButton.visible = any(p.advanced for p in spec.parameters)

    def parameterValues(self):
        values = {}
        optional = {p.name for p in self.currentSpec().parameters if p.optional}
        for name, widget in self.parameterWidgets.items():
            if isinstance(widget, qt.QComboBox):
                values[name] = widget.currentData
            elif isinstance(widget, qt.QCheckBox):
                values[name] = bool(widget.checked)
            else:
                values[name] = None if name in optional and widget.value == widget.minimum else widget.value
        if self.currentSpec().uses_device:
            values["device"] = self.ui.deviceSelector.currentData
        return values

    def updateVisibility(self):
        spec = self.currentSpec()
        keys = {s.key for s in spec.inputs}
        positional = [s for s in spec.inputs if s.positional]
        source = self.ui.aifSourceSelector.currentData
        rows = {
            ("secondInputLabel", "secondInputSelector"): len(positional) > 1,
            ("aifSourceLabel", "aifSourceSelector"): "aif_mask" in keys,
            ("aifRoiLabel", "aifRoiSelector"): "aif_mask" in keys and source == "roi",
            ("aifSegmentLabel", "aifSegmentSelector"): "aif_mask" in keys and source == "segment",
            ("brainMaskLabel", "brainMaskSelector"): "brain_mask" in keys,
            ("nawmLabel", "nawmSegmentSelector"): "nawm_mask" in keys,
            ("tumorLabel", "tumorSegmentSelector"): "tumor_mask" in keys,
        }
        for names, visible in rows.items():
            for name in names:
                getattr(self.ui, name).visible = visible
        acquisition = {a.name for a in spec.acquisition}
        for name, box in self.acquisitionBoxes().items():
            box.visible = name in acquisition
            getattr(self.ui, box.objectName.replace("SpinBox", "Label")).visible = name in acquisition
        self.ui.acquisitionCollapsibleButton.visible = bool(acquisition)
        self.ui.deviceWidget.visible = spec.uses_device
        self.updateApplyState()

    def onInputChanged(self):
        node = self.ui.inputSelector.currentNode()
        self.ui.inputInfoLabel.text = ""
        for box in self.acquisitionBoxes().values():
            box.value = 0.0  # "unknown" until read or typed
        if node is not None:
            try:
                from BBBAnomalyLib import mrml

                info = mrml.describe_input(node)
            except ImportError as exc:
                self.ui.inputInfoLabel.text = _("Install the missing packages to read this input ({error}).").format(
                    error=exc)
            except Exception as exc:  # describe only reads attributes; show what is wrong
                self.ui.inputInfoLabel.text = str(exc)
            else:
                self.ui.inputInfoLabel.text = info.summary()
                acq = info.acquisition
                for name, value, scale in (("frame_interval", info.frame_interval, 1.0),
                                           ("echo_time", acq.echo_time, 1e3),
                                           ("repetition_time", acq.repetition_time, 1e3),
                                           ("flip_angle", acq.flip_angle, 1.0)):
                    if value is not None:
                        self.acquisitionBoxes()[name].value = value * scale
        self.onGUIChanged()

    def onGUIChanged(self):
        if self._updatingGUI:
            return
        self.updateVisibility()
        self.updateParameterNodeFromGUI()

    # --- parameter node: the panel's choices live in the scene and are saved with it ----------------
    def initializeParameterNode(self):
        if self.logic is None or not hasattr(self, "ui"):
            return
        self._parameterNode = self.logic.getParameterNode()
        self.updateGUIFromParameterNode()

    def updateParameterNodeFromGUI(self):
        node = self._parameterNode
        if node is None or self._updatingGUI or not self.parametersReady:
            return
        wasModified = node.StartModify()
        pipeline = self.ui.pipelineSelector.currentData or "dsc"
        node.SetParameter("Pipeline", pipeline)
        node.SetParameter(f"{pipeline}.Parameters", json.dumps(self.parameterValues()))
        node.SetParameter("AifSource", self.ui.aifSourceSelector.currentData or "auto")
        node.SetParameter("Device", self.ui.deviceSelector.currentData or "auto")
        node.SetParameter("Replace", "true" if self.ui.replaceCheckBox.checked else "false")
        for role, name in self.NODE_SELECTORS.items():
            selected = getattr(self.ui, name).currentNode()
            node.SetNodeReferenceID(role, selected.GetID() if selected else None)
        for role, name in self.SEGMENT_SELECTORS.items():
            selector = getattr(self.ui, name)
            segmentation = selector.currentNode()
            node.SetNodeReferenceID(role, segmentation.GetID() if segmentation else None)
            node.SetParameter(role + "ID", selector.currentSegmentID() or "")
        node.EndModify(wasModified)

    def updateGUIFromParameterNode(self):
        """The stored pipeline (switching rebuilds its form and restores it), or the stored choices."""
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        index = self.ui.pipelineSelector.findData(node.GetParameter("Pipeline") or "")
        if index >= 0 and index != self.ui.pipelineSelector.currentIndex:
            self.ui.pipelineSelector.setCurrentIndex(index)  # -> onPipelineChanged -> restoreChoices
        else:
            self.restoreChoices()

    def restoreChoices(self):
        """Parameter values of the current pipeline, selected nodes and options, from the parameter node."""
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            stored = node.GetParameter(f"{self.ui.pipelineSelector.currentData}.Parameters")
            for name, value in (json.loads(stored) if stored else {}).items():
                widget = self.parameterWidgets.get(name)
                if widget is None:
                    continue
                if isinstance(widget, qt.QComboBox):
                    widget.setCurrentIndex(max(widget.findData(value), 0))
                elif isinstance(widget, qt.QCheckBox):
                    widget.checked = bool(value)
                else:
                    widget.value = widget.minimum if value is None else value
            for key, selector in (("AifSource", self.ui.aifSourceSelector), ("Device", self.ui.deviceSelector)):
                if node.GetParameter(key):
                    selector.setCurrentIndex(max(selector.findData(node.GetParameter(key)), 0))
            self.ui.replaceCheckBox.checked = node.GetParameter("Replace") == "true"
            for role, name in self.NODE_SELECTORS.items():
                if node.GetNodeReference(role) is not None:
                    getattr(self.ui, name).setCurrentNode(node.GetNodeReference(role))
            for role, name in self.SEGMENT_SELECTORS.items():
                if node.GetNodeReference(role) is not None:
                    getattr(self.ui, name).setCurrentNode(node.GetNodeReference(role))
                    getattr(self.ui, name).setCurrentSegmentID(node.GetParameter(role + "ID"))
        finally:
            self._updatingGUI = False
        self.updateVisibility()

    # --- Apply -------------------------------------------------------------------------------------
    def collectRegion(self, key):
        """The region chosen for an input key: ROI node, (segmentation node, segment id) or None."""
        if key == "aif_mask":
            source = self.ui.aifSourceSelector.currentData
            if source == "roi":
                return self.ui.aifRoiSelector.currentNode()
            if source != "segment":
                return None
            selector = self.ui.aifSegmentSelector
        else:
            selector = {"brain_mask": self.ui.brainMaskSelector, "nawm_mask": self.ui.nawmSegmentSelector,
                        "tumor_mask": self.ui.tumorSegmentSelector}[key]
        node, segment = selector.currentNode(), selector.currentSegmentID()
        return (node, segment) if node is not None and segment else None

    def collectRequest(self):
        from BBBAnomalyLib.mrml import RunRequest
        from BBBAnomalyLib.pipelines import InputRole

        spec = self.currentSpec()
        images = [self.ui.inputSelector.currentNode(), self.ui.secondInputSelector.currentNode()]
        inputs = {s.key: images.pop(0) if s.role is not InputRole.REGION else self.collectRegion(s.key)
                  for s in spec.inputs}
        acquisition = {}
        for a in spec.acquisition:
            box = self.acquisitionBoxes()[a.name]
            acquisition[a.name] = box.value * a.to_si if box.value > 0 else None
        return RunRequest(spec.name, inputs, self.parameterValues(), acquisition)

    def missingInputs(self):
        """Why Apply cannot run now (empty when it can); the rules live in PipelineSpec.missing."""
        if not self.parametersReady:
            return [_("the Python packages named above (Install)")]
        request = self.collectRequest()
        chosen = ("aif_mask",) if "aif_mask" in request.inputs and self.ui.aifSourceSelector.currentData != "auto" else ()
        return self.currentSpec().missing(request.inputs, request.acquisition, request.parameters, chosen)

    def updateApplyState(self):
        running = self.runner is not None and not self.runner.finished
        missing = self.missingInputs() if self.logic is not None else []
        self.ui.applyButton.enabled = not running and not missing
        self.ui.applyButton.toolTip = (_("Missing: {what}").format(what="; ".join(missing)) if missing
                                       else _("Run {pipeline} in the background").format(pipeline=self.currentSpec().label))
        self.ui.cancelButton.enabled = running and not getattr(self.runner, "cancelled", False)
        self.ui.loadSampleButton.enabled = not running
        hasRun = self.lastRun is not None
        for button in (self.ui.ratiosButton, self.ui.curvesButton, self.ui.voxelCurveButton, self.ui.exportButton,
                       self.ui.liveCurveCheckBox):
            button.enabled = hasRun

    def log(self, message):
        if message and message != self._lastLogMessage:
            self.ui.logTextEdit.appendPlainText(time.strftime("%H:%M:%S ") + message)
            self._lastLogMessage = message

    def onApply(self):
        from BBBAnomalyLib.errors import InputError

        if not self.ensurePanelDependencies():
            return
        spec = self.currentSpec()
        if spec.torch_needed(self.parameterValues()) and not self.logic.ensureTorch():
            self.ui.statusLabel.text = _("This pipeline needs PyTorch; nothing was run.")
            return
        request = self.collectRequest()
        self.ui.logTextEdit.clear()
        self._lastLogMessage = None
        try:
            with slicer.util.WaitCursor():
                self.runner = self.logic.startRun(request)
        except InputError as exc:
            self.ui.statusLabel.text = str(exc)
            self.log(str(exc))
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: cannot start"))
            return
        self.runRequest = request
        self.log(_("{pipeline}: inputs written to {folder}").format(
            pipeline=spec.label, folder=os.path.dirname(self.runner.job.output_dir)))
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Starting {pipeline}...").format(pipeline=spec.label)
        self.runStarted = time.monotonic()
        self.pollTimer.start()
        self.updateApplyState()

    def onCancel(self):
        if self.runner is not None and not self.runner.finished:
            self.ui.statusLabel.text = _("Cancelling...")
            self.log(_("cancel requested: stopping the worker and every process it started"))
            self.runner.cancel()
            self.updateApplyState()

    def onPoll(self):
        runner = self.runner
        if runner is None:
            self.pollTimer.stop()
            return
        for event in runner.poll():
            kind = event["event"]
            if kind == "started":
                self.log(_("worker started (process {pid})").format(pid=event.get("pid")))
            elif kind == "log":
                self.log(event.get("message", ""))
                if event.get("message", "").startswith("device:"):
                    self.ui.deviceLabel.text = event["message"]
            elif kind == "progress":
                self.ui.progressBar.value = int(100 * event["fraction"])
                self.ui.statusLabel.text = event["message"]
                self.log(event["message"])
            elif kind == "done":
                self.onRunDone(runner, event)
            elif kind == "error":
                self.ui.statusLabel.text = _("Failed: {message}").format(message=event["message"])
                self.log(_("error: {message}").format(message=event["message"])
                         + (f" ({_('details in')} {event['log']})" if event.get("log") else ""))
                slicer.util.errorDisplay(event["message"], windowTitle=_("BBBAnomaly"))
            elif kind == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
                self.log(_("cancelled; the worker has ended and nothing was imported"))
        if runner.finished:
            self.pollTimer.stop()
            self.ui.progressBar.visible = False
            self.logic.cleanupRun(runner)
            self.updateApplyState()

    def onRunDone(self, runner, event):
        if runner is not self.runner or getattr(runner, "cancelled", False):
            return  # belt and braces: the runner already drops everything after Cancel
        request = self.runRequest
        try:
            with slicer.util.WaitCursor():
                outputs = self.logic.finishRun(runner, request, replace=self.ui.replaceCheckBox.checked,
                                               opacity=self.ui.opacitySlider.value)
        except Exception as exc:
            logging.exception("BBBAnomaly: loading the results failed")
            self.ui.statusLabel.text = _("Could not load the results: {error}").format(error=exc)
            return
        self.lastRun = {"outputs": outputs, "request": request, "event": event,
                        "name": next(iter(outputs.map_nodes.values())).GetAttribute("BBBAnomaly.RunName")}
        self.curveCache = None
        self.ui.outputMapSelector.setCurrentNode(next(iter(outputs.map_nodes.values())))
        warnings = event.get("warnings") or []
        for warning in warnings:
            self.log(_("warning: {text}").format(text=warning))
        self.ui.statusLabel.text = _("Done in {seconds:.1f} s: {maps}.").format(
            seconds=time.monotonic() - self.runStarted, maps=", ".join(outputs.map_nodes)) + "".join(
            "\n" + _("Warning: ") + w for w in warnings)
        self.log(self.ui.statusLabel.text.splitlines()[0])

    # --- results ----------------------------------------------------------------------------------------
    def onOverlayChanged(self, node):
        """Show a map over the input of the run that made it (not whatever the input selector shows now)."""
        if node is None:
            return
        background = slicer.mrmlScene.GetNodeByID(node.GetAttribute("BBBAnomaly.InputNodeID") or "")
        siblings = self.lastRun["outputs"].map_nodes.values() if self.lastRun else ()
        self.logic.showOverlay(background, node, self.ui.opacitySlider.value, siblings)

    def onOpacityChanged(self, value):
        from BBBAnomalyLib import mrml

        mrml.set_overlay_opacity(value)

    def segmentMasks(self):
        """{label: mask} of the tumor and NAWM segments on the run's input grid."""
        regions = {"tumor": self.collectRegion("tumor_mask"), "NAWM": self.collectRegion("nawm_mask")}
        return self.logic.regionMasks(self.lastRun["request"], {k: v for k, v in regions.items() if v is not None})

    def onRatios(self):
        if self.lastRun is None:
            return
        try:
            masks = self.segmentMasks()
            if "tumor" not in masks:
                raise ValueError(_("pick a tumor segment (and a NAWM segment for the ratio)"))
            self.ratioTableNode = self.logic.ratioTable(self.lastRun["outputs"], masks["tumor"], masks.get("NAWM"),
                                                        name=f"{self.lastRun['name']} ROI ratios")
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: ROI ratios"))
            return
        self.logic.showTable(self.ratioTableNode)
        self.log(_("ROI ratio table: {name}").format(name=self.ratioTableNode.GetName()))

    def curves(self):
        from BBBAnomalyLib.curves import CurveSet

        outputDir = self.lastRun["outputs"].output_dir
        if self.curveCache is None or self.curveCache[0] != outputDir:
            path = os.path.join(outputDir, "curves.npz")
            if not os.path.isfile(path):
                raise ValueError(_("this pipeline keeps no curves"))
            self.curveCache = (outputDir, CurveSet.load(path))
        return self.curveCache[1]

    def plotCurves(self, masks, voxel):
        self.chartNode = self.logic.curvePlot(self.curves(), masks, voxel, self.chartNode,
                                              name=f"{self.lastRun['name']} curves")

    def onCurves(self):
        if self.lastRun is None:
            return
        try:
            self.plotCurves(self.segmentMasks(), None)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: curves"))

    def voxelAt(self, ras):
        return self.logic.voxelAt(self.lastRun["request"], ras)

    def onVoxelCurve(self):
        if self.lastRun is None:
            return
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        voxel = self.voxelAt(crosshair.GetCrosshairRAS()) if crosshair is not None else None
        if voxel is None:
            self.ui.statusLabel.text = _("The crosshair is not on the image: hold Shift and move the mouse over "
                                         "the image in a slice view to place it, then press the button again.")
            return
        self.showVoxelCurve(voxel)

    def showVoxelCurve(self, voxel):
        try:
            curves = self.curves()
        except Exception as exc:
            self.ui.statusLabel.text = str(exc)
            return
        if curves.voxel(voxel) is None:
            self.ui.statusLabel.text = _("Voxel {voxel} was not analysed (outside the brain mask).").format(voxel=voxel)
            return
        self.plotCurves({}, voxel)
        self.ui.statusLabel.text = _("Curves of voxel {voxel}.").format(voxel=voxel)

    def onLiveCurveToggled(self, enabled):
        if self._crosshairNode is not None:
            self.removeObserver(self._crosshairNode, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent,
                                self.onCursorMoved)
            self._crosshairNode = None
        if enabled:
            self._crosshairNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
            if self._crosshairNode is not None:
                self.addObserver(self._crosshairNode, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent,
                                 self.onCursorMoved)

    def onCursorMoved(self, caller=None, event=None):
        self.liveCurveTimer.start()  # restarts: the plot follows when the mouse pauses, not on every event

    def updateLiveCurve(self):
        if self.lastRun is None or self._crosshairNode is None:
            return
        ras = [0.0, 0.0, 0.0]
        if not self._crosshairNode.GetCursorPositionRAS(ras):
            return  # the mouse is not over a slice view
        voxel = self.voxelAt(ras)
        if voxel is not None:
            self.showVoxelCurve(voxel)

    def onExport(self):
        if self.lastRun is None:
            return
        outputs = self.lastRun["outputs"]
        default = os.path.join(qt.QDir.homePath(), f"{self.lastRun['name']} ROI ratios.csv".replace("/", "-"))
        path = qt.QFileDialog.getSaveFileName(None, _("Export the ROI ratio table and the report"), default,
                                              _("CSV table (*.csv)"))
        if not path:
            return
        try:
            written = self.logic.exportRun(outputs, self.ratioTableNode, path)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: export"))
            return
        self.ui.statusLabel.text = _("Saved {files}.").format(files=", ".join(written))
        self.log(self.ui.statusLabel.text)

    def onLoadSample(self):
        if not self.ensurePanelDependencies():
            return
        pipeline = self.ui.pipelineSelector.currentData
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample data"), waitCursor=True):
            sample = self.logic.loadSample(pipeline)
            self.selectSample(sample)
            self.ui.statusLabel.text = _("Sample data loaded: press Apply.")

    def selectSample(self, sample):
        from BBBAnomalyLib.pipelines import InputRole, get_pipeline

        spec = get_pipeline(sample.pipeline)
        images = [s.key for s in spec.inputs if s.role is not InputRole.REGION]
        for key, selector in zip(images, (self.ui.inputSelector, self.ui.secondInputSelector)):
            selector.setCurrentNode(sample.inputs[key])
        self.ui.aifSourceSelector.setCurrentIndex(self.ui.aifSourceSelector.findData(sample.aif_source))
        if sample.aif_source == "roi":
            self.ui.aifRoiSelector.setCurrentNode(sample.inputs["aif_mask"])
        for key, selector in (("tumor_mask", self.ui.tumorSegmentSelector), ("nawm_mask", self.ui.nawmSegmentSelector)):
            if key in sample.inputs:
                selector.setCurrentNode(sample.inputs[key][0])
                selector.setCurrentSegmentID(sample.inputs[key][1])
        slicer.util.setSliceViewerLayers(background=sample.inputs[images[0]], foreground=None, fit=True)
        self.onGUIChanged()

    # --- File > Close Scene --------------------------------------------------------------------------
    def onSceneStartClose(self, caller=None, event=None):
        """Everything the panel holds refers to nodes that are about to go: stop and forget it."""
        if self.runner is not None and not self.runner.finished:
            self.runner.cancel()  # its results would have nowhere to go
        self.ui.liveCurveCheckBox.checked = False
        self.onLiveCurveToggled(False)
        self.lastRun = self.chartNode = self.ratioTableNode = self.curveCache = None
        self._parameterNode = None

    def onSceneEndClose(self, caller=None, event=None):
        self.ui.statusLabel.text = ""
        self.ui.logTextEdit.clear()
        self._lastLogMessage = None
        self.initializeParameterNode()
        self.updateApplyState()


#
# BBBAnomalyLogic
#


class BBBAnomalyLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: dependencies, sample data, starting and finishing runs. Everything that
    touches MRML nodes is in ``BBBAnomalyLib.mrml`` (tested with slicer-core), so this stays thin."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.background = True  # False runs jobs in this process (self-test, scripting)

    @staticmethod
    def libraryVersion():
        _ensureLibraryImportable()
        import BBBAnomalyLib

        return BBBAnomalyLib.__version__

    # --- dependencies --------------------------------------------------------------------------
    @staticmethod
    def missingPackages():
        return [requirement for module, requirement in PIP_PACKAGES.items() if not _installed(module)]

    def installPackages(self, missing, ask=True):
        """pip-install ``missing`` requirements after asking; False when the user declines."""
        if ask and not slicer.util.confirmOkCancelDisplay(
                _("BBBAnomaly needs these Python packages, which Slicer does not bundle: {packages}. "
                  "Install them now (a minute, needs the internet)?").format(packages=", ".join(missing)),
                windowTitle=_("BBBAnomaly: install packages")):
            return False
        with slicer.util.WaitCursor():
            slicer.util.pip_install(missing)
        importlib.invalidate_caches()
        return True

    def ensureDependencies(self, needsTorch, ask=True):
        """Install what a run needs, after asking. Returns False when something is missing."""
        missing = self.missingPackages()
        if missing and not self.installPackages(missing, ask):
            return False
        return self.ensureTorch(ask) if needsTorch else True

    @staticmethod
    def ensureTorch(ask=True):
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("This pipeline needs PyTorch: install the PyTorch extension from the "
                                       "Extensions Manager and restart Slicer."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=ask, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            return torch is not None
        return True  # the worker checks the version (MINIMUM_TORCH_VERSION) when it imports torch

    @staticmethod
    def deviceSummary():
        """A line for the device row that imports nothing (importing torch takes seconds in the GUI
        thread); the device actually used is reported by the worker in the log when a run starts."""
        if not _installed("torch"):
            return _("PyTorch not installed yet (offered on Apply, after asking)")
        return _("Auto picks CUDA when a GPU is available; the device used is shown in the log when the run starts")

    # --- sample data ---------------------------------------------------------------------------
    @staticmethod
    def sampleNames():
        """{pipeline: sample name}; a literal copy of BBBAnomalyLib.mrml.SAMPLES' names, so that
        registering them at start-up imports nothing (tested against the library's list)."""
        return {"dsc": "BBBAnomaly DSC phantom", "dce": "BBBAnomaly DCE phantom", "dmri": "BBBAnomaly DWI phantom",
                "t1flair": "BBBAnomaly T1/FLAIR phantom"}

    @staticmethod
    def loadSample(pipeline, **options):
        from BBBAnomalyLib import mrml

        return mrml.load_sample(pipeline, **options)

    def loadSampleAsked(self, pipeline):
        """From the Sample Data module: install what the phantoms need (after asking), then load."""
        missing = self.missingPackages()
        if missing and not self.installPackages(missing, ask=True):
            return None
        sample = self.loadSample(pipeline)
        slicer.util.setSliceViewerLayers(background=next(iter(sample.inputs.values())), fit=True)
        return sample

    # --- runs ----------------------------------------------------------------------------------
    @staticmethod
    def pythonExecutable():
        """PythonSlicer: Slicer's Python launcher, for the background worker."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which(name) or os.path.join(slicer.app.slicerHome, "bin", name)
        return found if os.path.isfile(found) else sys.executable

    def startRun(self, request, workDir=None):
        """Write the inputs (uncompressed NRRD) and start the worker; returns the runner (poll() for events)."""
        from BBBAnomalyLib import mrml, runners

        workDir = workDir or tempfile.mkdtemp(prefix="BBBAnomaly-", dir=slicer.app.temporaryPath)
        try:
            job, _reference = mrml.prepare_job(request, workDir)
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        if not self.background:
            return runners.InProcessRunner(job).start()
        return runners.WorkerProcess(job, os.path.join(workDir, "job.json"), python=self.pythonExecutable(),
                                     env=slicer.util.startupEnvironment()).start()

    @staticmethod
    def runName(request):
        from BBBAnomalyLib.pipelines import get_pipeline

        spec = get_pipeline(request.pipeline)
        method = request.parameters.get("method")
        return f"{request.main_node().GetName()} {spec.label}" + (f" ({method})" if method else "")

    def finishRun(self, runner, request, replace=False, opacity=0.5):
        """Load the finished run's maps into the scene and overlay the first one on the run's input."""
        from BBBAnomalyLib import mrml

        outputs = mrml.import_results(runner.job.output_dir, request.main_node(), self.runName(request), replace)
        self.showOverlay(request.main_node(), next(iter(outputs.map_nodes.values())), opacity,
                         outputs.map_nodes.values())
        return outputs

    @staticmethod
    def cleanupRun(runner):
        """Delete a finished run's temporary input copies (a 4D series can be large); keep its output
        folder, whose curves.npz the curve plots read, unless the run produced nothing."""
        for path in runner.job.inputs.values():
            if os.path.isfile(path):
                os.remove(path)
        if not os.path.isdir(runner.job.output_dir):
            shutil.rmtree(os.path.dirname(runner.job.output_dir), ignore_errors=True)

    @staticmethod
    def showOverlay(background, foreground, opacity=0.5, siblings=()):
        from BBBAnomalyLib import mrml

        mrml.show_overlay(background, foreground, opacity, list(siblings))

    # --- analysis ------------------------------------------------------------------------------
    @staticmethod
    def regionMasks(request, regions):
        from BBBAnomalyLib import mrml

        return mrml.masks_on_input(request.main_node(), regions)

    @staticmethod
    def ratioTable(outputs, tumorMask, nawmMask=None, name="ROI ratios"):
        from BBBAnomalyLib import mrml

        table, _stats = mrml.ratio_table(outputs.map_nodes, tumorMask, nawmMask, name=name)
        return table

    @staticmethod
    def showTable(table):
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    @staticmethod
    def curvePlot(curves, masks, voxel=None, chartNode=None, name="BBBAnomaly curves"):
        from BBBAnomalyLib import mrml

        chartNode, _table, _labels = mrml.curve_plot(curves, masks, voxel, chartNode, name)
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)
        return chartNode

    @staticmethod
    def voxelAt(request, ras):
        """The voxel (i, j, k) of the run's input under a RAS point; None outside the image."""
        from BBBAnomalyLib import mrml

        reference, _geometry = mrml.reference_grid(request.main_node())
        return mrml.voxel_in_grid(reference, ras)

    @staticmethod
    def exportRun(outputs, tableNode, path):
        """The ratio table (when made) as CSV at ``path`` and the run's report as JSON beside it."""
        from BBBAnomalyLib import mrml

        base = os.path.splitext(path)[0]
        written = []
        if tableNode is not None and mrml.node_alive(tableNode):
            written.append(str(mrml.export_table(tableNode, base + ".csv")))
        report = os.path.join(outputs.output_dir, "report.json")
        shutil.copyfile(report, base + " report.json")
        written.append(base + " report.json")
        return written


#
# BBBAnomalyTest
#


class BBBAnomalyTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test (ctest `py_BBBAnomaly`, or "Reload and Test" in the module panel).

    Small on purpose: the library import, and a 4-slice DSC phantom through the background worker.
    Packages Slicer does not bundle are installed after asking; declined, the run is skipped with why.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LibraryImports()
        self.setUp()
        self.test_DSCPhantom()

    def test_LibraryImports(self):
        """BBBAnomalyLib imports inside Slicer's Python and works with Slicer's numpy."""
        self.delayDisplay("Importing BBBAnomalyLib")
        import numpy as np

        import BBBAnomalyLib

        self.assertTrue(hasattr(BBBAnomalyLib, "Volume"))
        self.assertEqual(BBBAnomalyLogic.libraryVersion(), BBBAnomalyLib.__version__)
        volume = BBBAnomalyLib.Volume(np.zeros((2, 3, 4, 5), np.float32), np.eye(4), times=np.arange(5.0))
        self.assertEqual(volume.n_frames, 5)
        self.delayDisplay("Test passed")

    def test_DSCPhantom(self):
        """A 4-slice DSC phantom through the background worker: maps on the input grid, sensible values."""
        logic = BBBAnomalyLogic()
        missing = logic.missingPackages()
        if missing and not logic.installPackages(missing, ask=not slicer.app.testingEnabled()):
            self.delayDisplay(f"Skipped: the DSC run needs {', '.join(missing)}, not installed")
            self.skipTest(f"needs {', '.join(missing)} (not installed)")
        import numpy as np

        from BBBAnomalyLib import mrml

        self.delayDisplay("Loading a 4-slice DSC phantom")
        sample = mrml.load_dsc_demo(slices=4, snr=100)
        request = mrml.RunRequest("dsc", sample.inputs, {"method": "osvd"}, {})
        runner = logic.startRun(request)
        events = runner.wait(timeout=300) if hasattr(runner, "wait") else runner.poll()
        self.assertEqual(events[-1]["event"], "done", events[-1])
        outputs = logic.finishRun(runner, request)
        self.assertIn("cbv", outputs.map_nodes)
        ijk = mrml.ijk_to_ras(sample.inputs["series"])
        for node in outputs.map_nodes.values():
            self.assertTrue(np.allclose(mrml.ijk_to_ras(node), ijk))
        phantom = sample.phantom
        rcbv = np.swapaxes(slicer.util.arrayFromVolume(outputs.map_nodes["rcbv"]), 0, 2)
        self.assertAlmostEqual(float(rcbv[phantom.masks["nawm"]].mean()), 1.0, places=3)
        self.assertGreater(float(rcbv[phantom.masks["enhancing"]].mean()), 1.3)
        self.delayDisplay("Test passed")
