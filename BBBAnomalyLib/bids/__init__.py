"""BIDS in and out: read a BIDS dataset, write BIDS derivatives, run a cohort (`bbbanomaly bids`).

- :mod:`.layout`       file names, entities, sidecar inheritance, which files each pipeline reads
- :mod:`.derivatives`  derivative names and sidecars, dataset_description.json, ROI ratios per run
- :mod:`.participant`  one participant, complete-or-absent; status files and failures.tsv
- :mod:`.group`        the cohort table of ROI ratios
- :mod:`.command`      the `bbbanomaly bids` arguments and the participant loop (--n-jobs)
"""

from __future__ import annotations


def register(sub) -> None:
    from .command import register as _register

    _register(sub)
