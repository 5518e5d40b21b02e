"""BBBAnomaly: 3D Slicer scripted module (Module, Widget, Logic, Test).

The science lives in the plain-Python package ``BBBAnomalyLib``; the MRML-facing logic in
``BBBAnomalyLib/mrml.py`` (tested in CI with the slicer-core wheel). This file is only the panel:
it collects inputs, starts the background worker, shows progress and loads the results.
Keep imports cheap: Slicer imports this file at start-up to discover the module, so nothing
heavy (torch, BBBAnomalyLib's pipelines) and no package installation happens here.
"""

import importlib.util
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

MINIMUM_TORCH_VERSION = "2.1"
#: Packages BBBAnomalyLib needs that Slicer does not bundle: import name -> pip requirement.
#: numpy, scipy, SimpleITK and vtk come with Slicer and are never touched.
PIP_PACKAGES = {"nibabel": "nibabel>=5.0", "sklearn": "scikit-learn>=1.2", "matplotlib": "matplotlib>=3.6"}


def _ensureLibraryImportable():
    """Make ``import BBBAnomalyLib`` work without importing it.

    In a built or installed extension BBBAnomalyLib sits next to this file, in a directory that
    Slicer already puts on sys.path, and this does nothing. When the module is loaded straight
    from a source checkout (BBBAnomaly/ added as a module path), the package is one level up, at
    the repository root, which is then appended to sys.path (appended so that it never shadows
    anything Slicer provides).
    """
    if importlib.util.find_spec("BBBAnomalyLib") is not None:
        return
    repoRoot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(repoRoot, "BBBAnomalyLib", "__init__.py")) and repoRoot not in sys.path:
        sys.path.append(repoRoot)


# Only a path lookup: lets `import BBBAnomalyLib` work from Slicer's Python console as well.
_ensureLibraryImportable()


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
            "Pick a pipeline and its inputs (a loaded 4D series, an AIF ROI or segment, optional brain, "
            "tumor and NAWM segments), press Apply, and keep working while it runs in the background. "
            "Results appear as overlays in a folder named after the input; <b>ROI ratios</b> gives the "
            "tumor/NAWM table and <b>Curves</b> the AIF and segment curves with the model's fit. "
            "The same pipelines run without Slicer: <code>bbbanomaly --help</code>."
        )
        self.parent.acknowledgementText = _(
            "Developed by the BBBAnomaly developers. The learned methods reimplement published work "
            "on model-free DCE leakage mapping, physics-informed DSC autoencoders, diffusion MRI "
            "anomaly detection and contrast-free BBB assessment; see the project documentation for "
            "references and validation. The DSC demo phantom uses MNI152 tissue maps (see NOTICE)."
        )


#
# BBBAnomalyWidget
#


