"""The pipelines the Slicer panel and the background worker can run, described as data.

Each :class:`PipelineSpec` says which inputs a pipeline takes (and in which role, so the panel
shows only the selectors it needs), which parameters a user may set (with defaults, ranges and
tooltips taken from here, not from the .ui file), which acquisition values it needs, and which
function runs it. Adding a pipeline to the panel means adding a spec here; the panel, the worker
and the MRML bridge need no change.

Specs are light: nothing heavy (torch, scipy) is imported until a pipeline runs.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import typing
from dataclasses import dataclass, field

from ..core.errors import InputError


class InputRole(str, enum.Enum):
    SERIES = "series"  # a 4D dynamic series: sequence, MultiVolume or 4D file
    SCALAR = "scalar"  # one 3D volume (T1, FLAIR)
    DWI = "dwi"  # diffusion-weighted volumes with b-values and gradients
    REGION = "region"  # a mask: markups ROI, segment or labelmap (AIF, brain, NAWM, tumor)


@dataclass(frozen=True)
class InputSpec:
    key: str  # keyword of the run function ("series", "aif_mask", "brain_mask", ...)
    role: InputRole
    label: str
    required: bool = False
    tooltip: str = ""
    positional: bool = False  # passed positionally, before the parameters (the main image(s))
    passed_to_run: bool = True  # False: used by the panel only (e.g. NAWM as the ratio table's reference)
    #: a companion series of that input (a dual-echo DSC's second echo): the same grid and frame count, checked
    #: before anything is handed over; the panel shows it in its own selector row
    same_grid_as: str = ""


@dataclass(frozen=True)
class ParameterSpec:
    """One user-settable field of a pipeline's parameter dataclass."""

    name: str  # the dataclass field
    label: str
    tooltip: str
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) pairs for a combo box
    minimum: float | None = None
    maximum: float | None = None
    decimals: int = 3
    advanced: bool = False  # shown in the collapsed "Advanced" section
    optional: bool = False  # a number that may be None: the panel shows "unknown" at the minimum


