"""Source ``local``: a network whose code is in the researcher's own repository (CORnet, a lab's model, a paper's code).

- ``model.arch``: ``<python file>:<function>``, e.g. ``models/external/cornet_z.py:cornet_z``. The file
  must lie inside models/external/ (links resolved) and inside ``model.file``, the path the network
  stage watches; the function takes no arguments and returns the ``torch.nn.Module``.
- ``model.weights``: ``random`` (the function's own initialisation, drawn from ``model.seed``) or a
  ``state_dict`` file inside ``model.file`` (loaded without running code: ``torch.load(weights_only=True)``
  or ``.safetensors``).
- ``extract.preprocess: model``: the numbers the file states in a module-level ``PREPROCESS`` dict
  (``input_size``, ``mean``, ``std``, ``resize``: ``squash`` or ``shorter_side`` with ``shorter_side``
  pixels, optional ``interpolation``); ``dnnbrain`` needs nothing from the file.
- Layers: the network's top-level children (``V1``, ``V2``, ..., ``decoder``) as they are named, in order,
  and every module path.

Running the file is the point of this source: it is code in the researcher's own repository, run as
they would run it. Nothing else runs code: weights files are read as data.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path

import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.network.preprocess import Preprocess, shorter_side_then_crop
from dnnprobe.network.sources.common import seeded

EXTERNAL = Path("models/external")  # where the researcher's files go (the network stage's default dep)
EXAMPLE = "models/external/cornet_z.py:cornet_z"
RESIZE_MODES = ("squash", "shorter_side")

_loaded: dict[tuple[str, str], object] = {}  # (real path, sha256) -> the module, run once per process


def archs() -> list[str]:
    return [EXAMPLE]


def split_arch(arch: str) -> tuple[Path, str]:
    """The Python file and the function named by ``model.arch`` (``<file>.py:<function>``), checked."""
    file, _, function = arch.rpartition(":")
    if not file.endswith(".py") or not function.isidentifier():
        raise DnnprobeError(f"model.arch: {arch!r} is not <python file>:<function> (source local), e.g. {EXAMPLE}")
    path = Path(file)
    if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(EXTERNAL)):
        link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise DnnprobeError(f"model.arch: {file}{link} is outside {EXTERNAL}/; the network's code must be in your "
                            f"repository's {EXTERNAL}/ (copy it there)")
    if not path.is_file():
        raise DnnprobeError(f"model.arch: {file}: no such file")
    return path, function


def _module(path: Path):
    """The file run as a module (once per process and content); any error in it becomes one line."""
    key = (os.path.realpath(path), file_sha256(path))
    if key not in _loaded:
        name = f"dnnprobe_local_{path.stem}_{key[1][:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - whatever the user's file raises, named in one line
            del sys.modules[name]
            raise DnnprobeError(f"{path}: running the file failed ({_where(exc, path)})") from None
        _loaded[key] = module
    return _loaded[key]


def _where(exc: BaseException, path: Path) -> str:
    """The exception in one line, with the line of the user's file it came from."""
    if isinstance(exc, SyntaxError) and exc.lineno:  # its str() already ends "(file, line N)": say it once
        return f"{type(exc).__name__}: {exc.msg} at line {exc.lineno}"
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if os.path.realpath(frame.filename) == os.path.realpath(path)]
    return f"{message} at line {lines[-1]}" if lines else message


def build(arch: str, seed: int):
    path, name = split_arch(arch)
    module = _module(path)
    function = getattr(module, name, None)
    if function is None or not callable(function):
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__]
        what = "no function" if function is None else f"{type(function).__name__} (not a function)"
        raise DnnprobeError(f"model.arch: {path} has {what} {name!r}; its functions: {', '.join(found) or 'none'}")
    with seeded(seed):
        try:
            model = function()
        except Exception as exc:  # noqa: BLE001 - the user's function, named in one line
            raise DnnprobeError(f"model.arch: {arch}() failed ({_where(exc, path)})") from None
    if not isinstance(model, torch.nn.Module):
        raise DnnprobeError(f"model.arch: {arch}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def provenance(arch: str) -> dict:
    """What names the code in the records: its file, that file's sha256, the function."""
    path, name = split_arch(arch)
    return {"code_file": str(path), "code_sha256": file_sha256(path), "function": name}


def pretrained(arch: str, tag: str):
    raise DnnprobeError(f"model.weights={tag}: source local has no pretrained tags; use random or a state_dict file "
                        "inside model.file (e.g. models/external/cornet_z.pt)")


def preprocessing(model, arch: str) -> Preprocess:
    path, _ = split_arch(arch)
    stated = getattr(_module(path), "PREPROCESS", None)
    if not isinstance(stated, dict):
        raise DnnprobeError(f"extract.preprocess=model: {path} states no PREPROCESS dict (input_size, mean, std, "
                            "resize); add one (docs/models.md) or use extract.preprocess=dnnbrain")
    try:
        return _stated(stated)
    except (KeyError, TypeError, ValueError) as exc:
        raise DnnprobeError(f"{path}: PREPROCESS {exc}") from None


def _stated(stated: dict) -> Preprocess:
    unknown = set(stated) - {"input_size", "mean", "std", "resize", "shorter_side", "interpolation"}
    if unknown:
        raise ValueError(f"has unknown keys {sorted(unknown)}")
    missing = [key for key in ("input_size", "mean", "std") if key not in stated]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    size = stated["input_size"]
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    mean, std = (tuple(float(v) for v in stated[key]) for key in ("mean", "std"))
    if len(size) != 2 or min(size) < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError("needs input_size (pixels, or [height, width]), and 3 means and 3 positive stds (RGB, on [0, 1])")
    resize = stated.get("resize", "squash")
    interpolation = str(stated.get("interpolation", "bilinear")).lower()
    if interpolation not in ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"):
        raise ValueError(f"interpolation {interpolation!r} is not one of nearest, bilinear, bicubic, lanczos, box, hamming")
    if resize == "squash":
        return Preprocess(resize=size, crop=None, interpolation=interpolation, mean=mean, std=std)
    if resize == "shorter_side":
        return shorter_side_then_crop(int(stated.get("shorter_side", min(size))), size, interpolation, mean, std)
    raise ValueError(f"resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")


def friendly_layers(model, arch: str) -> dict[str, str]:
    return {name: name for name, _ in model.named_children()}


def default_layers(model, arch: str) -> list[str]:
    return list(friendly_layers(model, arch))


def token_layout(model, input_size: tuple[int, int]):
    return None