class BBBAnomalyWidget(ScriptedLoadableModuleWidget):
    """The panel: inputs and parameters from the pipeline registry, a background run, results."""

    AIF_SOURCES = (("auto", "Automatic"), ("roi", "Markups ROI"), ("segment", "Segment"))

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.runner = None
        self.request = None
        self.lastOutputs = None
        self.parameterWidgets = {}
        self.chartNode = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BBBAnomaly.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects mrmlSceneChanged(vtkMRMLScene*) to each MRML widget's setMRMLScene slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = BBBAnomalyLogic()
        try:
            version = self.logic.libraryVersion()
            from BBBAnomalyLib.pipelines import PIPELINES
        except Exception as exc:  # a broken or incomplete install must not stop the panel from opening
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

        self.ui.pipelineSelector.connect("currentIndexChanged(int)", self.onPipelineChanged)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.aifSourceSelector.connect("currentIndexChanged(int)", self.updateVisibility)
        for selector in (self.ui.secondInputSelector, self.ui.aifRoiSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateApplyState)
        for selector in (self.ui.aifSegmentSelector, self.ui.brainMaskSelector, self.ui.nawmSegmentSelector,
                         self.ui.tumorSegmentSelector):
            selector.connect("currentSegmentChanged(QString)", self.updateApplyState)
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateApplyState)
        for box in (self.ui.frameIntervalSpinBox, self.ui.echoTimeSpinBox, self.ui.repetitionTimeSpinBox,
                    self.ui.flipAngleSpinBox):
            box.connect("valueChanged(double)", self.updateApplyState)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        self.ui.outputMapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOverlayChanged)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.ratiosButton.connect("clicked(bool)", self.onRatios)
        self.ui.curvesButton.connect("clicked(bool)", self.onCurves)
        self.ui.voxelCurveButton.connect("clicked(bool)", self.onVoxelCurve)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.onPipelineChanged()

    def cleanup(self):
        if self.runner is not None and not self.runner.finished:
            self.runner.cancel()
        if hasattr(self, "pollTimer"):
            self.pollTimer.stop()

    # --- the pipeline's inputs and parameters ------------------------------------------------
    def currentSpec(self):
        from BBBAnomalyLib.pipelines import get_pipeline

        return get_pipeline(self.ui.pipelineSelector.currentData or "dsc")

    def onPipelineChanged(self, index=None):
        spec = self.currentSpec()
        self.ui.pipelineDescriptionLabel.text = spec.description + (
            "" if spec.available else "<br><i>" + _("Not available yet: {why}").format(why=spec.unavailable) + "</i>")
        positional = [s for s in spec.inputs if s.positional]
        self.ui.inputLabel.text = positional[0].label + ":"
        self.ui.inputSelector.toolTip = positional[0].tooltip
        self.ui.secondInputLabel.text = (positional[1].label + ":") if len(positional) > 1 else ""
        self.buildParameterWidgets(spec)
        if spec.uses_device:
            self.ui.deviceLabel.text = self.logic.deviceSummary()
        self.updateVisibility()
        self.onInputChanged()

    def buildParameterWidgets(self, spec):
        for layout in (self.ui.parametersWidget.layout(), self.ui.advancedCollapsibleButton.layout()):
            while layout.count():
                item = layout.takeAt(0)
                if item.widget():
                    item.widget().deleteLater()
        self.parameterWidgets = {}
        defaults = spec.default_parameters()
        for p in spec.parameters:
            value = defaults[p.name]
            if p.choices:
                widget = qt.QComboBox()
                for choice, text in p.choices:
                    widget.addItem(text, choice)
                widget.setCurrentIndex(max(widget.findData(value), 0))
            elif isinstance(value, bool):
                widget = qt.QCheckBox()
                widget.checked = value
            elif p.decimals == 0:
                widget = qt.QSpinBox()
                widget.setRange(int(p.minimum or 0), int(p.maximum or 1000))
                widget.value = int(value)
            else:
                widget = qt.QDoubleSpinBox()
                widget.decimals = p.decimals
                widget.setRange(p.minimum if p.minimum is not None else -1e6, p.maximum if p.maximum is not None else 1e6)
                widget.singleStep = 10 ** -p.decimals * 5
                if p.optional:  # the minimum stands for None ("unknown")
                    widget.specialValueText = _("unknown")
                widget.value = float(value) if value is not None else widget.minimum
            widget.toolTip = p.tooltip
            signal = {qt.QComboBox: "currentIndexChanged(int)", qt.QCheckBox: "toggled(bool)",
                      qt.QSpinBox: "valueChanged(int)"}.get(type(widget), "valueChanged(double)")
            widget.connect(signal, self.updateApplyState)  # e.g. concentration input needs no TE
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

    def updateVisibility(self, index=None):
        spec = self.currentSpec()
        keys = {s.key for s in spec.inputs}
        positional = [s for s in spec.inputs if s.positional]
        source = self.ui.aifSourceSelector.currentData
        rows = {
            (self.ui.secondInputLabel, self.ui.secondInputSelector): len(positional) > 1,
            (self.ui.aifSourceLabel, self.ui.aifSourceSelector): "aif_mask" in keys,
            (self.ui.aifRoiLabel, self.ui.aifRoiSelector): "aif_mask" in keys and source == "roi",
            (self.ui.aifSegmentLabel, self.ui.aifSegmentSelector): "aif_mask" in keys and source == "segment",
            (self.ui.brainMaskLabel, self.ui.brainMaskSelector): "brain_mask" in keys,
            (self.ui.nawmLabel, self.ui.nawmSegmentSelector): "nawm_mask" in keys,
            (self.ui.tumorLabel, self.ui.tumorSegmentSelector): "tumor_mask" in keys,
        }
        for widgets, visible in rows.items():
            for w in widgets:
                w.visible = visible
        acquisition = {a.name for a in spec.acquisition}
        for name, widgets in (("frame_interval", (self.ui.frameIntervalLabel, self.ui.frameIntervalSpinBox)),
                              ("echo_time", (self.ui.echoTimeLabel, self.ui.echoTimeSpinBox)),
                              ("repetition_time", (self.ui.repetitionTimeLabel, self.ui.repetitionTimeSpinBox)),
                              ("flip_angle", (self.ui.flipAngleLabel, self.ui.flipAngleSpinBox))):
            for w in widgets:
                w.visible = name in acquisition
        self.ui.acquisitionCollapsibleButton.visible = bool(acquisition)
        self.ui.deviceWidget.visible = spec.uses_device
        self.ui.loadDemoButton.visible = spec.name == "dsc"
        self.updateApplyState()

    def onInputChanged(self, node=None):
        from BBBAnomalyLib import mrml

        node = self.ui.inputSelector.currentNode()
        self.ui.inputInfoLabel.text = ""
        for box in (self.ui.frameIntervalSpinBox, self.ui.echoTimeSpinBox, self.ui.repetitionTimeSpinBox,
                    self.ui.flipAngleSpinBox):
            box.value = 0.0  # "unknown" until read or typed
        if node is not None:
            try:
                info = mrml.describe_input(node)
            except Exception as exc:  # describe only reads attributes; show what is wrong
                self.ui.inputInfoLabel.text = str(exc)
            else:
                self.ui.inputInfoLabel.text = info.summary()
                acq = info.acquisition
                for box, value, scale in ((self.ui.frameIntervalSpinBox, info.frame_interval, 1.0),
                                          (self.ui.echoTimeSpinBox, acq.echo_time, 1e3),
                                          (self.ui.repetitionTimeSpinBox, acq.repetition_time, 1e3),
                                          (self.ui.flipAngleSpinBox, acq.flip_angle, 1.0)):
                    if value is not None:
                        box.value = value * scale
        self.updateApplyState()

    # --- Apply -----------------------------------------------------------------------------
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
        inputs = {}
        for s in spec.inputs:
            inputs[s.key] = images.pop(0) if s.role is not InputRole.REGION else self.collectRegion(s.key)
        acquisition = {}
        for a in spec.acquisition:
            box = {"frame_interval": self.ui.frameIntervalSpinBox, "echo_time": self.ui.echoTimeSpinBox,
                   "repetition_time": self.ui.repetitionTimeSpinBox, "flip_angle": self.ui.flipAngleSpinBox}[a.name]
            acquisition[a.name] = box.value * a.to_si if box.value > 0 else None
        return RunRequest(spec.name, inputs, self.parameterValues(), acquisition)

    def missingInputs(self):
        """Why Apply cannot run now (empty when it can); the rules live in PipelineSpec.missing."""
        request = self.collectRequest()
        chosen = ("aif_mask",) if "aif_mask" in request.inputs and self.ui.aifSourceSelector.currentData != "auto" else ()
        return self.currentSpec().missing(request.inputs, request.acquisition, request.parameters, chosen)

    def updateApplyState(self, *args):
        running = self.runner is not None and not self.runner.finished
        missing = self.missingInputs() if hasattr(self, "logic") else []
        self.ui.applyButton.enabled = not running and not missing
        self.ui.applyButton.toolTip = (_("Missing: {what}").format(what="; ".join(missing)) if missing
                                       else _("Run {pipeline} in the background").format(pipeline=self.currentSpec().label))
        self.ui.cancelButton.enabled = running

    def onApply(self):
        from BBBAnomalyLib.errors import InputError

        spec = self.currentSpec()
        if not self.logic.ensureDependencies(spec.torch_needed(self.parameterValues())):
            self.ui.statusLabel.text = _("Missing Python packages; nothing was run.")
            return
        self.request = self.collectRequest()
        try:
            self.runner = self.logic.startRun(self.request)
        except InputError as exc:
            self.ui.statusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: cannot start"))
            return
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Starting {pipeline}...").format(pipeline=spec.label)
        self.runStarted = time.monotonic()
        self.pollTimer.start()
        self.updateApplyState()

    def onCancel(self):
        if self.runner is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            self.runner.cancel()

    def onPoll(self):
        for event in self.runner.poll():
            kind = event["event"]
            if kind == "progress":
                self.ui.progressBar.value = int(100 * event["fraction"])
                self.ui.statusLabel.text = event["message"]
            elif kind == "done":
                self.onRunDone(event)
            elif kind == "error":
                message = event["message"] + (f"\n({_('details in')} {event['log']})" if event.get("log") else "")
                self.ui.statusLabel.text = _("Failed: {message}").format(message=event["message"])
                slicer.util.errorDisplay(message, windowTitle=_("BBBAnomaly"))
            elif kind == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        if self.runner.finished:
            self.pollTimer.stop()
            self.ui.progressBar.visible = False
            self.logic.cleanupRun(self.runner)
            self.updateApplyState()

    def onRunDone(self, event):
        try:
            outputs = self.logic.finishRun(self.runner, self.request, replace=self.ui.replaceCheckBox.checked,
                                           opacity=self.ui.opacitySlider.value)
        except Exception as exc:
            logging.exception("BBBAnomaly: loading the results failed")
            self.ui.statusLabel.text = _("Could not load the results: {error}").format(error=exc)
            return
        self.lastOutputs = {"outputs": outputs, "event": event}
        first = next(iter(outputs.map_nodes.values()))
        self.ui.outputMapSelector.setCurrentNode(first)
        seconds = time.monotonic() - self.runStarted
        warnings = event.get("warnings") or []
        self.ui.statusLabel.text = _("Done in {seconds:.1f} s: {maps}.").format(
            seconds=seconds, maps=", ".join(outputs.map_nodes)) + ("".join("\n" + _("Warning: ") + w for w in warnings))

    # --- results -----------------------------------------------------------------------------
    def onOverlayChanged(self, node):
        if node is not None and self.ui.inputSelector.currentNode() is not None:
            self.logic.showOverlay(self.ui.inputSelector.currentNode(), node, self.ui.opacitySlider.value)

    def onOpacityChanged(self, value):
        from BBBAnomalyLib import mrml

        mrml.set_overlay_opacity(value)

    def currentOutputs(self):
        if not self.lastOutputs:
            slicer.util.warningDisplay(_("Run a pipeline first."))
            return None
        return self.lastOutputs["outputs"]

    def segmentMasks(self):
        """{label: mask} of the tumor and NAWM segments on the input grid."""
        regions = {"tumor": self.collectRegion("tumor_mask"), "NAWM": self.collectRegion("nawm_mask")}
        return self.logic.regionMasks(self.request, {k: v for k, v in regions.items() if v is not None})

    def onRatios(self):
        outputs = self.currentOutputs()
        if outputs is None:
            return
        try:
            masks = self.segmentMasks()
            if "tumor" not in masks:
                raise ValueError(_("pick a tumor segment (and a NAWM segment for the ratio)"))
            table = self.logic.ratioTable(outputs, masks["tumor"], masks.get("NAWM"))
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: ROI ratios"))
            return
        self.logic.showTable(table)

    def onCurves(self, voxel=None):
        outputs = self.currentOutputs()
        if outputs is None:
            return
        try:
            self.chartNode = self.logic.curvePlot(outputs, self.segmentMasks(), voxel, self.chartNode)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: curves"))

    def onVoxelCurve(self):
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is None or self.request is None:
            return
        self.onCurves(voxel=self.logic.voxelAt(self.request, crosshair.GetCrosshairRAS()))

    def onLoadDemo(self):
        with slicer.util.tryWithErrorDisplay(_("Could not load the demo phantom"), waitCursor=True):
            demo = self.logic.loadDemo()
            self.ui.inputSelector.setCurrentNode(demo["series"])
            self.ui.aifSourceSelector.setCurrentIndex(self.ui.aifSourceSelector.findData("roi"))
            self.ui.aifRoiSelector.setCurrentNode(demo["aif_roi"])
            for selector, key in ((self.ui.tumorSegmentSelector, "tumor"), (self.ui.nawmSegmentSelector, "nawm")):
                selector.setCurrentNode(demo["segmentation"])
                selector.setCurrentSegmentID(demo["segments"][key])
            slicer.util.setSliceViewerLayers(background=demo["series"], fit=True)


