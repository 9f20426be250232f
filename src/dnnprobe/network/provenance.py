"""What ran, as the activations record it: the network's source, architecture, weights, preprocessing and
tokens, one record for summary.json, cka.json, the RDM file, MLflow and every figure's title.

The extract stage writes ``network_*`` attributes into the activation file and the gram stage carries
them into the Gram file. For the defaults (DNNBrain's preprocessing, a network without token layers,
torchvision) it writes none of ``network_preprocess``, ``network_tokens`` and ``network_source``, so
that the file keeps its bytes; their absence in a file our extract wrote (it always records
``network_arch``) therefore means those defaults. A file from another tool records none of it: then
what is not given is ``unknown``.
"""

from __future__ import annotations

from typing import Mapping

NO_TOKENS = "n/a"  # the network has no token layers (a CNN): extract.tokens does not apply
UNKNOWN = "unknown"


def network_record(attrs: Mapping[str, object], source: str | None = None, arch: str | None = None,
                   weights: str | None = None) -> dict[str, str]:
    """``source``, ``arch``, ``weights``, ``weights_sha256``, ``preprocess`` and ``tokens`` of the network
    that `attrs` (an activation or Gram file's attributes) record, and ``preprocess_from`` where the file
    records it (``transformers 5.23.0 defaults for model_type dinov2 (BitImageProcessorPil)``); `source`,
    `arch` and `weights` (params.yaml's ``model``) stand in for a file that does not record them."""
    ours = "network_arch" in attrs  # written by our extract stage: an absent key is its default
    value = {key[len("network_"):]: (v.item() if hasattr(v, "item") else v) for key, v in attrs.items()
             if key.startswith("network_")}
    record = {
        "source": str(value.get("source", "torchvision" if ours else source or UNKNOWN)),
        "arch": str(value.get("arch", arch or UNKNOWN)),
        "weights": str(value.get("weights", weights or UNKNOWN)),
        "weights_sha256": str(value.get("sha256", "")),
        "preprocess": str(value.get("preprocess", "dnnbrain" if ours else UNKNOWN)),
        "tokens": str(value.get("tokens", NO_TOKENS if ours else UNKNOWN)),
    }
    if "preprocess_from" in value:  # where extract.preprocess: model found its numbers, when the source says
        record["preprocess_from"] = str(value["preprocess_from"])
    return record


def network_words(record: Mapping[str, str]) -> str:
    """The network in one phrase: ``timm vit_small_patch16_224 (random weights), model preprocessing,
    cls tokens``; the tokens only for a network that has them."""
    words = (f"{record.get('source', UNKNOWN)} {record.get('arch', UNKNOWN)} ({record.get('weights', UNKNOWN)} weights), "
             f"{record.get('preprocess', UNKNOWN)} preprocessing")
    tokens = record.get("tokens", UNKNOWN)
    return words + ("" if tokens == NO_TOKENS else f", {tokens} tokens")
