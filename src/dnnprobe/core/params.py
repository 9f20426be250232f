"""params.yaml: read it, apply ``key.path=value`` overrides, and validate all of it before any work.

Every value a stage uses comes from here, so a typo or an out-of-range value fails at once with the
key path in the message (``params.yaml: probe.C must be > 0, got -1``), not half way through a run.
The dataclasses below are the schema: their fields, types and defaults are the parameters.

The file is read as DVC reads it (ruamel.yaml, YAML 1.2), so that dnnprobe, MLflow, ``dvc.lock`` and
``dvc exp show`` see the same values: ``010`` is 10 (8 in PyYAML's YAML 1.1), ``1:30`` the string
"1:30" (90), ``1e-3`` a number (a string), ``yes`` a string (true).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dnnprobe.core.errors import DnnprobeError, missing_file_hint

STIMULUS_SOURCES = ("demo", "stimcsv", "folder", "bold5000")
DEFAULT_USER_FOLDER = "data/external"  # where a user's own stimuli go unless stimuli.folder says otherwise
DTYPES = ("float32", "float16")
COMPRESSIONS = ("none", "gzip", "lzf")


def _check(condition: Callable[[Any], bool], requirement: str) -> Callable[[Any], str | None]:
    """A field check: returns the requirement it breaks, or None."""
    return lambda value: None if condition(value) else requirement


def _positive(value: Any) -> bool:
    return value > 0


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return _check(lambda v: v in choices, "must be one of " + ", ".join(choices))


def _device(value: str) -> str | None:
    if re.fullmatch(r"auto|cpu|cuda(:(0|[1-9]\d*))?", value):  # torch refuses cuda:01
        return None
    return "must be auto, cpu, cuda or cuda:N (N without leading zeros)"


def _checked(default: Any, check: Callable[[Any], str | None] | None = None, **kw: Any) -> Any:
    return field(default=default, metadata={"check": check}, **kw)


@dataclass(frozen=True)
class DemoParams:
    n_per_class: int = _checked(200, _check(lambda v: v >= 2, "must be >= 2"))
    image_size: int = _checked(256, _check(lambda v: v >= 32, "must be >= 32"))
    seed: int = _checked(0, _check(lambda v: v >= 0, "must be >= 0"))


@dataclass(frozen=True)
class Bold5000Params:
    images_url: str = "https://osf.io/hy5m7/download"
    images_sha256: str = ""
    images_size: int = 0
    table_url: str = "https://osf.io/7c8th/download"
    table_sha256: str = ""
    table_size: int = 0
    download_dir: str = "data/downloads"
    expected_stimuli: int = 4916
    expected_class_sizes: tuple[int, ...] = (2369, 2547)


@dataclass(frozen=True)
class StimuliParams:
    source: str = _checked("demo", _one_of(STIMULUS_SOURCES))
    demo: DemoParams = field(default_factory=DemoParams)
    # The user's own stimuli (sources stimcsv and folder) are read from `folder` only: dvc.yaml lists
    # ${stimuli.folder} as a dependency of the stimuli stage, so DVC sees any change to it.
    folder: str = _checked(DEFAULT_USER_FOLDER, _check(lambda v: v.strip() != "", "must name a folder"))
    table: str = ""  # source stimcsv: the .stim.csv, relative to `folder`; its path= folder must be inside `folder`
    bold5000: Bold5000Params = field(default_factory=Bold5000Params)


MODEL_SOURCES = ("torchvision", "timm", "open_clip", "hf")  # dnnprobe.network.sources.SOURCES (tested to agree)
PREPROCESS_CHOICES = ("dnnbrain", "model")  # dnnprobe.network.preprocess
TOKEN_CHOICES = ("all", "cls", "mean", "cls+mean")  # dnnprobe.network.tokens


@dataclass(frozen=True)
class ModelParams:
    source: str = _checked("torchvision", _one_of(MODEL_SOURCES))
    arch: str = "alexnet"
    # random | a pretrained tag of the source (imagenet, IMAGENET1K_V2, ...) | a weights file inside models/external/
    weights: str = "random"
    seed: int = _checked(0, _check(lambda v: 0 <= v < 2 ** 63, "must be between 0 and 2**63 - 1"))


@dataclass(frozen=True)
class ExtractParams:
    # Empty: DNNBrain's 14 tutorial layers (dnnprobe.network.layers, which owns layer naming).
    layers: tuple[str, ...] = _checked((), _check(lambda v: len(set(v)) == len(v), "must be a list of distinct names"))
    batch_size: int = _checked(64, _check(_positive, "must be > 0"))
    device: str = _checked("auto", _device)
    dtype: str = _checked("float32", _one_of(DTYPES))
    compression: str = _checked("none", _one_of(COMPRESSIONS))
    num_workers: int = _checked(1, _check(lambda v: v >= 0, "must be >= 0"))
    preprocess: str = _checked("dnnbrain", _one_of(PREPROCESS_CHOICES))
    tokens: str = _checked("all", _one_of(TOKEN_CHOICES))


def _label_value(value: Any, where: str) -> Any:
    """probe.label: a column name, or a non-empty list of distinct ones (each may end in ``:decoder``)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        if len(set(value)) != len(value):
            raise DnnprobeError(f"{where} lists a column twice: {list(value)!r}")
        return value[0] if len(value) == 1 else tuple(value)
    raise DnnprobeError(f"{where} must be a column name or a list of column names, got {value!r}")