@dataclass(frozen=True)
class AcquisitionSpec:
    """An acquisition value the pipeline needs, read from the node's attributes when present and
    editable in the panel when not. Shown to the user in ``display_unit``; stored in SI units."""

    name: str  # Acquisition field or "frame_interval"
    label: str
    display_unit: str
    to_si: float  # display value * to_si = stored value
    tooltip: str
    needed_for: str = "always"  # "always"; "signal": not for concentration input; "quantitative": signal input with T10
    #: the input whose node holds it and whose volume it describes ("": the main series); a value of an optional
    #: input (TE2 of the second echo) is needed only when that input is given, and refused without it
    of_input: str = ""
    field: str = ""  # the Acquisition field on that input's volume ("": ``name``)

    @property
    def acquisition_field(self) -> str:
        return self.field or self.name

    def needed(self, parameters: dict, inputs: dict | None = None) -> bool:
        if self.of_input and (inputs or {}).get(self.of_input) is None:
            return False
        signal = parameters.get("input_kind", "signal") != "concentration"
        if self.needed_for == "signal":
            return signal
        if self.needed_for == "quantitative":
            return signal and parameters.get("t10") is not None
        return True


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    label: str
    description: str
    inputs: tuple[InputSpec, ...]
    parameters_class: str | None = None  # "module:Class" of the parameter dataclass
    parameters: tuple[ParameterSpec, ...] = ()
    acquisition: tuple[AcquisitionSpec, ...] = ()
    runner: str | None = None  # "module:function"; None while the pipeline is not implemented yet
    unavailable: str = ""  # why it cannot run yet (shown in the panel)
    needs_torch: bool = False
    torch_methods: tuple[str, ...] = ()  # values of the `method` parameter that need torch
    uses_device: bool = False  # has a `device` parameter (auto/cpu/cuda)
    extra: dict = field(default_factory=dict, hash=False)

    @property
    def available(self) -> bool:
        return self.runner is not None

    def torch_needed(self, parameters: dict | None = None) -> bool:
        """Whether a run with these parameters imports torch (to install it first, after asking)."""
        return self.needs_torch or (parameters or {}).get("method") in self.torch_methods

    def input(self, key: str) -> InputSpec:
        for spec in self.inputs:
            if spec.key == key:
                return spec
        raise KeyError(f"pipeline {self.name!r} has no input {key!r}")

    def parameters_type(self):
        if self.parameters_class is None:
            raise InputError(f"the {self.label} pipeline is not available yet: {self.unavailable}")
        module, cls = self.parameters_class.split(":")
        return getattr(importlib.import_module(module), cls)

    def default_parameters(self) -> dict:
        """{field: default} of the user-settable parameters, JSON-ready (enums as values)."""
        if not self.available:
            return {}
        from ..core.report import parameters_to_json

        cls = self.parameters_type()
        defaults = parameters_to_json(cls())
        # an optional parameter whose field defaults to None that the dataclass resolves (DCE's relaxivity: None = 4.5,
        # told apart from a chosen 4.5) starts at the panel's "unknown", not at the number it resolves to
        unset = {f.name for f in dataclasses.fields(cls) if f.default is None}
        return {p.name: None if p.optional and p.name in unset else defaults[p.name] for p in self.parameters}

    def make_parameters(self, values: dict | None = None):
        """The parameter dataclass from user values; unknown names are an error, not ignored."""
        cls = self.parameters_type()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - names)
        if unknown:
            raise InputError(f"unknown {self.name} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        values = {name: _check_parameter_type(self.name, name, value, hints.get(name))
                  for name, value in (values or {}).items()}
        try:
            return cls(**values)
        except InputError:
            raise
        except (TypeError, ValueError) as exc:  # a value the dataclass cannot take: say which, in one line
            raise InputError(f"{self.name} parameters: {exc}") from None

    def missing(self, inputs: dict, acquisition: dict | None = None, parameters: dict | None = None,
                chosen_regions: tuple[str, ...] = ()) -> list[str]:
        """What stops a run now, in words for the Apply button's tooltip (empty: ready).

        inputs: {key: node/value or None}; acquisition: {name: SI value or None} as the panel has
        it (from the node or typed); chosen_regions: region keys the user asked for explicitly
        (e.g. an AIF from a ROI) that must then be filled.
        """
        if not self.available:
            return [self.unavailable]
        missing = [s.label for s in self.inputs if s.required and inputs.get(s.key) is None]
        missing += [f"{self.input(k).label} (or choose Automatic)" for k in chosen_regions if inputs.get(k) is None]
        for a in self.acquisition:
            value = (acquisition or {}).get(a.name)
            if value is None and a.needed(parameters or {}, inputs):
                missing.append(f"{a.label} ({a.display_unit})")
            elif value is not None and a.of_input and inputs.get(a.of_input) is None:
                # one without the other: a TE2 typed for a second echo that was not chosen would be dropped in silence
                missing.append(f"{self.input(a.of_input).label} (a {a.label} was entered: choose its series, "
                               "or set the time back to unknown)")
        return missing

    def run(self, inputs: dict, parameters: dict | None = None, progress=None, **options):
        """Run on in-memory inputs ({key: Volume or mask}); returns the pipeline's result object
        (``.maps``, ``.report``, ``.write(out_dir, overwrite, suffix)``, ``.curves()``)."""
        if not self.available:
            raise InputError(f"the {self.label} pipeline is not available yet: {self.unavailable}")
        missing = [s.label for s in self.inputs if s.required and inputs.get(s.key) is None]
        if missing:
            raise InputError(f"the {self.label} pipeline needs: {', '.join(missing)}")
        unknown = sorted(set(inputs) - {s.key for s in self.inputs})
        if unknown:
            raise InputError(f"the {self.label} pipeline takes no input named {', '.join(unknown)}")
        module, function = self.runner.split(":")
        run = getattr(importlib.import_module(module), function)
        params = self.make_parameters(parameters)
        args = [inputs[s.key] for s in self.inputs if s.positional]
        kwargs = {s.key: inputs.get(s.key) for s in self.inputs if not s.positional and s.passed_to_run}
        return run(*args, params, progress=progress, **kwargs, **options)


