"""Model sources (``model.source``): the libraries a network can come from, one module each.

:data:`dnnprobe.network.registry.SOURCES` names them; a module (and its library) is imported only when
chosen, so the default AlexNet run never imports timm or transformers. Adding a source is one module
here, one entry in ``SOURCES``, one section in docs/models.md and one test with a tiny random-weight
model. What the sources share (seeding, block names) is :mod:`dnnprobe.network.sources.common`.

What a source module provides (plain functions; ``arch`` is ``model.arch``):

- ``archs() -> list[str]``: the architecture names it knows, offline (for error messages).
- ``build(arch, seed) -> nn.Module``: the network (the image tower, for CLIP models) with the
  library's own initialisation drawn from `seed`, offline, in eval mode.
- ``pretrained(arch, tag) -> (state_dict, provenance)``: the library's pretrained weights named by
  `tag`, from the local cache only (nothing is downloaded); `provenance` is a dict of strings
  (the file, its sha256, the hub id or URL, the revision). Offline with nothing cached: one
  :class:`~dnnprobe.core.errors.DnnprobeError` line naming the ways out.
- ``preprocessing(model, arch) -> Preprocess``: the network's own eval transform, as numbers
  (:mod:`dnnprobe.network.preprocess`).
- ``friendly_layers(model, arch) -> dict[str, str]``: friendly layer names -> module paths, in depth
  order; ``default_layers(model, arch) -> list[str]``: what an empty ``extract.layers`` records.
- ``token_layout(model, input_size) -> TokenLayout | None``: the token sequence of a transformer
  (:mod:`dnnprobe.network.tokens`), None for a convolutional network.

Module outputs that are tuples or model-output objects record their hidden state
(:func:`dnnprobe.network.tokens.hidden_state`).
"""
