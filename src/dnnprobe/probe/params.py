"""The probe's settings in params.yaml: the top-level ``pca`` and ``cv`` (``dvc exp run -S pca=50``) and
the ``probe`` section (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from dnnprobe.compute.device import DEVICE_PATTERN
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import boolean_in, check, checked, coerce, device_choice, positive, yaml_text


@dataclass(frozen=True)
class FoldParams:
    SECTION: ClassVar[str] = ""  # top-level keys
    pca: int = checked(100, check(positive, "must be > 0"))  # principal components fitted per training fold
    cv: int = checked(10, check(lambda v: v >= 2, "must be >= 2"))  # cross-validation folds


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
    if boolean_in(value):  # before `value == "auto"`, and before True passes as the number 1
        raise DnnprobeError(f"{where} must be a number > 0, auto, or a list of numbers > 0, not a boolean: "
                            f"got {yaml_text(value)}")
    if value == "auto":
        return value
    if not isinstance(value, (list, tuple)):
        if isinstance(value, str):  # YAML 1.2 (DVC's reading) gives 1e-3 as a number: a string is not one
            raise DnnprobeError(f"{where} must be a number > 0, auto, or a list of numbers > 0, got {value!r}")
        number = coerce(value, float, where)
        if number <= 0:
            raise DnnprobeError(f"{where} must be > 0, got {number!r}")
        return number
    try:
        numbers = tuple(coerce(item, float, where) for item in value)
    except DnnprobeError:
        numbers = ()
    if not numbers or min(numbers) <= 0:
        raise DnnprobeError(f"{where} must be a number > 0, auto, or a list of numbers > 0, got {value!r}")
    return numbers


@dataclass(frozen=True)
class ProbeParams:
    SECTION: ClassVar[str] = "probe"
    # A column of the .stim.csv, or a list of them decoded in one run (dnnprobe.probe.decoders.label_entries).
    label: Any = field(default="label", metadata={"coerce": _label_value})
    groups: str = ""  # a .stim.csv column naming each stimulus's group: folds never split a group
    shuffle: bool = False  # shuffle the folds (random_state = probe.seed)
    classifier: str = "logistic"  # a name in dnnprobe.probe.decoders.DECODERS
    # A number, or auto / a list: C chosen per training fold by an inner cross-validation.
    C: Any = field(default=1.0, metadata={"coerce": _c_value})
    standardize: bool = False
    scoring: str = "accuracy"  # a scikit-learn scorer name in dnnprobe.probe.decoders.SCORINGS
    permutations: int = checked(0, check(lambda v: v >= 0, "must be >= 0"))
    seed: int = checked(0, check(lambda v: 0 <= v < 2 ** 32, "must be between 0 and 2**32 - 1 (numpy's seed range)"))
    save_models: bool = False
    # Where the gram stage's products and the probe's fold eigensolves run (torch on a GPU); decoders stay on the CPU.
    device: str = checked("auto", device_choice(DEVICE_PATTERN))
