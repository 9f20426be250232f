"""Extraction: the forward pass that records every layer, and the .act.h5 activation file."""
