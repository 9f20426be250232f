"""Networks: build a model from its source (``model.source``: torchvision by default, timm, open_clip, hf;
:mod:`dnnprobe.network.sources`), obtain its weights, and save them for the later stages.

Weights (``model.weights``):

- ``random``: torchvision's own initialisation from a seed; reproducible bit for bit on a CPU.
- ``imagenet``: the arch's ``IMAGENET1K_V1`` weights through torchvision's weights API and cache
  (``$TORCH_HOME/hub/checkpoints``), checked against the hash in the file name.
- a pretrained tag of the source (torchvision: ``IMAGENET1K_V2``, ``DEFAULT``; timm: ``default`` or a
  tag; OpenCLIP: ``laion2b_s34b_b79k``; hf: ``pretrained`` or a revision), from the local cache only.
- a path: a ``state_dict`` file, ``.pt``/``.pth`` loaded with ``torch.load(weights_only=True)`` (a
  pickle that would run code is refused) or ``.safetensors`` (a format without code).

The network stage saves the weights it used to ``models/network.pt`` (a plain ``state_dict``) with a
JSON sidecar naming arch, weights and sha256, so a colleague reuses the exact network via ``dvc pull``.

Layer names: AlexNet and VGG get DNNBrain's names (``conv1``, ``conv1_relu``, ``conv1_maxpool``, ...,
``fc1``, ``fc1_relu``, ...), ResNets get ``conv1``, ``conv1_relu``, ``conv1_maxpool``, ``layer1``..
``layer4``, ``avgpool`` and ``fc``; every network also accepts module paths such as ``features.0`` or
``layer3.1.relu``. A module that runs several times per forward pass (ResNet's ``layer1.0.relu`` runs
twice in a BasicBlock, three times in a Bottleneck) has one layer per call, named as torchvision's FX
feature extractor names them: ``layer1.0.relu`` (first call), ``layer1.0.relu_1``, ``layer1.0.relu_2``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256

if TYPE_CHECKING:
    import torch


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


def available_archs() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def _skeleton_check(arch: str) -> None:
    if arch not in available_archs():
        raise DnnprobeError(
            f"model.arch: unknown network {arch!r}; torchvision classification models are: "
            + ", ".join(available_archs())
        )


def _skeleton(arch: str) -> "torch.nn.Module":
    from torchvision import models

    _skeleton_check(arch)
    return models.get_model(arch, weights=None)


def _hash_prefix(file_name: str) -> str:
    """torchvision's convention: <name>-<first hex digits of sha256>.pth."""
    stem = file_name.rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1] if "-" in stem else ""


def random_network(arch: str, seed: int) -> "torch.nn.Module":
    """torchvision's default initialisation, drawn from `seed` (same bits on any CPU)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _skeleton(arch)


def imagenet_weights_url(arch: str, name: str = "IMAGENET1K_V1") -> str:
    """Where torchvision publishes the arch's weights `name` (an enum member: IMAGENET1K_V2, DEFAULT, ...)."""
    from torchvision import models

    _skeleton_check(arch)
    try:
        enum = models.get_model_weights(arch)
    except (AttributeError, ValueError):
        raise DnnprobeError(f"model.weights: torchvision has no {name} weights for {arch!r}") from None
    try:
        return enum[name].url if name != "DEFAULT" else enum.DEFAULT.url
    except KeyError:
        raise DnnprobeError(
            f"model.weights: torchvision has no {name} weights for {arch!r}; it has: "
            + ", ".join(["DEFAULT", *enum.__members__])) from None


