"""dnnprobe: which layer of a deep network explicitly encodes a stimulus attribute?

The package is a set of plain functions, one module per concept:

- :mod:`dnnprobe.stimuli`    the stimulus table (DNNBrain ``.stim.csv``) and its images
- :mod:`dnnprobe.demo`       the built-in offline stimulus set (curvy versus boxy shapes)
- :mod:`dnnprobe.network`    torchvision networks, their weights and DNNBrain layer names
- :mod:`dnnprobe.extraction` one forward pass that records every requested layer
- :mod:`dnnprobe.actfile`    the DNNBrain activation file (``.act.h5``)
- :mod:`dnnprobe.gram`       per-layer Gram matrices streamed from the activation file
- :mod:`dnnprobe.probe`      cross-validated PCA + linear decoding of a stimulus label
- :mod:`dnnprobe.tracking`   MLflow logging
- :mod:`dnnprobe.report`     the Conv-vs-ReLU figure and DVC plot data

:mod:`dnnprobe.cli` wraps each pipeline stage in a thin click command.
"""

__version__ = "0.1.0"
