"""Pure numpy drift detectors: binning, divergences, moments, reference profiles, pane windows.

Nothing here reads a clock, a file or the network; timestamps and data are passed in.
"""
