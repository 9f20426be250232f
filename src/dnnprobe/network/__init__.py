"""The network: building it from a model source, its weights, layer names, preprocessing and tokens."""