def _check_parameter_type(pipeline: str, name: str, value, hint):
    """The value, or one line refusing a value of the wrong JSON type (a job file can hold anything).

    A whole number given as a float (2.0, as Qt's double spin boxes give it) is taken as an int.
    """
    if hint is None:
        return value
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return value
        hint = next((a for a in args if a is not type(None)), hint)
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if value is None:
        raise InputError(f"{pipeline} parameter {name!r} cannot be null")
    if origin is bool:
        ok = isinstance(value, bool)
        want = "true or false"
    elif origin is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a whole number"
    elif origin is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif origin is str:
        ok = isinstance(value, str)
        want = "a string"
    elif isinstance(origin, type) and issubclass(origin, enum.Enum):
        allowed = [m.value for m in origin]
        ok = value in allowed or isinstance(value, origin)
        want = "one of " + ", ".join(map(str, allowed))
    elif origin in (tuple, list):
        ok = isinstance(value, (list, tuple))
        want = "a list"
    elif origin is dict:
        ok = isinstance(value, dict)
        want = "an object"
    else:
        return value
    if not ok:
        raise InputError(f"{pipeline} parameter {name!r} must be {want}, not {value!r}")
    return value


# --- the pipelines ------------------------------------------------------------------------
_SERIES_TIP = ("the dynamic series: a volume sequence (how 4D DICOM loads), a MultiVolume or a 4D volume; "
               "frame times come from its attributes or from the acquisition fields below")
#: --slice-timing (perfusion/slice_timing.py), the same for DSC and DCE
_SLICE_TIMING = ParameterSpec(
    "slice_timing", "Slice timing", "a 2D multi-slice series acquires each slice at its own time within the frame: "
    "none (default) reads every slice at its frame's time (a warning where the series gives slice times); auto uses "
    "the slice times the series carries (SliceTiming, the DICOM slices' times) and reads each slice against the AIF "
    "at its own time", choices=(("none", "none"), ("auto", "auto")), advanced=True)
_FRAME_INTERVAL = AcquisitionSpec(
    "frame_interval", "Frame interval", "s", 1.0,
    "seconds between frames; read from the sequence's time index or MultiVolume frame labels when they exist")

