"""BBBAnomalyLogic's work: dependencies, sample data, runs and analysis.

Everything that touches MRML nodes is in ``BBBAnomalyLib.app.mrml`` (tested with slicer-core), so
this stays thin. Nothing heavy is imported here at module level: Slicer imports it at start-up.
"""

import importlib
import importlib.util
import os
import shutil
import sys
import tempfile

import slicer
from slicer.i18n import tr as _

MINIMUM_TORCH_VERSION = "2.1"
#: Packages BBBAnomalyLib needs that Slicer does not bundle: import name -> pip requirement.
#: numpy, scipy, SimpleITK and vtk come with Slicer and are never touched.
PIP_PACKAGES = {"nibabel": "nibabel>=5.0", "sklearn": "scikit-learn>=1.2", "matplotlib": "matplotlib>=3.6"}


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class PanelLogic:
    """The methods of BBBAnomalyLogic (a ScriptedLoadableModuleLogic in BBBAnomaly.py)."""

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
        try:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        except Exception as exc:  # offline, a proxy, no write access: pip's error would escape the button's slot
            slicer.util.errorDisplay(
                _("Could not install {packages}: {error}. Check the internet connection (or install them from "
                  "Slicer's Python console with slicer.util.pip_install) and try again; nothing was run.").format(
                    packages=", ".join(missing), error=exc),
                windowTitle=_("BBBAnomaly: install packages"))
            return False
        finally:
            importlib.invalidate_caches()  # whatever pip managed to install before it failed is visible
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
            try:
                torch = torchLogic.installTorch(askConfirmation=ask,
                                                torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            except Exception as exc:  # light-the-torch or pip failed: say so instead of a traceback in the console
                slicer.util.errorDisplay(_("Could not install PyTorch: {error}. Install it from the PyTorch "
                                           "extension's module and try again; nothing was run.").format(error=exc))
                return False
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
        """{pipeline: sample name}; a literal copy of BBBAnomalyLib.app.mrml.SAMPLES' names, so that
        registering them at start-up imports nothing (tested against the library's list)."""
        return {"dsc": "BBBAnomaly DSC phantom", "dce": "BBBAnomaly DCE phantom", "dmri": "BBBAnomaly DWI phantom",
                "t1flair": "BBBAnomaly T1/FLAIR phantom"}

    @staticmethod
    def loadSample(pipeline, **options):
        from BBBAnomalyLib.app import mrml

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

    def prestartWorker(self, pipeline=None):
        """A warm worker for the next Apply, started now in the background (returns at once): a
        child process that does its imports while the user is still choosing inputs, then waits for
        its job (BBBAnomalyLib.app.runners.WorkerProcess.warm). Nothing is started for in-process
        runs, while packages are missing, or when one is already waiting for this pipeline (one
        that imported another pipeline's modules is replaced)."""
        warm = getattr(self, "warmWorker", None)
        if warm is not None and warm.idle and (pipeline is None or warm.preload == pipeline):
            return warm
        self.discardWarmWorker()
        if not getattr(self, "background", True) or self.missingPackages():
            return None
        from BBBAnomalyLib.app import runners

        workDir = tempfile.mkdtemp(prefix="BBBAnomaly-", dir=slicer.app.temporaryPath)
        try:
            self.warmWorker = runners.WorkerProcess.warm(workDir, python=self.pythonExecutable(),
                                                         env=slicer.util.startupEnvironment(), preload=pipeline)
        except OSError:  # cannot start a process now: Apply starts one with its job, as before
            shutil.rmtree(workDir, ignore_errors=True)
            self.warmWorker = None
        return self.warmWorker

    def discardWarmWorker(self):
        """End a warm worker that has no job (module closed, Slicer quitting) and remove its folder."""
        warm, self.warmWorker = getattr(self, "warmWorker", None), None
        if warm is not None and warm.job is None:
            warm.discard()
            shutil.rmtree(warm.work_dir, ignore_errors=True)

    def startRun(self, request, workDir=None):
        """Hand the inputs over (raw arrays in the nodes' memory order) and start the run: on the
        warm worker when one is waiting, else on a worker started now; returns the runner
        (poll() for events)."""
        from BBBAnomalyLib.app import mrml, runners

        warm = getattr(self, "warmWorker", None) if self.background and workDir is None else None
        if warm is not None and not warm.idle:
            self.discardWarmWorker()
            warm = None
        workDir = workDir or (str(warm.work_dir) if warm is not None else
                              tempfile.mkdtemp(prefix="BBBAnomaly-", dir=slicer.app.temporaryPath))
        try:
            job, _reference = mrml.prepare_job(request, workDir)
        except Exception:
            if warm is None:
                shutil.rmtree(workDir, ignore_errors=True)
            else:  # the warm worker stays for the next Apply; only what prepare_job wrote goes
                for name in os.listdir(workDir):
                    path = os.path.join(workDir, name)
                    if name == "worker.log":
                        continue
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.remove(path)
            raise
        if not self.background:
            return runners.InProcessRunner(job).start()
        if warm is not None:
            self.warmWorker = None  # it is this run's worker now
            try:
                return warm.submit(job)
            except runners.WorkerGone:  # it ended since it was started: start one with the job
                pass
        return runners.WorkerProcess(job, os.path.join(workDir, "job.json"), python=self.pythonExecutable(),
                                     env=slicer.util.startupEnvironment()).start()

    @staticmethod
    def runName(request):
        from BBBAnomalyLib.app.pipelines import get_pipeline

        spec = get_pipeline(request.pipeline)
        method = request.parameters.get("method")
        return f"{request.main_node().GetName()} {spec.label}" + (f" ({method})" if method else "")

    def finishRun(self, runner, request, replace=False, opacity=0.5):
        """Load the finished run's maps into the scene and overlay the first one on the run's input."""
        from BBBAnomalyLib.app import mrml

        outputs = mrml.import_results(runner.job.output_dir, request.main_node(), self.runName(request), replace)
        self.showOverlay(request.main_node(), next(iter(outputs.map_nodes.values())), opacity,
                         outputs.map_nodes.values())
        return outputs

    @staticmethod
    def cleanupRun(runner):
        """Delete a finished run's temporary input copies (a 4D series can be large); keep its output
        folder, whose curves the curve plots read, unless the run produced nothing."""
        from BBBAnomalyLib.app.handover import header_path

        workDir = os.path.dirname(runner.job.output_dir)
        for path in runner.job.inputs.values():
            if os.path.isdir(path) and os.path.dirname(os.path.abspath(path)) == workDir:
                # the links to a series' DICOM files (mrml.dicom_source.link_series; a link is removed, not its file)
                shutil.rmtree(path, ignore_errors=True)
                continue
            for name in (path, str(header_path(path)) if path.endswith(".npy") else None):
                if name and os.path.isfile(name):
                    try:
                        os.remove(name)
                    except OSError:  # e.g. Windows while the ending worker still maps it: a temp file
                        pass
        if not os.path.isdir(runner.job.output_dir):
            shutil.rmtree(os.path.dirname(runner.job.output_dir), ignore_errors=True)

    @staticmethod
    def showOverlay(background, foreground, opacity=0.5, siblings=()):
        from BBBAnomalyLib.app import mrml

        mrml.show_overlay(background, foreground, opacity, list(siblings))

    # --- analysis ------------------------------------------------------------------------------
    @staticmethod
    def regionMasks(request, regions):
        from BBBAnomalyLib.app import mrml

        return mrml.masks_on_input(request.main_node(), regions)

    @staticmethod
    def ratioTable(outputs, tumorMask, nawmMask=None, name="ROI ratios"):
        """(the table node, the notes `bbbanomaly roi-stats` prints under the same table but the maps' caveats,
        which mapCaveats gives: why a ratio is n/a, NaN voxels left out)."""
        from BBBAnomalyLib.app import mrml
        from BBBAnomalyLib.roistats import table_notes

        table, stats = mrml.ratio_table(outputs.map_nodes, tumorMask, nawmMask, name=name)
        return table, table_notes(stats, caveats=False)

    @staticmethod
    def mapCaveats(outputs):
        """{map: what its ROI mean keeps that no per-voxel map shows}, for the log beside the ratio table."""
        from BBBAnomalyLib.app import mrml

        return mrml.map_caveats(outputs.map_nodes)

    @staticmethod
    def showTable(table):
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    @staticmethod
    def curvePlot(curves, masks, voxel=None, chartNode=None, name="BBBAnomaly curves"):
        from BBBAnomalyLib.app import mrml

        chartNode, _table, _labels = mrml.curve_plot(curves, masks, voxel, chartNode, name)
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)
        return chartNode

    @staticmethod
    def voxelAt(request, ras):
        """The voxel (i, j, k) of the run's input under a RAS point; None outside the image."""
        from BBBAnomalyLib.app import mrml

        reference, _geometry = mrml.reference_grid(request.main_node())
        return mrml.voxel_in_grid(reference, ras)

    @staticmethod
    def exportRun(outputs, tableNode, path):
        """The ratio table (when made) as CSV at ``path`` and the run's report as JSON beside it."""
        from BBBAnomalyLib.app import mrml

        base = os.path.splitext(path)[0]
        written = []
        if tableNode is not None and mrml.node_alive(tableNode):
            written.append(str(mrml.export_table(tableNode, base + ".csv")))
        report = os.path.join(outputs.output_dir, "report.json")
        shutil.copyfile(report, base + " report.json")
        written.append(base + " report.json")
        return written
