"""The panel's choices in the module's parameter node, so that they are saved with the scene."""

import json

import qt

#: How a pipeline's stored parameters are written ("<pipeline>.ParametersFormat"; absent: before session 24).
PARAMETERS_FORMAT = "2"
#: {(pipeline, parameter): value}: what a scene saved before session 24 stored for a default that is now "unknown"
#: (the DCE relaxivity's 4.5 is now None = the default, told apart from a chosen 4.5). Such a scene's value is the
#: default it was then, so it comes back as "unknown": the run warns about the header's agent as it did.
LEGACY_DEFAULTS = {("dce", "relaxivity"): 4.5}


class ParameterNodeMixin:
    """For BBBAnomalyWidget: pipeline, parameters per pipeline, selected nodes and segments, AIF
    source, device and Replace, written on every change and restored on enter and scene load."""

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
        node.SetParameter(f"{pipeline}.ParametersFormat", PARAMETERS_FORMAT)
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
            pipeline = self.ui.pipelineSelector.currentData
            stored = node.GetParameter(f"{pipeline}.Parameters")
            legacy = node.GetParameter(f"{pipeline}.ParametersFormat") != PARAMETERS_FORMAT
            for name, value in (json.loads(stored) if stored else {}).items():
                widget = self.parameterWidgets.get(name)
                if widget is None:
                    continue
                if legacy and (pipeline, name) in LEGACY_DEFAULTS and value == LEGACY_DEFAULTS[pipeline, name]:
                    value = None  # that scene's default (see LEGACY_DEFAULTS)
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
