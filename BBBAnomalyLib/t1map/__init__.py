"""T1 mapping from variable-flip-angle (VFA) spoiled gradient-echo series: R1, T1 and M0 maps.

vfa.py: the SPGR signal equation and the batched linear (DESPOT1) and nonlinear fits;
inputs.py: a VFA series from one 4D file or several 3D files, flip angles from flags or sidecars;
pipeline.py: ``run_t1map`` -> T1MapResult (complete-or-absent output folder); command.py: `bbbanomaly t1map`.
"""