def _c_value(value: Any, where: str) -> Any:
    """probe.C: a number > 0, ``auto``, or a non-empty list of numbers > 0 (candidates for an inner search)."""
    if value == "auto":
        return value
    if not isinstance(value, (list, tuple)):
        if isinstance(value, str):  # YAML 1.2 (DVC's reading) gives 1e-3 as a number: a string is not one
            raise DnnprobeError(f"{where} must be a number > 0, auto, or a list of numbers > 0, got {value!r}")
        number = _coerce(value, float, where)
        if number <= 0:
            raise DnnprobeError(f"{where} must be > 0, got {number!r}")
        return number
    try:
        numbers = tuple(_coerce(item, float, where) for item in value)
    except DnnprobeError:
        numbers = ()
    if not numbers or min(numbers) <= 0:
        raise DnnprobeError(f"{where} must be a number > 0, auto, or a list of numbers > 0, got {value!r}")
    return numbers


@dataclass(frozen=True)
class ProbeParams:
    # A column of the .stim.csv, or a list of them decoded in one run (dnnprobe.probe.decoders.label_entries).
    label: Any = field(default="label", metadata={"coerce": _label_value})
    groups: str = ""  # a .stim.csv column naming each stimulus's group: folds never split a group
    shuffle: bool = False  # shuffle the folds (random_state = probe.seed)
    classifier: str = "logistic"  # a name in dnnprobe.probe.decoders.DECODERS
    # A number, or auto / a list: C chosen per training fold by an inner cross-validation.
    C: Any = field(default=1.0, metadata={"coerce": _c_value})
    standardize: bool = False
    scoring: str = "accuracy"  # a scikit-learn scorer name in dnnprobe.probe.decoders.SCORINGS
    permutations: int = _checked(0, _check(lambda v: v >= 0, "must be >= 0"))
    seed: int = _checked(0, _check(lambda v: 0 <= v < 2 ** 32, "must be between 0 and 2**32 - 1 (numpy's seed range)"))
    save_models: bool = False
    # Where the gram stage's products and the probe's fold eigensolves run (torch on a GPU); decoders stay on the CPU.
    device: str = _checked("auto", _device)


@dataclass(frozen=True)
class GramParams:
    # Storage type of each layer's matrix in data/gram.h5 (products always accumulate in float64).
    dtype: str = _checked("float32", _one_of(("float32", "float64")))


@dataclass(frozen=True)
class ReportParams:
    confusion_layer: str = ""  # layer whose confusion matrices get a figure; empty: the last layer


@dataclass(frozen=True)
class TrackingParams:
    # MLflow refuses an experiment name over 500 characters (only when the probe creates it).
    experiment: str = _checked("dnnprobe", lambda v: "must not be empty" if not v.strip() else
                               "must be at most 500 characters (MLflow's limit for an experiment name)" if len(v) > 500 else None)


