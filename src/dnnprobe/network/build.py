"""Networks: build a model from its source (``model.source``: torchvision by default, timm, open_clip, hf;
:mod:`dnnprobe.network.sources`), obtain its weights, and save them for the later stages.

Weights (``model.weights``):

- ``random``: the source's own initialisation from ``model.seed`` (torchvision's: reproducible bit for
  bit on a CPU).
- ``imagenet``: the arch's ``IMAGENET1K_V1`` weights through torchvision's weights API and cache
  (``$TORCH_HOME/hub/checkpoints``), checked against the hash in the file name.
- a pretrained tag of the source (torchvision: ``IMAGENET1K_V2``, ``DEFAULT``; timm: ``default`` or a
  tag; OpenCLIP: ``laion2b_s34b_b79k``; hf: ``pretrained`` or a revision), from the local cache only.
- a path: a ``state_dict`` file, ``.pt``/``.pth`` loaded with ``torch.load(weights_only=True)`` (a
  pickle that would run code is refused) or ``.safetensors`` (a format without code).

The network stage saves the weights it used to ``models/network.pt`` (a plain ``state_dict``) with a
JSON sidecar naming arch, weights and sha256, so a colleague reuses the exact network via ``dvc pull``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.network.registry import get_source
from dnnprobe.network.weights import load_state_dict_file, load_weights_file


@dataclass(frozen=True)
class NetworkInfo:
    """What identifies the weights a run used; recorded in the activation file and in MLflow."""

    arch: str
    weights: str  # random | imagenet | the path given
    seed: int
    source_name: str  # e.g. alexnet-owt-7be5be79.pth, random-seed-0, or the file's name
    sha256: str  # of the saved models/network.pt
    # Beyond torchvision: the source, and where pretrained weights came from (hub id, revision, file,
    # sha256 of the file). Empty, and then absent from the sidecar and the activation file, for the
    # torchvision default, whose files keep their bytes.
    extra: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.extra.get("source", "torchvision")

    def as_attrs(self) -> dict[str, str | int]:
        attrs = {f"network_{key}": value for key, value in asdict(self).items() if key != "extra"}
        attrs.update({f"network_{key}": str(value) for key, value in self.extra.items()})
        return attrs

    def as_json(self) -> dict:
        data = asdict(self)
        if not self.extra:
            del data["extra"]
        return data


def with_state(arch: str, state: dict, origin: str, source: str = "torchvision", seed: int = 0) -> torch.nn.Module:
    """The source's network for `arch` holding `state` (every key must fit); `origin` names the weights in errors."""
    module = get_source(source)
    model = module.build(arch, seed)
    state = getattr(module, "adapt_state", lambda s: s)(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        raise DnnprobeError(f"{origin}: weights do not fit {arch} ({' '.join(r.strip() for r in reason[:2])})") from None
    return model


WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


def is_weights_path(weights: str) -> bool:
    """A weights file (a path) rather than ``random`` or a pretrained tag."""
    return weights.endswith(WEIGHT_FILE_SUFFIXES) or "/" in weights or os.sep in weights


def build_from_source(source: str, arch: str, weights: str, seed: int) -> tuple[torch.nn.Module, str, dict]:
    """The network in eval mode, a name for where its weights came from, and their provenance
    (empty for torchvision's random and imagenet weights, whose record is unchanged since DNNBrain's)."""
    module = get_source(source)
    provenance: dict = {} if source == "torchvision" else {"source": source}
    # The researcher's own code (source local): its file, the file's sha256, the function.
    provenance.update(getattr(module, "provenance", lambda a: {})(arch))
    if weights == "random":
        return module.build(arch, seed).eval(), f"random-seed-{seed}", provenance
    if is_weights_path(weights):
        path = Path(weights)
        model = with_state(arch, load_weights_file(path), weights, source, seed)
        if path.suffix == ".safetensors" or source == "local":
            provenance.update({"file": path.name, "file_sha256": file_sha256(path)})
        return model.eval(), path.name, provenance
    state, found = module.pretrained(arch, weights)
    if source == "torchvision" and weights == "imagenet":
        return with_state(arch, state, found["file"]).eval(), found["file"], provenance
    path = found.pop("path", None)
    provenance.update({"tag": weights, **found})
    if path:
        provenance["file_sha256"] = file_sha256(path)
    return with_state(arch, state, found["file"], source, seed).eval(), found["file"], provenance


def save_network(model: torch.nn.Module, path: str | os.PathLike, arch: str, weights: str, seed: int, source: str,
                 extra: dict | None = None) -> NetworkInfo:
    """Write the state_dict and its JSON sidecar (``<path>.json``), each atomically."""
    path = Path(path)
    # Save through memory: torch.save names the archive's inner folder after the file, and the
    # temporary file's name varies, which would change the bytes (and DVC's hash) on every run.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with atomic_output(path) as temp:
        temp.write_bytes(buffer.getvalue())
        digest = file_sha256(temp)
    info = NetworkInfo(arch=arch, weights=weights, seed=seed, source_name=source, sha256=digest, extra=dict(extra or {}))
    with atomic_output(sidecar_path(path)) as temp:
        temp.write_text(json.dumps(info.as_json(), indent=2) + "\n")
    return info


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def load_network(path: str | os.PathLike, arch: str, source: str = "torchvision") -> tuple[torch.nn.Module, NetworkInfo]:
    """The network saved by the network stage, checked against its sidecar and the expected source and arch."""
    path = Path(path)
    try:
        info = NetworkInfo(**json.loads(sidecar_path(path).read_text()))
    except FileNotFoundError:
        raise DnnprobeError(f"{sidecar_path(path)}: missing; rerun the network stage (dvc repro network)") from None
    except (TypeError, ValueError) as exc:
        raise DnnprobeError(f"{sidecar_path(path)}: not a network description ({exc})") from None
    if info.arch != arch and info.source == source:
        raise DnnprobeError(f"{path}: holds {info.arch}, but model.arch is {arch}; rerun the network stage")
    if info.arch != arch or info.source != source:
        raise DnnprobeError(f"{path}: holds {info.source} {info.arch}, but model.source/arch are {source} {arch}; "
                            "rerun the network stage")
    if file_sha256(path) != info.sha256:
        raise DnnprobeError(f"{path}: sha256 differs from {sidecar_path(path)}; the file was changed, rerun the network stage")
    code = info.extra.get("code_file")
    if code and (not Path(code).is_file() or file_sha256(code) != info.extra.get("code_sha256")):
        raise DnnprobeError(f"{code}: changed (or gone) since the network stage saved {path} from it; rerun the network "
                            "stage (dvc repro)")
    return with_state(arch, load_state_dict_file(path), str(path), source, info.seed).eval(), info
