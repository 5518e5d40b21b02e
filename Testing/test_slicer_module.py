"""Static checks of the Slicer extension skeleton that run without Slicer.

Slicer itself runs BBBAnomalyTest (in BBBAnomaly/BBBAnomaly.py); these tests catch, in plain
pytest, the mistakes that only show up once the module is loaded in Slicer or built as an
extension: a widget name the code looks up but the .ui lacks, an undeclared custom widget,
a MRML widget that never gets the scene, a file CMake lists but the tree lacks, a package
file that the extension would not ship, a broken icon. One test also runs BBBAnomaly.py itself
(import and self-test) against minimal stand-ins for the Slicer API.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "BBBAnomaly"
MODULE_PY = MODULE_DIR / "BBBAnomaly.py"
PANEL_DIR = MODULE_DIR / "BBBAnomalyPanel"  # the panel's parts (form, parameter node, results, logic)
PANEL_FILES = sorted(PANEL_DIR.glob("*.py"))
UI_FILE = MODULE_DIR / "Resources" / "UI" / "BBBAnomaly.ui"
LIB_DIR = ROOT / "BBBAnomalyLib"
ICONS = [ROOT / "BBBAnomaly.png", MODULE_DIR / "Resources" / "Icons" / "BBBAnomaly.png"]
MODULE_CLASSES = ["BBBAnomaly", "BBBAnomalyWidget", "BBBAnomalyLogic", "BBBAnomalyTest"]
#: The public repository, once there is one ("https://github.com/<owner>/<name>"); None until then.
PUBLISHED_REPOSITORY = None


# --- helpers ----------------------------------------------------------------------------------
def _cmake_text(path: Path) -> str:
    """CMake source without comments (a '#' inside a quoted string is kept)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        in_quotes = False
        for i, ch in enumerate(line):
            if ch == '"':
                in_quotes = not in_quotes
            elif ch == "#" and not in_quotes:
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _cmake_calls(text: str, command: str) -> list[list[str]]:
    """Arguments of every call to `command` (no nested parentheses in the calls we parse)."""
    calls = []
    for m in re.finditer(rf"\b{re.escape(command)}\s*\(([^)]*)\)", text, re.IGNORECASE):
        calls.append([a.strip('"') for a in re.findall(r'"[^"]*"|[^\s"]+', m.group(1))])
    return calls


def _cmake_set(text: str, name: str) -> list[str]:
    for args in _cmake_calls(text, "set"):
        if args and args[0] == name:
            return args[1:]
    raise AssertionError(f"set({name} ...) not found")


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], value)


def _ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def _module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _panel_asts() -> list[ast.Module]:
    """BBBAnomaly.py and the files of BBBAnomalyPanel/, all imported when Slicer loads the module."""
    return [_module_ast()] + [ast.parse(f.read_text(encoding="utf-8"), filename=str(f)) for f in PANEL_FILES]


def _installed_lib_files() -> set[str]:
    """Files (relative to BBBAnomalyLib/) that the top-level CMakeLists.txt installs.

    Emulates its two kinds of file(GLOB_RECURSE): BBBAnomalyLib/*.py and
    BBBAnomalyLib/<subdir>/<name pattern> for each BBBAnomalyLib_DATA_GLOBS entry; CMake matches
    the name pattern in every folder below <subdir>.
    """
    text = _cmake_text(ROOT / "CMakeLists.txt")
    assert "${CMAKE_CURRENT_SOURCE_DIR}/BBBAnomalyLib/*.py" in text
    assert "${CMAKE_CURRENT_SOURCE_DIR}/BBBAnomalyLib/${_glob}" in text
    files = set()
    for pattern in ["*.py", *_cmake_set(text, "BBBAnomalyLib_DATA_GLOBS")]:
        subdir, _, name_pattern = pattern.rpartition("/")
        base = LIB_DIR / subdir
        for f in base.rglob("*"):
            if f.is_file() and fnmatch.fnmatchcase(f.name, name_pattern) and "__pycache__" not in f.parts:
                files.add(f.relative_to(LIB_DIR).as_posix())
    return files