#
# BBBAnomalyLogic
#


class BBBAnomalyLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: dependencies, starting and finishing runs. Everything that touches MRML
    nodes is in ``BBBAnomalyLib.mrml`` (tested with slicer-core), so this class stays thin."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.background = True  # False runs jobs in this process (self-test, scripting)

    @staticmethod
    def libraryVersion():
        """Version string of the BBBAnomalyLib that this module imports."""
        _ensureLibraryImportable()
        import BBBAnomalyLib

        return BBBAnomalyLib.__version__

    # --- dependencies --------------------------------------------------------------------------
    @staticmethod
    def missingPackages():
        return [requirement for module, requirement in PIP_PACKAGES.items() if importlib.util.find_spec(module) is None]

    def ensureDependencies(self, needsTorch, ask=True):
        """Install what a run needs, after asking: torch through the PyTorch extension, the
        rest with Slicer's pip. Returns False when something is missing and not installed."""
        missing = self.missingPackages()
        if missing:
            if ask and not slicer.util.confirmOkCancelDisplay(
                    _("BBBAnomaly needs these Python packages: {packages}. Install them now?").format(
                        packages=", ".join(missing)), windowTitle=_("BBBAnomaly: install packages")):
                return False
            slicer.util.pip_install(missing)
        if needsTorch:
            return self.ensureTorch(ask)
        return True

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
        import torch
        from packaging import version

        if version.parse(torch.__version__.split("+")[0]) < version.parse(MINIMUM_TORCH_VERSION):
            slicer.util.errorDisplay(_("PyTorch {found} is too old; BBBAnomaly needs {needed} or newer. Update it "
                                       "from the PyTorch Utils module.").format(found=torch.__version__,
                                                                                needed=MINIMUM_TORCH_VERSION))
            return False
        return True

    @staticmethod
    def deviceSummary():
        if importlib.util.find_spec("torch") is None:
            return _("torch not installed yet (installed on Apply, after asking)")
        from BBBAnomalyLib.devices import device_summary

        return device_summary()

    # --- runs ----------------------------------------------------------------------------------
    @staticmethod
    def pythonExecutable():
        """PythonSlicer: Slicer's own Python interpreter, for the background worker."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which(name) or os.path.join(slicer.app.slicerHome, "bin", name)
        return found if os.path.isfile(found) else sys.executable

    def startRun(self, request, workDir=None):
        """Write the inputs and start the worker; returns the runner (poll() for events)."""
        from BBBAnomalyLib import jobs, mrml

        workDir = workDir or tempfile.mkdtemp(prefix="BBBAnomaly-", dir=slicer.app.temporaryPath)
        job, _reference = mrml.prepare_job(request, workDir)
        if not self.background:
            return jobs.InProcessRunner(job).start()
        return jobs.WorkerProcess(job, os.path.join(workDir, "job.json"), python=self.pythonExecutable(),
                                  env=slicer.util.startupEnvironment()).start()

    @staticmethod
    def runName(request):
        from BBBAnomalyLib.pipelines import get_pipeline

        spec = get_pipeline(request.pipeline)
        method = request.parameters.get("method")
        return f"{request.main_node().GetName()} {spec.label}" + (f" ({method})" if method else "")

    def finishRun(self, runner, request, replace=False, opacity=0.5):
        """Load the finished run's maps into the scene and overlay the first one on the input."""
        from BBBAnomalyLib import mrml

        outputs = mrml.import_results(runner.job.output_dir, request.main_node(), self.runName(request), replace)
        self.showOverlay(request.main_node(), next(iter(outputs.map_nodes.values())), opacity)
        return outputs

    @staticmethod
    def cleanupRun(runner):
        """Delete a finished run's temporary input copies (a 4D series can be large); keep its
        output folder, whose curves.npz the Curves button reads, unless the run produced nothing."""
        for path in runner.job.inputs.values():
            if os.path.isfile(path):
                os.remove(path)
        if not os.path.isdir(runner.job.output_dir):
            shutil.rmtree(os.path.dirname(runner.job.output_dir), ignore_errors=True)

    @staticmethod
    def showOverlay(background, foreground, opacity=0.5):
        from BBBAnomalyLib import mrml

        mrml.show_overlay(background, foreground, opacity)

    # --- analysis ------------------------------------------------------------------------------
    @staticmethod
    def regionMasks(request, regions):
        from BBBAnomalyLib import mrml

        return mrml.masks_on_input(request.main_node(), regions)

    @staticmethod
    def ratioTable(outputs, tumorMask, nawmMask=None):
        from BBBAnomalyLib import mrml

        table, _stats = mrml.ratio_table(outputs.map_nodes, tumorMask, nawmMask)
        return table

    @staticmethod
    def showTable(table):
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    @staticmethod
    def curvePlot(outputs, masks, voxel=None, chartNode=None):
        from BBBAnomalyLib import mrml
        from BBBAnomalyLib.curves import CurveSet

        outputDir = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene).GetItemAttribute(
            outputs.folder_item, mrml.ATTRIBUTE_PREFIX + "OutputDir")
        curves = CurveSet.load(os.path.join(outputDir, "curves.npz"))
        chartNode, _table, _labels = mrml.curve_plot(curves, masks, voxel, chartNode)
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)
        return chartNode

    @staticmethod
    def voxelAt(request, ras):
        from BBBAnomalyLib import mrml

        reference, _geometry = mrml.reference_grid(request.main_node())
        return mrml.ras_to_voxel(reference, ras)

    @staticmethod
    def loadDemo():
        from BBBAnomalyLib import mrml

        return mrml.load_dsc_demo()