def imagenet_state_dict(arch: str, name: str = "IMAGENET1K_V1", label: str = "imagenet") -> tuple[dict, str]:
    """Download (or find in the torch cache) the arch's weights `name`; hash-checked."""
    import torch

    url = imagenet_weights_url(arch, name)
    file_name = os.path.basename(url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        # check_hash: torchvision names each file with the start of its sha256 (alexnet-owt-7be5be79.pth);
        # torch.hub checks it after a download. A file already in the cache is checked here.
        if cached.is_file() and not file_sha256(cached).startswith(_hash_prefix(file_name)):
            raise RuntimeError("invalid hash value")
        state = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
    except RuntimeError as exc:
        if "invalid hash" in str(exc):
            raise DnnprobeError(f"{cached}: sha256 does not match the hash in its name; delete it and retry") from None
        raise
    except OSError as exc:  # URLError is an OSError: offline, DNS failure, refused
        raise DnnprobeError(
            f"model.weights={label}: {file_name} is not in the torch cache ({cached.parent}) and cannot be "
            f"downloaded ({getattr(exc, 'reason', exc)}). Ways out: `dvc pull models/network.pt` from the "
            f"team's remote, copy {file_name} into {cached.parent}, or use model.weights=random"
        ) from None
    return state, file_name


# The first bytes of a file torch.save can have written: a zip archive (the format since PyTorch 1.6)
# or, in the legacy format, a pickle (protocol 2 or later, which starts with the PROTO opcode 0x80).
TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80")


def _describe_start(head: bytes) -> str:
    """The file's opening as a reader recognises it: its first line of text, or its first bytes."""
    first_line = head.lstrip().splitlines()[0] if head.strip() else b""
    text = first_line.decode("utf-8", errors="replace").rstrip("\ufffd").strip()  # a cut-off last character
    if text and text.isprintable() and "\ufffd" not in text:
        return repr(text[:24] + ("..." if len(text) > 24 else ""))
    return repr(head[:8])


def not_torch_file_reason(path: str | os.PathLike) -> str | None:
    """Why `path` cannot have been written by torch.save, judged by its first bytes; None if it could have."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "empty file"
    if head.startswith(TORCH_SAVE_STARTS):
        return None
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        # safetensors: an 8-byte little-endian header length, then the JSON header.
        return "a safetensors file, not a torch.save archive; give it the .safetensors suffix"
    return f"it starts with {_describe_start(head)}, not a torch.save archive"


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A state_dict saved by torch.save, loaded without executing any pickled code."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise DnnprobeError(f"model.weights: {path} is a folder, not a state_dict file")
    if not path.is_file():
        raise DnnprobeError(f"model.weights: {path} is not a file (expected random, imagenet or a state_dict path)")
    # Text, HTML (a download that returned a web page), JSON or an empty file: say so, rather than
    # pass on the unpickler's complaint about an opcode.
    reason = not_torch_file_reason(path)
    if reason:
        raise DnnprobeError(f"{path}: not a PyTorch weights file ({reason})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise DnnprobeError(f"{path}: not a loadable state_dict ({first_line})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DnnprobeError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return state


def load_weights_file(path: str | os.PathLike) -> dict:
    """A state_dict from a ``.safetensors`` file (no code in the format) or a torch.save file (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise DnnprobeError(f"{path}: not a loadable safetensors file ({first_line})") from None
    return load_state_dict_file(path)


def with_state(arch: str, state: dict, origin: str, source: str = "torchvision", seed: int = 0) -> "torch.nn.Module":
    from dnnprobe.network.sources import get_source

    module = get_source(source)
    model = _skeleton(arch) if source == "torchvision" else module.build(arch, seed)
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


def build_network(arch: str, weights: str, seed: int) -> tuple["torch.nn.Module", str]:
    """The torchvision network in eval mode and a name for where its weights came from."""
    model, name, _ = build_from_source("torchvision", arch, weights, seed)
    return model, name


def build_from_source(source: str, arch: str, weights: str, seed: int) -> tuple["torch.nn.Module", str, dict]:
    """The network in eval mode, a name for where its weights came from, and their provenance
    (empty for torchvision's random and imagenet weights, whose record is unchanged since DNNBrain's)."""
    from dnnprobe.network.sources import get_source

    module = get_source(source)
    provenance: dict = {} if source == "torchvision" else {"source": source}
    if weights == "random":
        if source == "torchvision":
            model = random_network(arch, seed)
        else:
            model = module.build(arch, seed)
        return model.eval(), f"random-seed-{seed}", provenance
    if is_weights_path(weights):
        path = Path(weights)
        model = with_state(arch, load_weights_file(path), weights, source, seed)
        if path.suffix == ".safetensors":
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


def save_network(model: "torch.nn.Module", path: str | os.PathLike, arch: str, weights: str, seed: int, source: str,
                 extra: dict | None = None) -> NetworkInfo:
    """Write the state_dict and its JSON sidecar (``<path>.json``), each atomically."""
    import torch

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


def load_network(path: str | os.PathLike, arch: str, source: str = "torchvision") -> tuple["torch.nn.Module", NetworkInfo]:
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
    return with_state(arch, load_state_dict_file(path), str(path), source, info.seed).eval(), info
