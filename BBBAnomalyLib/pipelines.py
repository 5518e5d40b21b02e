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
from dataclasses import dataclass, field

from .errors import InputError


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


@dataclass(frozen=True)
class AcquisitionSpec:
    """An acquisition value the pipeline needs, read from the node's attributes when present and
    editable in the panel when not. Shown to the user in ``display_unit``; stored in SI units."""

    name: str  # Acquisition field or "frame_interval"
    label: str
    display_unit: str
    to_si: float  # display value * to_si = stored value
    tooltip: str


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
    uses_device: bool = False  # has a `device` parameter (auto/cpu/cuda)
    extra: dict = field(default_factory=dict, hash=False)

    @property
    def available(self) -> bool:
        return self.runner is not None

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
        defaults = self.parameters_type()()
        out = {}
        for p in self.parameters:
            value = getattr(defaults, p.name)
            out[p.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    def make_parameters(self, values: dict | None = None):
        """The parameter dataclass from user values; unknown names are an error, not ignored."""
        cls = self.parameters_type()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - names)
        if unknown:
            raise InputError(f"unknown {self.name} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**(values or {}))

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
        concentration = (parameters or {}).get("input_kind") == "concentration"
        for a in self.acquisition:
            if (acquisition or {}).get(a.name) is None and not (concentration and a.name == "echo_time"):
                missing.append(f"{a.label} ({a.display_unit})")
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
        kwargs = {s.key: inputs.get(s.key) for s in self.inputs if not s.positional}
        return run(*args, params, progress=progress, **kwargs, **options)


# --- the pipelines ------------------------------------------------------------------------
_SERIES_TIP = ("the dynamic series: a volume sequence (how 4D DICOM loads), a MultiVolume or a 4D volume; "
               "frame times come from its attributes or from the acquisition fields below")
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
    ),
    parameters_class="BBBAnomalyLib.dsc.parameters:DSCParameters",
    parameters=(
        ParameterSpec("method", "Deconvolution", "oSVD is the clinical default (delay-insensitive, "
                      "per-voxel threshold); Tikhonov with GCV is smoother; sSVD underestimates CBF when the "
                      "bolus is delayed", choices=(("osvd", "oSVD"), ("csvd", "cSVD"), ("ssvd", "sSVD"),
                                                  ("tikhonov", "Tikhonov (GCV)"))),
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
    ),
    acquisition=(
        _FRAME_INTERVAL,
        AcquisitionSpec("echo_time", "Echo time (TE)", "ms", 1e-3,
                        "TE of the series; read from the DICOM attributes when present"),
    ),
    runner="BBBAnomalyLib.dsc.pipeline:run_dsc",
    extra={"curve_options": {"keep_curves": True}},  # run options that make result.curves() work
)

DCE = PipelineSpec(
    name="dce",
    label="DCE leakage",
    description="model-free residual leakage signal (RLS, unsupervised autoencoder) beside Tofts/Patlak Ktrans",
    inputs=(
        InputSpec("series", InputRole.SERIES, "DCE series", True, _SERIES_TIP, positional=True),
        InputSpec("aif_mask", InputRole.REGION, "AIF region", tooltip="arterial voxels; empty = Parker population AIF"),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="voxels to analyse; empty = automatic"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment", tooltip="reference of the ratio table"),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment",
                  tooltip="left out of the per-case RLS training; summarised in the report"),
    ),
    acquisition=(
        _FRAME_INTERVAL,
        AcquisitionSpec("repetition_time", "Repetition time (TR)", "ms", 1e-3, "TR of the SPGR series"),
        AcquisitionSpec("flip_angle", "Flip angle", "deg", 1.0, "flip angle of the SPGR series"),
    ),
    unavailable="the DCE pipeline is being implemented (issue 4)",
    needs_torch=True,
    uses_device=True,
)

DMRI = PipelineSpec(
    name="dmri",
    label="Diffusion anomaly",
    description="anomaly map from raw diffusion-weighted signal with models trained on healthy brains",
    inputs=(
        InputSpec("dwi", InputRole.DWI, "DWI", True, "a DWI node (b-values and gradients) or a 4D volume",
                  positional=True),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="empty = automatic"),
        InputSpec("nawm_mask", InputRole.REGION, "NAWM segment", tooltip="reference of the ratio table"),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment", tooltip="summarised in the ratio table"),
    ),
    unavailable="the diffusion pipeline is not implemented yet (issue 6)",
    needs_torch=True,
    uses_device=True,
)

T1FLAIR = PipelineSpec(
    name="t1flair",
    label="T1/FLAIR synthetic T1Gd",
    description="synthetic contrast-enhanced T1 and BBB status from T1 and FLAIR; 3D autoencoder anomaly map",
    inputs=(
        InputSpec("t1", InputRole.SCALAR, "T1", True, "non-contrast T1-weighted volume", positional=True),
        InputSpec("flair", InputRole.SCALAR, "FLAIR", True, "T2-FLAIR volume (resampled to the T1 grid)",
                  positional=True),
        InputSpec("brain_mask", InputRole.REGION, "Brain mask", tooltip="empty = automatic"),
        InputSpec("tumor_mask", InputRole.REGION, "Tumor segment",
                  tooltip="where the BBB status is decided; empty = the segmentation head's tumor"),
    ),
    unavailable="the T1/FLAIR pipeline is not implemented yet (issue 7)",
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
