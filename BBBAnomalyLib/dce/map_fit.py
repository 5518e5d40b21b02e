"""The fit a DCE run returns, read back from its maps (issue 17: the result holds each value once).

``run_dce`` hands the fit's per-voxel values over to the maps as they are made and keeps no second copy; the
result's ``extras["fit"]`` is a :class:`MapFit`, which gathers each field from its map when asked and gives the
panel's model curves (:meth:`MapFit.pkfit` to :meth:`.models.PKModel.curves`) from the values written. Moved out of
:mod:`.pipeline` unchanged (session 23).
"""

from __future__ import annotations

import numpy as np

from .models import PKFit


class MapFit:
    """The fit a run returns (``DCEResult.extras["fit"]``), read back from its maps: each field of :class:`PKFit`
    is the brain voxels' float32 values of its map, gathered when asked (issue 17: the result holds each value
    once), the delays as the grid's float64 values, and a field without a map the model's zero (vp of Tofts, kep
    and ve of Patlak, the delay without a delay grid). The values the fit stored (``PKModel.fit(...,
    dtype=float32)``), so the panel's model curves (:meth:`pkfit` to :meth:`PKModel.curves`) are those of the
    written maps."""

    FIELDS = {"ktrans": "ktrans", "kep": "kep", "ve": "ve", "vp": "vp", "delay": "delay", "r2": "fit_r2"}
    fitted = None

    def __init__(self, maps: dict, brain: np.ndarray, delays: np.ndarray, curve_kep: np.ndarray | None = None):
        """curve_kep: the fit's kep of the voxels whose ve the data do not determine (written as 0 in the kep and
        ve maps, in brain order): :meth:`pkfit` puts them back, so the model curves are the fit's."""
        self._maps, self._brain, self._delays = maps, brain, np.asarray(delays, dtype=np.float64)
        self._curve_kep = curve_kep

    def __getattr__(self, name):
        if name.startswith("_") or name not in MapFit.FIELDS:
            raise AttributeError(name)
        key = MapFit.FIELDS[name]
        if key not in self._maps:
            return np.zeros(int(self._brain.sum()), np.float64 if name == "delay" else np.float32)
        values = self._maps[key].data[self._brain]
        if name == "delay":  # the grid value each float32 delay rounds (the grid's steps are far apart)
            return self._delays[np.searchsorted(0.5 * (self._delays[1:] + self._delays[:-1]), values)]
        return values

    def pkfit(self) -> PKFit:
        """The fit as the model's curves need it: the maps' values, with the fit's kep where ve was not
        determined (ve is 0 there and nowhere else: a determined ve is > 0)."""
        fields = {name: getattr(self, name) for name in MapFit.FIELDS}
        if self._curve_kep is not None and self._curve_kep.size:
            hidden = fields["ve"] == 0
            fields["kep"][hidden] = self._curve_kep  # (a gathered copy of the map's values)
        return PKFit(**fields, fitted=None)