#
# BBBAnomalyTest
#


class BBBAnomalyTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test (ctest `py_BBBAnomaly`, or "Reload and Test" in the module panel)."""

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
        """A small DSC phantom through the background worker: maps on the input grid, sensible values."""
        import numpy as np

        from BBBAnomalyLib import mrml

        self.delayDisplay("Loading a 4-slice DSC phantom")
        demo = mrml.load_dsc_demo(slices=4, snr=100)
        request = mrml.RunRequest("dsc", {"series": demo["series"], "aif_mask": demo["aif_roi"],
                                          "nawm_mask": (demo["segmentation"], demo["segments"]["nawm"]),
                                          "tumor_mask": (demo["segmentation"], demo["segments"]["tumor"])},
                                  {"method": "osvd"}, {})
        logic = BBBAnomalyLogic()
        runner = logic.startRun(request)
        events = runner.wait(timeout=300) if hasattr(runner, "wait") else runner.poll()
        self.assertEqual(events[-1]["event"], "done", events[-1])
        outputs = logic.finishRun(runner, request)
        self.assertIn("cbv", outputs.map_nodes)
        ijk = mrml.ijk_to_ras(demo["series"])
        for node in outputs.map_nodes.values():
            self.assertTrue(np.allclose(mrml.ijk_to_ras(node), ijk))
        phantom = demo["phantom"]
        rcbv = np.swapaxes(slicer.util.arrayFromVolume(outputs.map_nodes["rcbv"]), 0, 2)
        self.assertAlmostEqual(float(rcbv[phantom.masks["nawm"]].mean()), 1.0, places=3)
        self.assertGreater(float(rcbv[phantom.masks["enhancing"]].mean()), 1.3)
        self.delayDisplay("Test passed")