DSC = PipelineSpec(
    name="dsc",
    label="DSC perfusion",
    description="CBV, CBF, MTT, Tmax and BSW leakage K2 from a T2*-weighted DSC series "
                "(sSVD, cSVD, oSVD or Tikhonov deconvolution)",
    inputs=(
        InputSpec("series", InputRole.SERIES, "DSC series", True, _SERIES_TIP, positional=True),
        InputSpec("aif_mask", InputRole.REGION, "AIF region",
                  tooltip="a markups ROI or segment around an artery (e.g. the MCA); empty = automatic AIF "
                          "(Mouridsen 2006)"),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask",
                  tooltip="voxels to analyse; empty = automatic (Otsu on the temporal mean)"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment",
                  tooltip="normal-appearing white matter: gives rCBV and rCBF, and the reference of the ratio table"),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment",
                  tooltip="kept out of the BSW leakage reference; summarised in the report and ratio table"),
        # dual-echo DSC (the 2020 consensus's alternative to a preload): the T1-free ΔR2* from the two echoes' ratio
        InputSpec("second_echo", InputRole.SERIES, "Second echo",
                  tooltip="optional: the second (longer) echo of a dual-echo DSC series, on the same grid with the same "
                          "frames; the ΔR2* then comes from the two echoes' ratio, free of T1 leakage effects. A series "
                          "Slicer loaded from a DICOM series holding both echoes needs nothing here: the run reads "
                          "both echoes from its DICOM files",
                  same_grid_as="series"),
    ),
    parameters_class="BBBAnomalyLib.dsc.parameters:DSCParameters",
    parameters=(
        ParameterSpec("method", "Deconvolution", "oSVD is the clinical default (delay-insensitive, "
                      "per-voxel threshold); Tikhonov with GCV is smoother; sSVD underestimates CBF when the "
                      "bolus is delayed; PHAE is the physics-informed autoencoder (learned on simulated curves only, "
                      "not clinically validated; read it beside oSVD and its fit-error and uncertainty maps)",
                      choices=(("osvd", "oSVD"), ("csvd", "cSVD"), ("ssvd", "sSVD"), ("tikhonov", "Tikhonov (GCV)"),
                               ("phae", "PHAE (learned)"))),
        ParameterSpec("leakage_correction", "Leakage correction",
                      "Boxerman-Schmainda-Weisskoff correction of contrast leakage (recommended for glioma)",
                      choices=(("bsw", "BSW"), ("none", "none"))),
        ParameterSpec("input_kind", "Input", "a T2*-weighted signal, or curves already converted to ΔR2*",
                      choices=(("signal", "signal"), ("concentration", "ΔR2* / concentration"))),
        ParameterSpec("kh", "Hematocrit factor kH", "(1 - Hct_large) / (1 - Hct_small); 0.73 clinically, "
                      "1 for ml/100 ml", minimum=0.1, maximum=2.0, decimals=2, advanced=True),
        ParameterSpec("density", "Brain density (g/ml)", "1.04 clinically; 1 for ml/100 ml",
                      minimum=0.5, maximum=2.0, decimals=2, advanced=True),
        ParameterSpec("osvd_oi_target", "oSVD oscillation target", "oscillation-index target: 0.095 in vivo, "
                      "0.035 for simulations (Wu 2003)", minimum=0.001, maximum=0.999, decimals=3, advanced=True),
        ParameterSpec("skip_frames", "Skipped frames", "frames dropped at the start (not yet in steady state)",
                      minimum=0, maximum=20, decimals=0, advanced=True),
        ParameterSpec("motion_correct", "Motion", "head motion during the series: none (default: read as stored), "
                      "detect (each frame registered to the first; displacements in the report, a warning over half a "
                      "voxel) or rigid (also realigns the moved frames: removes most but not all of the error). "
                      "About 1 s a frame (DSC), 6 s (a 256x256x30 DCE frame)",
                      choices=(("none", "none"), ("detect", "detect"), ("rigid", "rigid")), advanced=True),
        _SLICE_TIMING,
    ),
    acquisition=(
        _FRAME_INTERVAL,
        AcquisitionSpec("echo_time", "Echo time (TE)", "ms", 1e-3,
                        "TE of the series; read from the DICOM attributes when present", needed_for="signal"),
        AcquisitionSpec("second_echo_time", "Second echo time (TE2)", "ms", 1e-3,
                        "TE of the second echo (longer than TE); read from its DICOM attributes when present",
                        needed_for="signal", of_input="second_echo", field="echo_time"),
    ),
    runner="BBBAnomalyLib.dsc.pipeline:run_dsc",
    torch_methods=("phae",),
    uses_device=True,
    # curve_options: run options that make result.curves() work; roi_aif_parameters: a markups ROI
    # box around an artery is a search region, not a list of arterial voxels.
    # run_options: what every job run passes; the series is the job's own copy, read for this run
    # only, so the run may free it once its curves are gathered (peak memory, issue 17).
    extra={"curve_options": {"keep_curves": True}, "roi_aif_parameters": {"aif_region": True},
           "run_options": {"consume_input": True},
           # imported by a run, preloaded by the warm worker (arterial_auto: the automatic AIF, scikit-learn)
           "preload": ("BBBAnomalyLib.perfusion.arterial", "BBBAnomalyLib.perfusion.arterial_auto"),
           # a job's series given as a DICOM folder whose series holds two echo times is dual-echo input, as for
           # `bbbanomaly dsc FOLDER`: echo 1 the series, echo 2 its second echo (app/echoes.py)
           "echoes_in_folder": ("series", "second_echo", "echo_time", "second_echo_time")},
)

