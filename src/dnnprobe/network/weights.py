"""Weights files (``model.weights`` given as a path): a ``state_dict`` read without running any code.

``.pt``/``.pth`` files are loaded with ``torch.load(weights_only=True)`` (a pickle that would run code is
refused); ``.safetensors`` is a format without code. A file that is not what its suffix says (text, a
web page a download returned, an empty file) is named as such in one line, before any unpickling.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from dnnprobe.core.errors import DnnprobeError

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
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise DnnprobeError(f"{path}: not a loadable safetensors file ({first_line})") from None
    return load_state_dict_file(path)
