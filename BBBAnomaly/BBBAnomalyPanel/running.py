"""The panel's run: Apply starts the background worker, a timer polls its events into the log, progress bar and
status line, Cancel ends it, and its maps are loaded the moment they are complete.

Moved out of BBBAnomaly.py (the widget) as a mixin like the form, the parameter node and the Results section: it
is the part that follows one run's life, apart from the inputs and the results. Rules it keeps: Cancel is final (the
runner ends the worker's whole process tree and passes on nothing after it), and nothing is imported after a
cancelled run.
"""

import logging
import os
import time

import slicer
from slicer.i18n import tr as _


class RunMixin:
    """For BBBAnomalyWidget: starting, following, cancelling and loading a run (``self.runner``, ``self.lastRun``)."""

    def log(self, message):
        if message and message != self._lastLogMessage:
            self.ui.logTextEdit.appendPlainText(time.strftime("%H:%M:%S ") + message)
            self._lastLogMessage = message

    def onApply(self):
        from BBBAnomalyLib.core.errors import InputError

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
                self.log(_("worker started (process {pid})").format(pid=event.get("pid")) + (
                    _(", started before Apply with its imports done") if getattr(runner, "prestarted", False) else ""))
            elif kind == "log":
                self.log(event.get("message", ""))
                if event.get("message", "").startswith("device:"):
                    self.ui.deviceLabel.text = event["message"]
            elif kind == "progress":
                self.ui.progressBar.value = int(100 * event["fraction"])
                self.ui.statusLabel.text = event["message"]
                self.log(event["message"])
            elif kind == "maps":  # the maps are complete: on screen now, their curves follow
                self.onRunDone(runner, event)
            elif kind == "done":
                self.onRunDone(runner, event)
            elif kind == "error":  # the command line's one line, with the panel field beside each flag it names
                message = self.panelMessage(event["message"])
                self.ui.statusLabel.text = _("Failed: {message}").format(message=message)
                self.log(_("error: {message}").format(message=message)
                         + (f" ({_('details in')} {event['log']})" if event.get("log") else ""))
                slicer.util.errorDisplay(message, windowTitle=_("BBBAnomaly"))
            elif kind == "cancelled":
                if self.lastRun is not None and self.lastRun.get("runner") is runner:  # after its maps
                    self.ui.statusLabel.text = _("Cancelled while the curves were written: the maps are loaded, "
                                                 "their curves were not kept.")
                    self.log(_("cancelled after the maps were loaded; the worker has ended, no curves were kept"))
                elif event.get("published"):  # Cancel came as the results were put in place: they are complete there
                    where = ", ".join(event["published"])
                    self.ui.statusLabel.text = _("Cancelled after the results were written to {where}; nothing was "
                                                 "added to the scene.").format(where=where)
                    self.log(_("cancelled after the results were complete in {where}; nothing was imported")
                             .format(where=where))
                else:
                    self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
                    self.log(_("cancelled; the worker has ended and nothing was imported"))
        if runner.finished:
            self.pollTimer.stop()
            self.ui.progressBar.visible = False
            self.logic.cleanupRun(runner)
            self.updateApplyState()
            if self.ui.inputSelector.currentNode() is not None:
                self.prestartWorker()  # for the next Apply

    @staticmethod
    def panelWarnings(pipeline, event):
        """The run's warnings as the panel shows them: a command-line flag the panel has a field for is followed by
        that field's label ("--relaxivity 3.32 (panel: Relaxivity r1, Advanced section)"); the report keeps the
        command line's words."""
        from BBBAnomalyLib.app.flag_labels import with_panel_labels

        return [with_panel_labels(pipeline, str(warning)) for warning in event.get("warnings") or []]

    def panelMessage(self, message):
        """A refusal's line as the panel shows it: "give --t10" is followed by "(panel: T10 (s))" (as
        :meth:`panelWarnings`); the run's own words where no run request is known."""
        from BBBAnomalyLib.app.flag_labels import with_panel_labels

        request = getattr(self, "runRequest", None)
        return with_panel_labels(request.pipeline, str(message)) if request is not None else str(message)

    def onRunDone(self, runner, event):
        """``maps``: load the maps (the panel's runs announce them before their curves are written);
        ``done``: load them if that has not happened, and note where the curves are."""
        if runner is not self.runner or getattr(runner, "cancelled", False):
            return  # belt and braces: the runner already drops everything after Cancel
        loaded = self.lastRun is not None and self.lastRun.get("runner") is runner
        if not loaded:
            request = self.runRequest
            try:
                with slicer.util.WaitCursor():
                    outputs = self.logic.finishRun(runner, request, replace=self.ui.replaceCheckBox.checked,
                                                   opacity=self.ui.opacitySlider.value)
            except Exception as exc:
                logging.exception("BBBAnomaly: loading the results failed")
                self.ui.statusLabel.text = _("Could not load the results: {error}").format(error=exc)
                return
            self.lastRun = {"outputs": outputs, "request": request, "event": event, "runner": runner, "curves": None,
                            "name": next(iter(outputs.map_nodes.values())).GetAttribute("BBBAnomaly.RunName")}
            self.curveCache = None
            self.ui.outputMapSelector.setCurrentNode(next(iter(outputs.map_nodes.values())))
            echoes = outputs.report.get("input") or {}
            if echoes.get("second_echo_time_s"):  # as the command line's summary says it
                self.log(_("dual-echo: TE {te1:g} and {te2:g} ms{source}").format(
                    te1=echoes["echo_time_s"] * 1e3, te2=echoes["second_echo_time_s"] * 1e3,
                    source=f" ({echoes['second_echo_source']})" if echoes.get("second_echo_source") else ""))
            for warning in self.panelWarnings(request.pipeline, event):
                self.log(_("warning: {text}").format(text=warning))
            # what the command line prints after the same run: AIF, medians, tumour/NAWM ratios and the caveat a
            # ratio keeps, the T1/FLAIR BBB status and every reason behind it (e.g. a resection cavity in the ROI)
            from BBBAnomalyLib.app.run_summary import summary_lines

            for line in summary_lines(request.pipeline, outputs.report, outputs.map_nodes):
                self.log(line)
        outputs = self.lastRun["outputs"]
        if event["event"] == "maps":
            self.ui.statusLabel.text = _("Maps loaded in {seconds:.1f} s: {maps}; keeping their curves...").format(
                seconds=time.monotonic() - self.runStarted, maps=", ".join(outputs.map_nodes))
            self.log(self.ui.statusLabel.text)
            return
        self.lastRun["event"] = event
        self.lastRun["curves"] = event.get("curves")
        warnings = self.panelWarnings(self.lastRun["request"].pipeline, event)
        self.ui.statusLabel.text = _("Done in {seconds:.1f} s: {maps}.").format(
            seconds=time.monotonic() - self.runStarted, maps=", ".join(outputs.map_nodes)) + "".join(
            "\n" + _("Warning: ") + w for w in warnings)
        self.log(self.ui.statusLabel.text.splitlines()[0])