DCE = PipelineSpec(
    name="dce",
    label="DCE leakage",
    description="model-free residual leakage signal (RLS, unsupervised autoencoder trained on this case's "
                "normal-appearing brain) beside Tofts / extended Tofts / Patlak Ktrans, ve, vp",
    inputs=(
        InputSpec("series", InputRole.SERIES, "DCE series", True, _SERIES_TIP, positional=True),
        InputSpec("aif_mask", InputRole.REGION, "AIF region",
                  tooltip="a markups ROI box around an artery (its arterial voxels are found) or a segment of "
                          "arterial voxels (all averaged), e.g. the superior sagittal sinus or the ICA; empty = "
                          "Parker population AIF shifted to the detected bolus arrival"),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="voxels to analyse; empty = automatic"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment", tooltip="reference of the ratio table",
                  passed_to_run=False),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment",
                  tooltip="left out of the per-case RLS training; summarised in the report and ratio table"),
    ),
    parameters_class="BBBAnomalyLib.dce.parameters:DCEParameters",
    parameters=(
        ParameterSpec("model", "Pharmacokinetic model", "extended Tofts is the usual choice in brain tumors; "
                      "Patlak for low leakage (no backflux); 2CXM/2CUM separate plasma flow Fp from permeability "
                      "PS (needs fast sampling, ~2 s frames or better)",
                      choices=(("extended-tofts", "extended Tofts"), ("tofts", "Tofts"), ("patlak", "Patlak"),
                               ("2cxm", "2CXM (exchange)"), ("2cum", "2CUM (uptake)"))),
        ParameterSpec("rls", "RLS autoencoder", "automatic (default): the bundled weights (trained on simulated "
                      "normal brain) for protocols inside their training domain; outside it trained on this case when "
                      "a tumor segment is given and enough normal brain is left (the report says which and why); or "
                      "force either; or classic maps only",
                      choices=(("auto", "automatic"), ("case", "trained on this case"), ("bundled", "bundled weights"),
                               ("none", "none"))),
        ParameterSpec("input_kind", "Input", "T1-weighted SPGR signal, or concentration (mM)",
                      choices=(("signal", "signal"), ("concentration", "concentration (mM)"))),
        ParameterSpec("t10", "T10 (s)", "pre-contrast T1 of tissue in seconds; unknown = relative enhancement "
                      "(semi-quantitative Ktrans)", minimum=0.0, maximum=10.0, decimals=2, optional=True),
        # beside T10: a single tissue T10 used for the artery reads the AIF too high (dce.aif.BLOOD_T10_S)
        ParameterSpec("blood_t10", "Blood T10 (s)", "pre-contrast T1 of arterial blood in seconds, for the measured "
                      "AIF (an AIF region or the automatic AIF) in place of the tissue T10 or map there; about 1.65 s "
                      "at 3 T, 1.45 s at 1.5 T; unknown = the tissue's T10. Not used for the Parker population AIF",
                      minimum=0.0, maximum=10.0, decimals=2, optional=True),
        # session 24: "unknown" = the default r1 (DCEParameters resolves None), told apart from a chosen 4.5
        ParameterSpec("relaxivity", "Relaxivity r1", "r1 of the contrast agent in 1/(s·mM); unknown = the default "
                      "4.5. With the Parker population AIF (no AIF region) Ktrans, vp and ve scale with 1 / r1, and "
                      "agents differ (gadoterate 3.3 at 1.5 T, gadobenate 6.2); an AIF region or the automatic AIF "
                      "cancels it. Where the DICOM header names the agent, its published r1 is offered below",
                      minimum=0.0, maximum=20.0, decimals=2, optional=True, advanced=True),
        ParameterSpec("hematocrit", "Hematocrit", "blood -> plasma for the AIF; 0 when the AIF is plasma",
                      minimum=0.0, maximum=0.9, decimals=2, advanced=True),
        # session 22 (dce/aif_dose.py): the Parker AIF is the curve of 0.1 mmol/kg; Ktrans, vp, ve scale with 1/dose
        ParameterSpec("dose", "Contrast dose (mmol/kg)", "the dose given, in mmol/kg (not ml: 0.2 ml/kg of a 0.5 M "
                      "agent is 0.1 mmol/kg), 0.01-0.3; scales the Parker population AIF (used with no AIF region), "
                      "whose own dose is 0.1; unknown = 0.1. Set it for a split-dose, weight-capped or half-dose "
                      "protocol. Not used with an AIF region or the automatic AIF (they carry the dose themselves)",
                      minimum=0.0, maximum=0.3, decimals=3, optional=True, advanced=True),
        ParameterSpec("max_delay", "Max bolus delay (s)", "per-voxel delay searched from 0 to this (0 = off)",
                      minimum=0.0, maximum=30.0, decimals=1, advanced=True),
        ParameterSpec("refine", "Nonlinear refinement", "Levenberg-Marquardt refinement of the linear fit (torch)",
                      advanced=True),
        ParameterSpec("aif_auto", "Automatic AIF", "with no AIF region: find the arterial voxels automatically "
                      "(shown as the AIF mask) instead of the Parker population AIF"),
        ParameterSpec("motion_correct", "Motion", "head motion during the series: none (default: read as stored), "
                      "detect (each frame registered to the first; displacements in the report, a warning over half a "
                      "voxel) or rigid (also realigns the moved frames: removes most but not all of the error). "
                      "About 1 s a frame (DSC), 6 s (a 256x256x30 DCE frame)",
                      choices=(("none", "none"), ("detect", "detect"), ("rigid", "rigid")), advanced=True),
        _SLICE_TIMING,
    ),
    acquisition=(
        _FRAME_INTERVAL,
        AcquisitionSpec("repetition_time", "Repetition time (TR)", "ms", 1e-3,
                        "TR of the SPGR series (needed with a T10 for concentration)", needed_for="quantitative"),
        AcquisitionSpec("flip_angle", "Flip angle", "deg", 1.0,
                        "flip angle of the SPGR series (needed with a T10 for concentration)", needed_for="quantitative"),
    ),
    runner="BBBAnomalyLib.dce.pipeline:run_dce",
    needs_torch=True,
    uses_device=True,
    extra={"roi_aif_parameters": {"aif_region": True},  # a ROI box: its arterial voxels, as for DSC
           "run_options": {"consume_input": True},  # the job's own copy of the series, as for DSC
           "preload": ("BBBAnomalyLib.perfusion.arterial", "BBBAnomalyLib.perfusion.arterial_auto")},
)

