"""What a view-shared series (TWIST, DISCO, TRICKS, 4D-TRAK/keyhole, DRKS) means for a DCE run's AIF and maps.

Why: a view-shared frame keeps its own k-space centre and borrows the periphery from neighbouring frames. Tissue
regions are large and follow the centre; an artery is a few voxels across, most of its signal lies in the
periphery, so it reads a blend of frames: the measured AIF's peak reads low (and, near the SPGR ceiling, the
conversion to concentration amplifies that), and the extended Tofts fit puts the lost first pass into vp and
takes it out of ve and Ktrans. Measured on the DCE reference object re-acquired with view sharing
(:mod:`..phantoms.dce_viewshare`, ``scripts/validate_dce_viewshare.py``; docs/reliability.md, "View-shared DCE
(session 24)"): the quoted sizes below are those of that sweep.

The rule (written before the held-apart check): where the header names a view-sharing sequence
(:mod:`..io.view_sharing`) and the AIF is measured (drawn mask, search region, ``--aif auto``), warn always: the
header does not say the centre's size or the sharing depth, and on the object 22 of 24 TWIST/DISCO settings at 4-6 s
frames moved rim vp by 10 % or more (the other two +9.6 and +9.9 %; at 2 s 6 of 12). With a population AIF the
tissue follows the k-space centre and the maps moved by less than 10 % (Ktrans +0.1…+4.5 %, vp -9.0…-0.2 %, ve
-8.6…+0.2 %), so it is recorded with a note, not warned, except for keyhole-type sharing (one periphery for every
frame: keyhole, 4D-TRAK), where the rim's Ktrans map correlated with the truth at r 0.78-0.94 only, with any AIF.
No correction is applied: the sharing kernel needs the centre's share and the number of subsets (in no public tag)
and the artery's share of its signal outside the centre (its size in voxels); even with all three known exactly (an
oracle), deblurring the drawn artery's curves by the kernel over-corrected (AIF peak -1…+148 %, rim vp -52…+2 %,
Ktrans -24…+6 % against the fully sampled run) and missed the rule set for it (every map within 10 % in every
setting: 23 of 36, 8 without it).
"""

from __future__ import annotations

from ..io.view_sharing import detect

#: the report's key (``report["view_sharing"]``), added only where the header names a view-sharing sequence
REPORT_KEY = "view_sharing"
#: schemes that take one periphery for every frame
KEYHOLE_TYPE = ("keyhole", "4d-trak")
MEASURED_SOURCES = ("mask", "region", "auto")

#: the measured sizes the warning quotes: view-shared minus fully sampled, the same noise, the object's rim
#: (TWIST/DISCO with 10-25 % centres and 2-5 subsets, 2/4/6 s frames, SNR 20 and 40: 36 settings per AIF)
MEASURED_AIF = ("AIF peak -81…-2 %, rim vp +2…+136 %, rim ve -64…+4 %, rim Ktrans -39…+2 % with the drawn artery "
                "(10 % or more on a map in 28 of 36 settings, worst with a small centre, more subsets and slower "
                "frames); --aif auto chose voxels outside the artery in 4 of 36 (rim Ktrans -93…+1236 %; such a choice is "
                "now refused where its peak is under 5 times the tissue's: dce/aif_plausibility.py)")
MEASURED_POPULATION = "Ktrans +0.1…+4.5 %, vp -9.0…-0.2 %, ve -8.6…+0.2 %"
#: keyhole: the tuning set (the last frame's periphery, centre 20 %) and the held-apart one (the first's, 10 %)
MEASURED_KEYHOLE = ("the rim's Ktrans map correlated with the truth at r 0.78-0.94 (0.996-1.000 fully sampled) with "
                    "every AIF, the Parker AIF read rim Ktrans -14…-2 %, and a drawn AIF read its peak 86-91 % below "
                    "the true AIF's (rim vp +520…+850 %)")


def _named(record: dict) -> str:
    matched = record.get("matched") or {}
    said = "; ".join(f"{field.replace('_', ' ')} '{text}'" for field, text in matched.items())
    name = record.get("sequence") or "a view-sharing sequence (its names disagree: "
    return f"{name}{')' if record.get('sequence') is None else ''}" + (f", from the {said}" if said else "")


def assess(record: dict | None, aif_source: str | None) -> tuple[dict | None, str | None]:
    """(the report entry, the warning or None) for a run whose AIF came from ``aif_source`` (the report's
    aif.source: mask, region, auto, or a population AIF's name)."""
    if record is None:
        return None, None
    scheme = record.get("scheme")
    measured = aif_source in MEASURED_SOURCES
    keyhole = scheme in KEYHOLE_TYPE
    entry = {**record, "aif_source": aif_source, "warned": measured or keyhole}
    named = _named(record)
    if keyhole:
        warning = (f"the series looks view-shared by keyhole ({named}): every frame takes the periphery of k-space "
                   f"from one reference acquisition. On the DCE reference object acquired so, {MEASURED_KEYHOLE}; "
                   "the maps' detail inside the tumour is that of the reference, not of the frames: read ROI means, "
                   "not the pattern, and prefer a series acquired without keyhole")
    elif measured:
        warning = (f"the series looks view-shared ({named}): each frame borrows the periphery of k-space from "
                   "neighbouring frames, so a small artery reads a blend of frames and the measured AIF "
                   f"({aif_source}) peaks low; on the DCE reference object re-acquired so: {MEASURED_AIF}. The header does not say "
                   "the sharing's centre size or depth, so this run's size cannot be worked out: prefer "
                   f"--population-aif parker (on the same object {MEASURED_POPULATION}), or read vp as high and ve "
                   "and Ktrans as low")
    else:
        warning = None
        entry["note"] = (f"a population AIF does not read the artery, and the tissue follows the k-space centre: on "
                         f"the DCE reference object re-acquired view-shared the maps moved by {MEASURED_POPULATION}")
    return entry, warning


def add_to_report(report: dict, acquisition, warnings: list[str]) -> None:
    """``report["view_sharing"]`` and at most one warning, where the header names a view-sharing sequence."""
    entry, warning = assess(detect(acquisition), (report.get("aif") or {}).get("source"))
    if entry is None:
        return
    report[REPORT_KEY] = entry
    if warning:
        warnings.append(warning)
