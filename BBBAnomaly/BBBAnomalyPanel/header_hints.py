"""What the input's DICOM header says about a parameter, shown under that parameter's field with a Use button
(today the DCE contrast dose and the agent's relaxivity r1: ``BBBAnomalyLib.app.header_hints``; the facts are read
from the node's DICOM files by ``BBBAnomalyLib.app.mrml.dicom_header``, as the run itself gets them)."""

import logging

import qt
from slicer.i18n import tr as _


class HeaderHintsMixin:
    """For BBBAnomalyWidget: a hidden hint row under each parameter that can have one (built with the form), filled
    when the input changes."""

    def addHeaderHintRow(self, spec, name, layout):
        """Under parameter ``name``'s field: a label and a Use button, hidden until the input's header says
        something."""
        from BBBAnomalyLib.app.header_hints import HINTS

        if name not in HINTS.get(spec.name, {}):
            return
        row = qt.QWidget()
        rowLayout = qt.QHBoxLayout(row)
        label = qt.QLabel()
        label.wordWrap = True
        button = qt.QPushButton(_("Use"))
        button.toolTip = _("Fill the field with the value the DICOM header states")
        rowLayout.addWidget(label, 1)
        rowLayout.addWidget(button)
        # PythonQt passes clicked(bool)'s argument: the lambda takes it (and closes over this call's name)
        button.connect("clicked(bool)", lambda checked: self.useHeaderHint(name))
        layout.addRow("", row)
        row.visible = False
        self.headerHintRows[name] = (row, label, button)

    def showHeaderHints(self, node):
        """The hints of ``node``'s DICOM header for the current pipeline (none: rows hidden, tooltips as built);
        returns them. Reads a few DICOM headers (the files Slicer loaded the node from), nothing when it has none."""
        self.headerHints = {}
        if node is not None and self.headerHintRows:
            try:
                from BBBAnomalyLib.app import mrml
                from BBBAnomalyLib.app.header_hints import parameter_hints

                # the acquisition a run of this node gets (node_header): its header facts and the field strength
                # its DICOM files state (the agent's r1 is read at that field)
                acquisition = mrml.with_header_facts(mrml.describe_input(node).acquisition, node)
                self.headerHints = parameter_hints(self.currentSpec().name, acquisition.extra,
                                                   acquisition.field_strength)
            except Exception:  # noqa: BLE001 - only a hint; the run reads the same facts and reports them
                logging.exception("BBBAnomaly: reading the DICOM header of the input failed")
        parameters = {p.name: p for p in self.currentSpec().parameters}
        for name, (row, label, button) in self.headerHintRows.items():
            hint = self.headerHints.get(name)
            row.visible = hint is not None
            label.text = hint.text if hint else ""
            label.toolTip = hint.details if hint else ""
            button.visible = hint is not None and hint.value is not None
            self.parameterWidgets[name].toolTip = parameters[name].tooltip + ("\n\n" + hint.details if hint else "")
            if hint is not None:  # the field may sit in the collapsed Advanced section: said under the input too
                where = _(" (Advanced section)") if parameters[name].advanced else ""
                self.ui.inputInfoLabel.text += "\n" + parameters[name].label + where + ": " + hint.text
        return self.headerHints

    def useHeaderHint(self, name):
        hint = self.headerHints.get(name)
        if hint is not None and hint.value is not None:
            self.parameterWidgets[name].value = hint.value  # -> valueChanged -> onGUIChanged (kept in the scene)
