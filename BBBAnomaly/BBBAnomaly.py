"""BBBAnomaly: 3D Slicer scripted module (Module, Widget, Logic, Test).

The science lives in the plain-Python package ``BBBAnomalyLib``; this file is only the Slicer
face of it. Keep imports cheap: Slicer imports this file at start-up to discover the module, so
nothing heavy (torch, BBBAnomalyLib's pipelines) and no package installation happens here.
"""

import importlib.util
import logging
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


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
            "DSC perfusion (CBF, CBV, MTT) runs now, from <code>import BBBAnomalyLib</code> and the "
            "<code>bbbanomaly</code> command; this panel does not run it yet. DCE leakage, "
            "diffusion and T1/FLAIR anomaly maps follow."
        )
        self.parent.acknowledgementText = _(
            "Developed by the BBBAnomaly developers. The learned methods reimplement published work "
            "on model-free DCE leakage mapping, physics-informed DSC autoencoders, diffusion MRI "
            "anomaly detection and contrast-free BBB assessment; see the project documentation for "
            "references and validation."
        )


#
# BBBAnomalyWidget
#


class BBBAnomalyWidget(ScriptedLoadableModuleWidget):
    """Thin panel: an input selector, the library version and a status line (no processing yet)."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BBBAnomaly.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects mrmlSceneChanged(vtkMRMLScene*) to each MRML widget's setMRMLScene slot,
        # so setting the scene on the root reaches inputSelector.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = BBBAnomalyLogic()
        try:
            version = self.logic.libraryVersion()
        except Exception as exc:  # a broken or incomplete install must not stop the panel from opening
            logging.exception("BBBAnomaly: cannot import BBBAnomalyLib")
            self.ui.versionLabel.text = _("BBBAnomalyLib: not available")
            self.ui.statusLabel.text = _("Cannot import BBBAnomalyLib: {error}").format(error=exc)
            return
        self.ui.versionLabel.text = _("BBBAnomalyLib {version}").format(version=version)
        self.ui.statusLabel.text = _("Ready. Processing from this panel arrives in a later version.")


#
# BBBAnomalyLogic
#


class BBBAnomalyLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic, kept thin on purpose.

    Pipelines live in BBBAnomalyLib and the MRML <-> Volume bridge in ``BBBAnomalyLib/mrml.py``
    (testable with the ``slicer-core`` wheel, without the Slicer application); this class only
    grows the calls that the panel needs, when it needs them.
    """

    @staticmethod
    def libraryVersion():
        """Version string of the BBBAnomalyLib that this module imports."""
        _ensureLibraryImportable()
        import BBBAnomalyLib

        return BBBAnomalyLib.__version__


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