# --- the Qt Designer file -----------------------------------------------------------------------
def test_ui_parses_with_a_qmrmlwidget_root():
    root = _ui_tree()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget"


def test_ui_has_inputs_section_with_volume_and_sequence_selector():
    root = _ui_tree()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    inputs = widgets["inputsCollapsibleButton"]
    assert inputs.get("class") == "ctkCollapsibleButton"
    assert inputs.find("property[@name='text']/string").text == "Inputs"
    selector = widgets["inputSelector"]
    assert selector.get("class") == "qMRMLNodeComboBox"
    assert selector in list(inputs.iter("widget")), "inputSelector must sit inside the Inputs section"
    node_types = [s.text for s in selector.findall("property[@name='nodeTypes']/stringlist/string")]
    assert {"vtkMRMLScalarVolumeNode", "vtkMRMLSequenceNode"} <= set(node_types)
    for name in ("versionLabel", "statusLabel"):
        assert widgets[name].get("class") == "QLabel"


def test_ui_custom_widget_classes_are_declared():
    root = _ui_tree()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    # Qt's own widgets start with "Q"; everything else (ctk*, qMRML*, qSlicer*) needs a declaration.
    custom = {c for c in used if not c.startswith("Q")}
    assert custom, "expected ctk/qMRML widgets in the .ui"
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"


