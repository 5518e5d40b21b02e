"""A job's inputs as Volumes, with a dual-echo DICOM folder split into its two echoes.

`bbbanomaly dsc FOLDER` reads a DICOM folder whose one series holds two echo times as dual-echo input
(:mod:`BBBAnomalyLib.io.dicom_echoes`; ``dsc/command.py``). A job (the Slicer panel's worker, or a job file
written by hand) gets the same: a pipeline whose spec names ``extra["echoes_in_folder"] = (series key,
second-echo key, TE parameter, TE2 parameter)`` takes a folder given as its series and holding two echoes as
echo 1 = the series, echo 2 = the second echo, with the same refusals as the command line (a second echo given
beside it, one echo time given for two echoes, three or more echoes). The panel hands a series that Slicer
loaded from such a DICOM series over as that folder (:mod:`.mrml.dicom_source`).
"""

from __future__ import annotations

import os

from ..core.errors import InputError


def read_job_inputs(spec, job) -> tuple[dict, dict]:
    """({input key: Volume}, what the report's ``input`` section gains: ``second_echo_source`` when a folder
    gave both echoes)."""
    from .jobs import read_job_input

    split = spec.extra.get("echoes_in_folder")
    volumes, notes = {}, {}
    for key, path in job.inputs.items():
        if split and key == split[0] and os.path.isdir(path):
            echoes = _folder_echoes(path, job, *split)
            volumes[key] = echoes[0]
            if len(echoes) == 2:
                volumes[split[1]] = echoes[1]
                notes["second_echo_source"] = ("the second echo of the DICOM folder's series "
                                               f"({echoes[1].acquisition.extra.get('echo', 'echo 2')})")
            continue
        volumes[key] = read_job_input(path)
    return volumes, notes


def _folder_echoes(path: str, job, series_key: str, echo_key: str, te_name: str, te2_name: str) -> list:
    """The folder's echoes (one or two Volumes), or one line saying why they cannot be used as given."""
    from ..io.dicom_echoes import read_echoes

    try:
        echoes = read_echoes(path)
    except PermissionError as exc:
        raise InputError(f"cannot read job input {path}: {exc.strerror or 'permission denied'}; give a folder this "
                         "user can read") from None
    if len(echoes) > 2:
        raise InputError(f"the DICOM series in '{path}' has {len(echoes)} echo times; DSC takes one echo or two "
                         "(dual-echo): put the two echoes to use in a folder of their own")
    if len(echoes) == 2:
        tes = [round(v.acquisition.echo_time * 1e3, 6) for v in echoes]
        if echo_key in job.inputs:
            raise InputError(f"'{path}' already holds both echoes of a dual-echo series (TE {tes[0]:g} and "
                             f"{tes[1]:g} ms); leave out the second echo input ({echo_key!r})")
        given = [job.parameters.get(te_name), job.parameters.get(te2_name)]
        if (given[0] is None) != (given[1] is None):
            raise InputError(f"'{path}' holds a dual-echo series (TE {tes[0]:g} and {tes[1]:g} ms) but one echo time "
                             f"was given: give both ({te_name!r} and {te2_name!r}) or neither to use the headers'")
    return echoes