DMRI = PipelineSpec(
    name="dmri",
    label="Diffusion anomaly",
    # session 23 (dmri/clinical_dwi.py): what a glioma clinic most often has cannot be used, and the run refuses it
    description="anomaly map from the raw diffusion-weighted signal (single shell near b = 1000) with models "
                "trained only on healthy brains: a 3D variational autoencoder or RecDiscNet. Needs a DTI-type "
                "series with at least 6 gradient directions; a clinical 3-direction (3-scan trace) DWI, a trace "
                "image or the scanner's ADC map cannot be used (they hold the mean diffusivity only): use the "
                "patient's DTI series if one was acquired, read the ADC map as it is, or run T1/FLAIR",
    inputs=(
        InputSpec("dwi", InputRole.DWI, "DWI", True, "a DWI node (b-values and gradients) or a 4D volume with "
                  "b-values and gradients: at least 6 gradient directions on a shell near b = 1000 (a DTI series); "
                  "not a clinical 3-direction/trace DWI or an ADC map", positional=True),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="empty = automatic"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment", tooltip="reference of the ratio table"),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment", tooltip="summarised in the report and ratio table"),
    ),
    parameters_class="BBBAnomalyLib.dmri.parameters:DMRIParameters",
    parameters=(
        ParameterSpec("model", "Model", "VAE: reconstruction residual (the seed's DAE); RecDiscNet: reconstruction "
                      "+ discriminative U-Net trained with synthetic anomalies",
                      choices=(("vae", "VAE"), ("recdisc", "RecDiscNet"))),
        ParameterSpec("threshold", "Threshold", "label-free thresholds of the anomaly mask: the model card's fixed "
                      "value, Otsu, or the maximum of the 16³ mean-pooled map",
                      choices=(("fixed", "fixed"), ("otsu", "Otsu"), ("meanpool", "mean-pool max"))),
        ParameterSpec("opening", "3³ opening", "morphological opening of the anomaly mask", advanced=True),
        ParameterSpec("motion_correct", "Motion correction", "head motion between the volumes: none (default, every "
                      "volume read as stored) or rigid (each volume registered into the first b0's frame, moved "
                      "volumes resampled and their gradient directions rotated; about 0.8 s a volume)",
                      choices=(("none", "none"), ("rigid", "rigid")), advanced=True),
    ),
    runner="BBBAnomalyLib.dmri.pipeline:run_dmri",
    needs_torch=True,
    uses_device=True,
)

