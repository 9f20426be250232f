"""A probe run's name: the settings that tell it apart from other runs first, then what ran."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from dnnprobe.core.params import comparable
from dnnprobe.network.params import ModelParams


def changed_settings(arch: str, weights: str, settings: Mapping[str, object], defaults: Mapping[str, object]) -> list[str]:
    """What differs from the defaults, as ``key=value`` (dotted keys, their section dropped): the network
    and its weights when they are not ``alexnet`` and ``random``, then each setting off its default.
    A weights file is named by its file name."""
    parts = [f"{key}={value}" for key, value, default in (("arch", arch, ModelParams.arch),
                                                          ("weights", _weights_name(weights), ModelParams.weights))
             if value != default]
    parts += [f"{key.split('.', 1)[-1]}={value}" for key, value in settings.items()
              if key in defaults and comparable(value) != comparable(defaults[key])]
    return parts


def _weights_name(weights: str) -> str:
    """A weights file by its file name; a named weights set (``random``, ``IMAGENET1K_V1``) as it is."""
    return Path(weights).name if ("/" in weights or "\\" in weights) else weights


def run_name(arch: str, weights: str, settings: Mapping[str, object], defaults: Mapping[str, object],
             always: tuple[str, ...] = ("pca", "cv")) -> str:
    """A parent run's name: what differs from the defaults first, then the network and the `always` keys.

    ``classifier=ridge pca=50 | alexnet random n=400 cv=10``: MLflow's runs table cuts names at about 20
    characters, so what tells runs apart comes first (:func:`changed_settings`); the rest says what
    ran. The probe's default run is ``alexnet random prep=dnnbrain n=400 pca=100 cv=10`` (it passes the
    preprocessing and tokens as settings). `probe_run` appends DVC's experiment
    name in brackets, so the name also says which `dvc exp show` row it is.
    """
    changed = changed_settings(arch, weights, settings, defaults)
    rest = [arch, _weights_name(weights)]
    rest += [f"{key}={settings[key]}" for key in always if key in settings and f"{key}={settings[key]}" not in changed]
    return " ".join(changed) + (" | " if changed else "") + " ".join(str(part) for part in rest)