@dataclass(frozen=True)
class Params:
    pca: int = _checked(100, _check(_positive, "must be > 0"))
    cv: int = _checked(10, _check(lambda v: v >= 2, "must be >= 2"))
    stimuli: StimuliParams = field(default_factory=StimuliParams)
    model: ModelParams = field(default_factory=ModelParams)
    extract: ExtractParams = field(default_factory=ExtractParams)
    gram: GramParams = field(default_factory=GramParams)
    probe: ProbeParams = field(default_factory=ProbeParams)
    report: ReportParams = field(default_factory=ReportParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    def flat(self, sections: tuple[str, ...] = ()) -> dict[str, Any]:
        """Parameters as ``{"probe.C": 1.0, ...}``, the form MLflow and DVC show: all of them, or only
        the top-level keys and sections named in `sections` (e.g. a stage's params in dvc.yaml)."""
        return {key: value for key, value in flatten(dataclasses.asdict(self)).items()
                if not sections or key.split(".")[0] in sections}


def comparable(value: Any) -> str:
    """A parameter value as a string that compares like-for-like: ``-S probe.C=1`` gives 1 where
    params.yaml has 1.0, the same setting."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return repr(float(value)) if is_number else repr(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"probe": {"C": 1}}`` -> ``{"probe.C": 1}``; tuples become lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    return names.get(kind, "a list of integers" if kind == tuple[int, ...] else "a list of strings")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check one leaf value against its declared type; ints are accepted where floats are."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    elif kind == tuple[int, ...]:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:  # tuple[str, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise DnnprobeError(f"{where} must be {_type_name(kind)}, got {value!r}")
    return value


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DnnprobeError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DnnprobeError(
            f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, spec in fields.items():
        where = f"{source}: {prefix}{name}"
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, data[name], source, f"{prefix}{name}.")
            continue
        coerce = spec.metadata.get("coerce")
        value = coerce(data[name], where) if coerce else _coerce(data[name], kind, where)
        check = spec.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise DnnprobeError(f"{where} {problem}, got {value!r}")
        values[name] = value
    return cls(**values)


def read_yaml(text: str) -> Any:
    """YAML text as DVC reads params.yaml: ruamel.yaml's safe loader (YAML 1.2), what
    ``dvc.utils.serialize.parse_yaml`` uses. Raises ruamel.yaml's YAMLError."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def _yaml_problem(exc: Exception) -> str:
    """``, line 3, column 5: not valid YAML (did not find expected ...)``: one line, where the loader gives several."""
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    return f"{where}: not valid YAML ({problem})"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``probe.C=0.5`` into (["probe", "C"], 0.5); the value is read as YAML, as params.yaml is.

    A value YAML cannot read (``@lab``, a backtick, a tab) is refused in one line saying how to quote it.
    """
    from ruamel.yaml import YAMLError

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise DnnprobeError(f"override {text!r} must look like key.path=value")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except YAMLError as exc:
        quoted = "'" + raw.replace("'", "''") + "'"
        raise DnnprobeError(f"--set {text!r}{_yaml_problem(exc)}; to pass it as text, quote the value in YAML: "
                            f"{key.strip()}={quoted}") from None
    return key.strip().split("."), value


def load_params(path: str | Path = "params.yaml", overrides: tuple[str, ...] = ()) -> Params:
    """Read and validate a params file; `overrides` are ``key.path=value`` strings applied first.

    Raises DnnprobeError (one line) when the file is missing, is not valid YAML, or any value is out
    of its range. A missing file is an error, never a silent run on the built-in defaults.
    """
    path = Path(path)
    if path.is_dir():
        raise DnnprobeError(f"{path}: is a folder, not a parameter file")
    from ruamel.yaml import YAMLError

    try:
        data = read_yaml(path.read_text())
    except FileNotFoundError:
        raise DnnprobeError(f"{path}: parameter file not found{missing_file_hint()}") from None
    except YAMLError as exc:
        raise DnnprobeError(f"{path}{_yaml_problem(exc)}") from None
    data = data or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise DnnprobeError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return _build(Params, data, str(path))