T1FLAIR = PipelineSpec(
    name="t1flair",
    label="T1/FLAIR synthetic T1Gd",
    description="synthetic contrast-enhanced T1 and BBB status (intact / disrupted / indeterminate) from a non-contrast T1 and "
                "T2-FLAIR; 3D autoencoder anomaly map",
    inputs=(
        InputSpec("t1", InputRole.SCALAR, "T1", True, "non-contrast T1-weighted volume", positional=True),
        InputSpec("flair", InputRole.SCALAR, "FLAIR", True, "T2-FLAIR volume (resampled to the T1 grid)",
                  positional=True),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="empty = automatic"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment", tooltip="reference of the ratio table",
                  passed_to_run=False),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment",
                  tooltip="where the BBB status is decided; empty = the segmentation head's tumor"),
    ),
    parameters_class="BBBAnomalyLib.structural.parameters:T1FlairParameters",
    parameters=(
        ParameterSpec("steps", "Sampler steps", "deterministic sampler steps of the synthesis (more = slower)",
                      minimum=1, maximum=50, decimals=0),
        ParameterSpec("anomaly_map", "Anomaly map", "run the 3D autoencoder anomaly map"),
        ParameterSpec("bias_correct", "Bias-field correction", "intensity bias-field correction of the T1 and the "
                      "FLAIR inside the brain before normalisation: none (default: the images as given), N4, or N4 "
                      "with the FLAIR-hyperintense lesion left out of the fit (the input volumes are not changed). On "
                      "the real cases N4 also flattened the tumour's FLAIR signal, lowered the anomaly map's tumour "
                      "AUC and all but erased the tumour outline; with the lesion left out it kept the anomaly map "
                      "but still lowered the enhancement map: both for research",
                      choices=(("none", "none"), ("n4", "N4"), ("n4-lesion-out", "N4, lesion left out")),
                      advanced=True),
        ParameterSpec("register", "FLAIR registration", "none (default): the FLAIR placed by the files' coordinates, "
                      "with a warning when a quick estimate finds it more than 2 mm from the T1; rigid: the FLAIR "
                      "registered to the T1 (mutual information inside the brain) and resampled once (the input "
                      "volumes are not changed)",
                      choices=(("none", "none"), ("rigid", "rigid")), advanced=True),
        ParameterSpec("seed", "Seed", "the sampler's starting noise: same seed, same synthesis",
                      minimum=0, maximum=100000, decimals=0, advanced=True),
    ),
    runner="BBBAnomalyLib.structural.pipeline:run_t1flair",
    needs_torch=True,
    uses_device=True,
)

#: Pipelines in the order the panel lists them.
PIPELINES: dict[str, PipelineSpec] = {spec.name: spec for spec in (DCE, DSC, DMRI, T1FLAIR)}


def get_pipeline(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise InputError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}") from None
