"""Tokens: what a transformer layer records (``extract.tokens``), and the hidden state of modules that
return tuples or model-output objects.

A transformer block's output is (tokens, features) per stimulus: ViT-B/16 at 224 px has 197 tokens
(1 CLS + 196 patches) of 768 features. ``extract.tokens`` picks what is stored, per such layer:

- ``all``: every token, as (n_tokens, n_features, 1) (151,296 units per ViT-B/16 block);
- ``cls``: the class token (768 units); refused for a network without one;
- ``mean``: the mean over the patch tokens, CLS and register tokens excluded (768 units);
- ``cls+mean``: both, concatenated (1,536 units).

Which token is CLS, and how many prefix tokens (CLS + registers) come first, is the source's
:class:`TokenLayout` (never guessed from the data). A layer counts as a token layer when its output
per stimulus is 2-D with exactly the layout's ``n_tokens`` rows; any other layer (AlexNet's, a
ConvNeXt stage, timm's ``patch_embed`` with patches only) is stored whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.params import TOKEN_CHOICES


@dataclass(frozen=True)
class TokenLayout:
    """A transformer's sequence: ``n_prefix`` tokens (CLS first when ``has_cls``, then registers) before
    the patch tokens, ``n_tokens`` in all for the network's input size."""

    n_prefix: int
    n_tokens: int
    has_cls: bool = True


def hidden_state(output) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, a tuple's first element (HF and OpenCLIP blocks
    that also return attention weights), or a model output's ``last_hidden_state`` (else its first tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state") and isinstance(output.last_hidden_state, torch.Tensor):
        return output.last_hidden_state
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def check_tokens(tokens: str, layout: TokenLayout | None, network: str = "this network") -> None:
    """Refuse a token choice that cannot apply to `network` (its `layout`; None: no token layers), before
    any work: an unknown one, and ``cls`` / ``cls+mean`` where the sequence has no class token (SigLIP)."""
    if tokens not in TOKEN_CHOICES:
        raise DnnprobeError(f"extract.tokens must be one of {', '.join(TOKEN_CHOICES)}, got {tokens!r}")
    if tokens in ("cls", "cls+mean") and layout is not None and not layout.has_cls:
        raise DnnprobeError(f"extract.tokens={tokens}: {network} has no class token (its {layout.n_tokens} tokens are "
                            f"{'all patches' if not layout.n_prefix else 'registers and patches'}); use extract.tokens=mean or all")


def reducer(tokens: str, layout: TokenLayout, network: str = "this network") -> Callable[[torch.Tensor], torch.Tensor]:
    """The function taking a token layer's (batch, n_tokens, n_features) output to what is stored."""
    check_tokens(tokens, layout, network)
    start = layout.n_prefix

    def mean(x: torch.Tensor) -> torch.Tensor:
        return x[:, start:].mean(dim=1)

    return {
        "all": lambda x: x,
        "cls": lambda x: x[:, 0],
        "mean": mean,
        "cls+mean": lambda x: torch.cat([x[:, 0], mean(x)], dim=1),
    }[tokens]


def token_layers(shapes: dict[str, tuple[int, ...]], layout: TokenLayout | None) -> list[str]:
    """The layers whose per-stimulus output shape is (n_tokens, n_features) for `layout`."""
    if layout is None:
        return []
    return [layer for layer, shape in shapes.items() if len(shape) == 2 and shape[0] == layout.n_tokens]
