"""Reading a DWI with its gradient table into a Volume whose gradients are in RAS."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume
from .gradients import to_ras


def read_dwi(path, bval=None, bvec=None) -> Volume:
    """A 4D DWI with ``acquisition.bvals`` and RAS ``acquisition.bvecs``.

    bval/bvec: FSL files (one row of b-values; 3 rows, or 3 columns, of directions in the image's
    axes). Without them: a DWMRI NRRD's own gradient table (Slicer's DWI files: ``DWMRI_b-value``,
    ``DWMRI_gradient_NNNN`` in the ``measurement frame``), or the files beside a NIfTI
    (``x.bval``/``x.bvec``), as FSL and dcm2niix write them. The input file is never modified.
    """
    from ..io import read_volume
    from ..io._common import file_kind
    from ..io.nrrd import dwmri_gradients

    # a table given here replaces the files beside the image: a stale x.bval (another export's, with or without the
    # trace or a reversed b0) must not refuse the run before the user's corrected table is read
    volume = read_volume(path, gradient_files=bval is None and bvec is None)
    if not volume.is_4d:
        raise InputError(f"'{path}' is 3D {volume.data.shape}; a DWI is 4D: the b0 and diffusion-weighted volumes. "
                         f"{SCANNER_MAP_NOTE}")
    acq = volume.acquisition
    if bval is None and bvec is None and file_kind(Path(str(path)))[0] == "nrrd":
        table = dwmri_gradients(Path(str(path)), volume.n_frames)
        if table is not None:  # already in world RAS
            acq = dataclasses.replace(acq, bvals=table[0], bvecs=table[1])
            return Volume(volume.data, volume.affine, None, acq)
    bvals, bvecs = acq.bvals, acq.bvecs
    if bval is not None or bvec is not None:
        if bval is None or bvec is None:
            if bval is not None:  # b0 + trace images have no directions: no --bvec would make them usable
                _refuse_trace_only(read_fsl_table(bval, None, volume.n_frames)[0])
            raise InputError("give both --bval and --bvec (FSL format)")
        bvals, bvecs = read_fsl_table(bval, bvec, volume.n_frames)
    if bvals is None:
        raise InputError(f"no b-values for '{path}': give --bval FILE --bvec FILE (FSL format), or put "
                         f"{Path(str(path)).name.split('.')[0]}.bval/.bvec beside it")
    if bvecs is None:
        _refuse_trace_only(bvals)
        raise InputError(f"b-values but no gradient directions for '{path}': give --bvec FILE (FSL format)")
    acq = dataclasses.replace(acq, bvals=np.asarray(bvals, np.float64),
                              bvecs=to_ras(bvecs, volume.affine, "fsl"))
    return Volume(volume.data, volume.affine, None, acq)


#: Appended to the refusal of a 3D image given as the DWI: clinics often send the scanner's ADC or trace map.
SCANNER_MAP_NOTE = ("A scanner's ADC or trace-weighted map cannot be used: the anomaly model needs the series of the "
                    "b0 and 6 or more gradient directions (a DTI series) with its bval/bvec")


def _refuse_trace_only(bvals) -> None:
    """A series of b0 and fewer than 6 volumes near b = 1000 (b0 + trace images) is refused saying what it is."""
    from .clinical_dwi import too_few_volumes

    few = too_few_volumes(bvals)
    if few:
        raise InputError(few)


def read_fsl_table(bval, bvec, n_volumes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(b-values, directions) of FSL files; ``bvec`` None reads the b-values only (directions None)."""
    try:
        with warnings.catch_warnings():  # an empty file: numpy warns on stderr; the count check below says it
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            bvals = np.loadtxt(bval, dtype=np.float64, ndmin=1).ravel()
            bvecs = np.loadtxt(bvec, dtype=np.float64, ndmin=2) if bvec is not None else None
    except (OSError, ValueError) as exc:
        raise InputError(f"could not read the FSL gradient table '{bval}' / '{bvec}': {exc}") from None
    if bvals.size != n_volumes:
        # clinics' exports: a table written for the series with its trace-weighted volume, a reversed phase-encoding
        # b0 or the ADC map that this image lacks (or the other way round)
        raise InputError(f"'{bval}' has {bvals.size} b-values but the DWI has {n_volumes} volumes; they must match "
                         "one to one: give the bval/bvec written with this very image (a table from another export "
                         "of the series, e.g. one with or without a trace-weighted or reversed phase-encoding volume, "
                         "does not fit it)")
    if bvecs is None:
        return bvals, None
    if bvecs.shape == (3, bvals.size):
        bvecs = bvecs.T
    if bvecs.shape != (bvals.size, 3):
        raise InputError(f"'{bvec}' holds {bvecs.shape} numbers; FSL format is 3 rows of {bvals.size} directions")
    return bvals, bvecs
