"""The parameter form of a pipeline, built from the registry (``BBBAnomalyLib.app.pipelines``)."""

import qt
from slicer.i18n import tr as _


class ParameterFormMixin:
    """For BBBAnomalyWidget: one widget per user parameter, defaults and tooltips from the registry (and, under a
    parameter the input's DICOM header can state, a hint row: HeaderHintsMixin)."""

    def buildParameterWidgets(self, spec):
        for layout in (self.ui.parametersWidget.layout(), self.ui.advancedCollapsibleButton.layout()):
            while layout.count():
                item = layout.takeAt(0)
                if item.widget():
                    item.widget().deleteLater()
        self.parameterWidgets = {}
        self.headerHintRows = {}  # (their widgets went with the layout's items above)
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
            self.addHeaderHintRow(spec, p.name, layout)  # e.g. the dose the input's DICOM header states
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
