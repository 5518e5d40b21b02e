"""The panel's Results section: overlay, ROI ratios, curves (live under the mouse), export."""

import os

import qt
import slicer
from slicer.i18n import tr as _


class ResultsMixin:
    """For BBBAnomalyWidget: everything done with a finished run (``self.lastRun``)."""

    def onOverlayChanged(self, node):
        """Show a map over the input of the run that made it (not whatever the input selector shows now)."""
        if node is None:
            return
        background = slicer.mrmlScene.GetNodeByID(node.GetAttribute("BBBAnomaly.InputNodeID") or "")
        siblings = self.lastRun["outputs"].map_nodes.values() if self.lastRun else ()
        self.logic.showOverlay(background, node, self.ui.opacitySlider.value, siblings)

    def onOpacityChanged(self, value):
        from BBBAnomalyLib.app import mrml

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
            self.ratioTableNode, notes = self.logic.ratioTable(self.lastRun["outputs"], masks["tumor"],
                                                               masks.get("NAWM"),
                                                               name=f"{self.lastRun['name']} ROI ratios")
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("BBBAnomaly: ROI ratios"))
            return
        self.logic.showTable(self.ratioTableNode)
        self.log(_("ROI ratio table: {name}").format(name=self.ratioTableNode.GetName()))
        # the table's caveat column is one line per map; the log box shows the whole sentence
        for name, caveat in self.logic.mapCaveats(self.lastRun["outputs"]).items():
            self.log(_("Read the ROI mean of {name} with care: {caveat}").format(name=name, caveat=caveat))
        for note in notes:  # as `bbbanomaly roi-stats` prints them under its table (why a ratio is n/a, ...)
            self.log(note)

    def curves(self):
        from BBBAnomalyLib.app.curves import CurveSet, curves_in

        outputDir = self.lastRun["outputs"].output_dir
        if self.curveCache is None or self.curveCache[0] != outputDir:
            runner = self.lastRun.get("runner")
            if runner is not None and not runner.finished:  # the maps came first; the worker writes the curves
                raise ValueError(_("the curves of this run are still being written: try again in a moment"))
            path = self.lastRun.get("curves") or curves_in(outputDir)
            if path is None or not os.path.exists(path):
                raise ValueError(_("this run kept no curves"))
            self.curveCache = (outputDir, CurveSet.load(path))  # memory-mapped: read per click
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
