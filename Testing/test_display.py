"""Colour tables and windows of output maps (what the panel applies to each map node)."""

import numpy as np

from BBBAnomalyLib.app import display
from BBBAnomalyLib.dce.pipeline import MAP_INFO as DCE_MAPS
from BBBAnomalyLib.dmri.pipeline import MAP_INFO as DMRI_MAPS
from BBBAnomalyLib.dsc.pipeline import MAP_INFO as DSC_MAPS
from BBBAnomalyLib.structural.pipeline import MAP_INFO as T1FLAIR_MAPS


def test_every_pipeline_map_has_a_style():
    for maps in (DSC_MAPS, DCE_MAPS, DMRI_MAPS, T1FLAIR_MAPS):
        missing = [name for name in maps if name not in display.MAP_STYLES]
        assert not missing, missing


def test_windows_follow_the_kind_of_map():
    rng = np.random.default_rng(0)
    cbv = np.zeros((20, 20, 5), np.float32)
    cbv[5:15, 5:15] = rng.gamma(2.0, 2.0, (10, 10, 5))
    cbv[10, 10, 2] = 1e4  # one hot vessel must not set the window
    style = display.map_display("cbv", cbv)
    assert style.colour_node_id == display.RAINBOW and style.window_min == 0
    # the window is the 99th percentile of the analysed voxels, taken in float64 (numpy < 2.1 would keep a float32
    # percentile of float32 data in float32)
    assert style.window_max < 100 and style.window_max == np.percentile(cbv[cbv != 0].astype(np.float64), 99)
    k2 = rng.normal(0, 1e-3, (10, 10, 3))
    signed = display.map_display("k2", k2)
    assert signed.window_min == -signed.window_max and signed.colour_node_id == display.DIVERGING
    ratio = display.map_display("rcbv", np.full((4, 4, 4), 1.0))
    assert ratio.window_min == 0 and ratio.window_max >= 1.5
    assert display.map_display("anomaly_mask", np.ones((3, 3, 3))).colour_node_id == display.LABELS
    empty = display.map_display("ktrans", np.zeros((3, 3, 3)))
    assert empty.window_max > empty.window_min
