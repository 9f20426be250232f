"""Shared computing helpers: devices, array operations, memory and disk probing (a leaf every part may use)."""
