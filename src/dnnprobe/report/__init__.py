"""The figures and the DVC plot data made from the probe results."""
