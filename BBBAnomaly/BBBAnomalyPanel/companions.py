"""The panel's image inputs beyond the main one: which selector holds which input, and a companion series (a dual-echo
DSC's second echo, ``InputSpec.same_grid_as``) with its acquisition values (TE2), read from its node, or from the
DICOM files of a series whose DICOM series holds both echoes (``BBBAnomalyLib.app.mrml.dicom_source``)."""

import logging

from slicer.i18n import tr as _


class CompanionInputsMixin:
    """For BBBAnomalyWidget: ``imageSelectors``, the Second echo row and the TE2 field."""

    def imageSelectors(self, spec=None):
        """{input key: node selector} for the pipeline's images: the main input(s) in the first two rows, a
        companion series (a dual-echo DSC's second echo: InputSpec.same_grid_as) in the Second echo row."""
        from BBBAnomalyLib.app.pipelines import InputRole

        spec = spec or self.currentSpec()
        images = [s for s in spec.inputs if s.role is not InputRole.REGION and not s.same_grid_as]
        selectors = dict(zip((s.key for s in images), (self.ui.inputSelector, self.ui.secondInputSelector)))
        selectors.update({s.key: self.ui.secondEchoSelector for s in spec.inputs if s.same_grid_as})
        return selectors

    def showDicomEchoes(self, node):
        """A series Slicer loaded from a DICOM series holding two echoes (its frames mix them): say so and what the
        run does (it reads both echoes from the DICOM files: dual-echo), with both echo times from the headers."""
        if "echoes_in_folder" not in self.currentSpec().extra:
            return
        try:
            from BBBAnomalyLib.app import mrml

            echoes = mrml.dicom_echoes_of(node)
        except Exception:  # noqa: BLE001 - only a hint; Apply reports a real problem
            logging.exception("BBBAnomaly: reading the DICOM headers of the input failed")
            return
        if echoes is None:
            return
        self._dicomEchoes = echoes
        if len(echoes.echo_times_ms) == 2:
            self.ui.echoTimeSpinBox.value, self.ui.secondEchoTimeSpinBox.value = echoes.echo_times_ms
            what = _("Apply runs dual-echo DSC on both echoes, read from its DICOM files (leave Second echo empty).")
        else:
            what = _("DSC takes one echo or two: export the echoes to use as a series of their own.")
        self.ui.inputInfoLabel.text += "\n" + echoes.summary() + ". " + what

    def onSecondEchoChanged(self):
        self.fillCompanionAcquisition()
        self.onGUIChanged()

    def fillCompanionAcquisition(self):
        """An acquisition value of a companion series (TE2 of the second echo) from that node, "unknown" without it."""
        selectors = self.imageSelectors()
        for a in self.currentSpec().acquisition:
            if not a.of_input or (self._dicomEchoes is not None and selectors[a.of_input].currentNode() is None):
                continue  # the main input's DICOM echoes filled it
            node, value = selectors[a.of_input].currentNode(), None
            if node is not None:
                try:
                    from BBBAnomalyLib.app import mrml

                    value = getattr(mrml.describe_input(node).acquisition, a.acquisition_field)
                except Exception:  # noqa: BLE001 - describe only reads attributes; Apply says what is wrong
                    value = None
            self.acquisitionBoxes()[a.name].value = value / a.to_si if value is not None else 0.0