def test_ui_every_mrml_widget_gets_the_scene():
    root = _ui_tree()
    top = root.find("widget")
    connections = {
        (c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
        for c in root.iter("connection")
    }
    mrml_widgets = [w.get("name") for w in top.iter("widget") if w is not top and w.get("class").startswith("qMRML")]
    assert "inputSelector" in mrml_widgets
    for name in mrml_widgets:
        expected = (top.get("name"), "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)")
        assert expected in connections, f"{name} is not connected to the scene"


def test_ui_object_names_are_unique():
    names = [w.get("name") for w in _ui_tree().iter("widget")]
    assert len(names) == len(set(names))


# --- the module script ------------------------------------------------------------------------
def test_module_compiles_and_defines_the_four_classes():
    source = MODULE_PY.read_text(encoding="utf-8")
    compile(source, str(MODULE_PY), "exec")
    classes = {n.name: n for n in _module_ast().body if isinstance(n, ast.ClassDef)}
    for name in MODULE_CLASSES:
        assert name in classes, f"BBBAnomaly.py lacks class {name}"
    bases = {name: [ast.unparse(b) for b in classes[name].bases] for name in MODULE_CLASSES}
    assert bases["BBBAnomaly"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in bases["BBBAnomalyWidget"]
    assert bases["BBBAnomalyLogic"][0] == "ScriptedLoadableModuleLogic"
    assert bases["BBBAnomalyTest"] == ["ScriptedLoadableModuleTest"]
    test_methods = {n.name for n in classes["BBBAnomalyTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"setUp", "runTest", "test_LibraryImports", "test_DSCPhantom"} <= test_methods
    run_test = next(n for n in classes["BBBAnomalyTest"].body if isinstance(n, ast.FunctionDef) and n.name == "runTest")
    # each self-test is called from runTest, directly or from a loop over them (the widget test runs runTest itself)
    referenced = {ast.unparse(n) for n in ast.walk(run_test) if isinstance(n, ast.Attribute)}
    assert {"self.test_LibraryImports", "self.test_DSCPhantom"} <= referenced, "runTest must run every self-test"


def test_module_metadata():
    tree = _module_ast()
    init = next(
        f
        for c in tree.body
        if isinstance(c, ast.ClassDef) and c.name == "BBBAnomaly"
        for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
    )
    assigned = {
        ast.unparse(target): ast.unparse(node.value)
        for node in ast.walk(init)
        if isinstance(node, ast.Assign)
        for target in node.targets
    }
    assert "'BBBAnomaly'" in assigned["self.parent.title"]
    assert "'Quantification'" in assigned["self.parent.categories"]
    for attr in ("contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attr}" in assigned


def test_module_imports_nothing_heavy_at_import_time():
    """Slicer imports the file at start-up: no torch, no BBBAnomalyLib, no pip at module level."""
    for tree in _panel_asts():
        for node in tree.body:  # top-level statements only; imports inside functions are lazy
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert not (name or "").startswith(("torch", "BBBAnomalyLib", "pip", "nibabel", "sklearn",
                                                        "matplotlib")), name
    for f in [MODULE_PY, *PANEL_FILES]:
        assert "pip install" not in f.read_text(encoding="utf-8")


def test_packages_are_installed_only_after_asking():
    """pip and the PyTorch installer run only inside functions that ask the user first, and never
    for the packages Slicer bundles."""
    installers = ("slicer.util.pip_install", "torchLogic.installTorch")
    for function in (n for tree in _panel_asts() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        calls = {ast.unparse(n.func): n for n in ast.walk(function) if isinstance(n, ast.Call)}
        used = [c for c in calls if c in installers]
        if not used:
            continue
        asks = "slicer.util.confirmOkCancelDisplay" in calls or any(
            kw.arg == "askConfirmation" for c in used for kw in calls[c].keywords)
        assert asks, f"{function.name} installs packages without asking"
    packages = next(n.value for tree in _panel_asts() for n in tree.body
                    if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PIP_PACKAGES")
    names = {ast.literal_eval(k) for k in packages.keys} | {ast.literal_eval(v).split(">")[0] for v in packages.values}
    assert not names & {"numpy", "scipy", "SimpleITK", "vtk", "torch"}, "never pip-install what Slicer bundles"


def test_widget_names_used_in_code_exist_in_ui():
    ui_names = {w.get("name") for w in _ui_tree().iter("widget")}
    used = set()
    for node in (n for tree in _panel_asts() for n in ast.walk(tree)):
        # self.ui.<name>
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            used.add(node.attr)
        # findChild(widget, "name") / widget.findChild(cls, "name") / findChildren(...)
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("findChild", "findChildren"):
                used.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    assert {"versionLabel", "statusLabel"} <= used, "the widget is expected to fill both labels"
    assert used <= ui_names, f"names missing from BBBAnomaly.ui: {sorted(used - ui_names)}"


def test_widget_loads_the_ui_and_sets_the_scene():
    tree = _module_ast()
    widget = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "BBBAnomalyWidget")
    calls = [ast.unparse(n.func) for n in ast.walk(widget) if isinstance(n, ast.Call)]
    assert "slicer.util.loadUI" in calls
    assert any(c.endswith(".setMRMLScene") for c in calls)


def test_resource_paths_used_in_code_exist():
    resources = MODULE_DIR / "Resources"
    paths = [
        n.args[0].value
        for n in ast.walk(_module_ast())
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "resourcePath"
        and n.args
        and isinstance(n.args[0], ast.Constant)
    ]
    assert "UI/BBBAnomaly.ui" in paths
    for p in paths:
        assert (resources / p).is_file(), f"resourcePath({p!r}) does not exist"


# Minimal stand-ins for the Slicer API that BBBAnomaly.py touches at import time and in its
# self-test, so that the module file itself runs here (the real thing runs in Slicer's ctest).
_SLICER_STUB_RUN = textwrap.dedent(
    """
    import importlib.util, sys, types, unittest

    sys.dont_write_bytecode = True  # leave no __pycache__ in the module source folder

    slicer = types.ModuleType("slicer")
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(slm, name, type(name, (), {"__init__": lambda self, *a: None}))
    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            pass
    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    slicer.mrmlScene = types.SimpleNamespace(Clear=lambda *a: None)
    slicer.app = types.SimpleNamespace(connect=lambda signal, slot: True)
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None})
    slicer.util = util
    qt = types.ModuleType("qt")
    sys.modules.update({"slicer": slicer, "slicer.i18n": i18n, "slicer.ScriptedLoadableModule": slm, "qt": qt,
                        "slicer.util": util})

    module_py, repo_root = sys.argv[1], sys.argv[2]
    sys.path = [p for p in sys.path if p not in ("", ".", repo_root)]
    # With BBBAnomalyLib pip-installed (e.g. editable) the source-tree fallback has nothing to do.
    preinstalled = importlib.util.find_spec("BBBAnomalyLib") is not None
    spec = importlib.util.spec_from_file_location("BBBAnomaly", module_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("BBBAnomalyLib", "torch"))
    assert not heavy, f"imported at module import time: {heavy}"
    assert preinstalled or repo_root in sys.path, "source-tree fallback did not add the repository root"

    result = unittest.TextTestRunner(verbosity=0).run(module.BBBAnomalyTest("test_LibraryImports"))
    assert result.wasSuccessful()
    print("version", module.BBBAnomalyLogic.libraryVersion())
    """
)


def test_module_runs_from_a_source_checkout_with_stubbed_slicer(tmp_path):
    """Importing BBBAnomaly.py is cheap, finds BBBAnomalyLib from the repo, and its self-test passes."""
    proc = subprocess.run(
        [sys.executable, "-c", _SLICER_STUB_RUN, str(MODULE_PY), str(ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = re.search(r'^__version__ = "([^"]+)"', (LIB_DIR / "__init__.py").read_text(encoding="utf-8"), re.MULTILINE)
    assert f"version {version.group(1)}" in proc.stdout


# --- CMake --------------------------------------------------------------------------------------
def test_module_cmake_lists_existing_files():
    text = _cmake_text(MODULE_DIR / "CMakeLists.txt")
    variables = {"MODULE_NAME": _cmake_set(text, "MODULE_NAME")[0]}
    assert variables["MODULE_NAME"] == "BBBAnomaly"
    scripts = [_expand(s, variables) for s in _cmake_set(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [_expand(s, variables) for s in _cmake_set(text, "MODULE_PYTHON_RESOURCES")]
    assert scripts[0] == "BBBAnomaly.py"
    assert set(scripts[1:]) == {f.relative_to(MODULE_DIR).as_posix() for f in PANEL_FILES}, "every panel file ships"
    assert {"Resources/Icons/BBBAnomaly.png", "Resources/UI/BBBAnomaly.ui"} <= set(resources)
    for f in scripts + resources:
        assert (MODULE_DIR / f).is_file(), f"BBBAnomaly/CMakeLists.txt lists missing file {f}"
    (build,) = _cmake_calls(text, "slicerMacroBuildScriptedModule")
    assert "${MODULE_PYTHON_SCRIPTS}" in build and "${MODULE_PYTHON_RESOURCES}" in build


def test_module_cmake_registers_the_self_test():
    text = _cmake_text(MODULE_DIR / "CMakeLists.txt")
    assert re.search(r"if\s*\(\s*BUILD_TESTING\s*\)", text)
    assert ["SCRIPT", "${MODULE_NAME}.py"] in _cmake_calls(text, "slicer_add_python_unittest")
    assert ["Testing"] in _cmake_calls(text, "add_subdirectory")
    assert ["Python"] in _cmake_calls(_cmake_text(MODULE_DIR / "Testing" / "CMakeLists.txt"), "add_subdirectory")
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_extension_cmake_metadata_and_structure():
    text = _cmake_text(ROOT / "CMakeLists.txt")
    assert re.search(r"cmake_minimum_required\s*\(\s*VERSION 3\.16\.3\.\.\.3\.19\.7 FATAL_ERROR\s*\)", text)
    assert ["BBBAnomaly"] in _cmake_calls(text, "project")
    assert _cmake_set(text, "EXTENSION_CATEGORY") == ["Quantification"]
    assert _cmake_set(text, "EXTENSION_DEPENDS") == ["PyTorch"]
    description = _cmake_set(text, "EXTENSION_DESCRIPTION")
    assert len(description) == 1 and "Apache License 2.0" in description[0]
    # SlicerExtensionCPack.cmake passes ${EXTENSION_DESCRIPTION} unquoted: CMake would split it at each ';' and the
    # Extensions Manager would show only the part before the first one (round 17's Slicer audit)
    assert ";" not in description[0]
    assert _cmake_set(text, "EXTENSION_CONTRIBUTORS")[0].strip() and _cmake_set(text, "EXTENSION_STATUS")
    # Issue 13, defect 10: only URLs that exist. Until the repository is published there is none,
    # and a drawing is never passed off as an application screenshot.
    urls = {name: " ".join(_cmake_set(text, name)).strip()
            for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS")}
    if PUBLISHED_REPOSITORY is None:
        assert urls == dict.fromkeys(urls, ""), f"placeholder URLs in CMakeLists.txt: {urls}"
    else:
        assert urls["EXTENSION_HOMEPAGE"] == PUBLISHED_REPOSITORY
        for url in (urls["EXTENSION_ICONURL"] + " " + urls["EXTENSION_SCREENSHOTURLS"]).split():
            prefix = PUBLISHED_REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
            assert url.startswith(prefix) and (ROOT / url.removeprefix(prefix)).is_file(), url
            assert "slicer_outputs" not in url, "the matplotlib drawing is not a screenshot"
    for sub in (args[0] for args in _cmake_calls(text, "add_subdirectory")):
        assert (ROOT / sub / "CMakeLists.txt").is_file()
    assert ["BBBAnomaly"] in _cmake_calls(text, "add_subdirectory")
    for needed in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert [needed] in _cmake_calls(text, "include"), needed


def test_extension_cmake_ships_bbbanomalylib():
    text = _cmake_text(ROOT / "CMakeLists.txt")
    builds = _cmake_calls(text, "slicerMacroBuildScriptedModule")
    lib_build = next(b for b in builds if b[:2] == ["NAME", "BBBAnomalyLib"])
    assert "${BBBAnomalyLib_SCRIPTS}" in lib_build and "${BBBAnomalyLib_RESOURCES}" in lib_build
    assert "WITH_GENERIC_TESTS" not in lib_build  # a package, not a Slicer module
    installed = _installed_lib_files()
    assert "__init__.py" in installed and "core/volume.py" in installed


def test_every_package_file_is_installed_by_cmake():
    """A file added to BBBAnomalyLib (weights, phantom data ...) must also ship in the extension."""
    installed = _installed_lib_files()
    present = {
        f.relative_to(LIB_DIR).as_posix()
        for f in LIB_DIR.rglob("*")
        if f.is_file()
        and "__pycache__" not in f.parts
        and not f.name.startswith(".")
        and f.suffix not in (".pyc", ".pyo")
        and not f.name.endswith("~")
    }
    missing = sorted(present - installed)
    assert not missing, (
        f"not installed by CMakeLists.txt: {missing}; add a pattern to BBBAnomalyLib_DATA_GLOBS "
        "(and to [tool.setuptools.package-data] in pyproject.toml)"
    )


def test_cmake_data_globs_cover_pyproject_package_data():
    """The wheel and the extension ship the same package data."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = pyproject["tool"]["setuptools"].get("package-data", {})
    globs = set(_cmake_set(_cmake_text(ROOT / "CMakeLists.txt"), "BBBAnomalyLib_DATA_GLOBS"))
    for patterns in package_data.values():
        for p in patterns:
            assert p in globs, f"pyproject package-data pattern {p!r} is missing from BBBAnomalyLib_DATA_GLOBS"


# --- icons --------------------------------------------------------------------------------------
@pytest.mark.parametrize("icon", ICONS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_icons_are_128px_rgba_pngs(icon):
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(icon)
    assert image.shape == (128, 128, 4)
    alpha = image[..., 3]
    assert 0.2 < (alpha > 0.5).mean() < 0.95, "icon should have a drawing on a transparent background"
