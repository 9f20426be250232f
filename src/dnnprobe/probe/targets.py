"""The targets: what a probe decodes, read from the stimulus table (probe.label, probe.groups), and the
checks that refuse, before any work, data and settings that cannot give a meaningful cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.probe.decoders import INNER_CV, ProbeSettings, entry_column, label_entries
from dnnprobe.probe.splits import Splits, inner_splits, make_splits
from dnnprobe.track.keys import MAX_LAYER_NAME, MLFLOW_KEY
from dnnprobe.stimuli.table import class_label  # how the table's labels are read: 1 and 1.0 are class 1


@dataclass
class Target:
    """One attribute decoded from every layer: its name (the probe.label column), values and settings."""

    name: str
    y: np.ndarray  # (n,) integer classes, or numbers for a regression decoder
    settings: ProbeSettings


def folds(y: np.ndarray, settings: ProbeSettings, groups: np.ndarray | None = None) -> Splits:
    """The outer folds (:mod:`dnnprobe.probe.splits`): DNNBrain's StratifiedKFold(cv) without shuffling (KFold
    for a continuous target); with `groups` ((n,) group of each stimulus) StratifiedGroupKFold
    (GroupKFold), so that no group is split between training and test."""
    return make_splits(y, settings.cv, settings.is_regression, groups, settings.shuffle, settings.seed)


def targets(table, label: str, settings: ProbeSettings) -> np.ndarray:
    """The decoded column of a stimulus table: integer classes, or numbers for a regression decoder.

    Raises DnnprobeError naming the table, row and value that is not a class label.
    """
    if settings.is_regression:
        return table.numeric_column(label)
    values = table.column(label)
    try:
        return table.integer_labels(label)
    except DnnprobeError:
        rows = [i for i, v in enumerate(values) if not _is_number(v, class_label)]
        if not rows:  # integers, but too large
            raise
        row = rows[0]
        numeric = all(_is_number(v, float) for v in values)
        hint = " (a continuous column: use probe.classifier=ridge_regression and probe.scoring=r2)" if numeric else ""
        raise DnnprobeError(
            f"{table.location}: column {label!r} is not an integer class label "
            f"(stimulus row {row + 1}, {table.stim_ids[row]}: {values[row]!r}){hint}"
        ) from None


def class_names(table, label: str) -> dict[int, str]:
    """Each class of column `label` -> its name in the table's ``condition`` column (the class folder of a
    ``folder`` source, e.g. ``cat``), where every stimulus of the class has the same one; {} otherwise."""
    if label == "condition" or "condition" not in table.columns or label not in table.columns:
        return {}
    names: dict[int, set[str]] = {}
    for value, condition in zip(table.columns[label], table.columns["condition"]):
        try:
            names.setdefault(class_label(value), set()).add(condition)
        except (ValueError, OverflowError):
            return {}  # not class labels: targets() says so
    return {value: next(iter(conditions)) for value, conditions in names.items()
            if len(conditions) == 1 and next(iter(conditions)).strip()}


def _is_number(text: str, kind: Callable[[str], Any]) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def check_targets(
    y: np.ndarray, settings: ProbeSettings, n_units: int | None = None, label: str = "label",
    layer: str | None = None, table: str | None = None, groups: np.ndarray | None = None, groups_name: str = "",
    names: dict[int, str] | None = None,
) -> None:
    """Reject settings that cannot give a meaningful cross-validation, before any work.

    `groups` ((n,) group of each stimulus, the ``probe.groups`` column's values, or None) are checked against the folds too
    (:func:`check_groups`). `layer`, `table` and `names` (class -> its name, see :func:`class_names`) only make
    the messages name the layer, the stimulus table and the class at fault.
    """
    names = names or {}

    def named(value) -> str:
        return f"{value} ({names[value]})" if value in names else f"{value}"

    n = len(y)
    column = f"{table}: column {label!r}" if table else f"column {label!r}"
    if settings.cv > n:
        raise DnnprobeError(f"cv={settings.cv} is larger than the number of stimuli ({n})")
    if settings.scoring == "r2" and not settings.is_regression:
        raise DnnprobeError("probe.scoring=r2 needs probe.classifier=ridge_regression")
    if settings.is_regression and settings.scoring != "r2":
        raise DnnprobeError("probe.classifier=ridge_regression is scored by r2: set probe.scoring=r2")
    if not settings.is_regression:
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise DnnprobeError(f"{column} has a single class ({named(classes[0])}); nothing to decode")
        if counts.min() < settings.cv:  # grouped folds too: scikit-learn's splitters refuse or leave the class out
            small = classes[np.argmin(counts)]
            raise DnnprobeError(
                f"{column}: class {named(small)} has {counts.min()} stimuli, fewer than cv={settings.cv} folds "
                f"(set cv <= {counts.min()}, or add stimuli to that class)"
            )
        if settings.scoring == "roc_auc" and len(classes) != 2:
            raise DnnprobeError(f"probe.scoring=roc_auc needs two classes; {column} has {len(classes)}")
    if groups is not None:
        check_groups(y, groups, settings, label, column, groups_name)
    smallest_train = n - max(len(test) for _, test in folds(y, settings, groups))
    if settings.n_components > smallest_train:
        # A training fold holds n - ceil(n / cv) stimuli: more folds (or more stimuli) make it larger.
        raise DnnprobeError(
            f"pca={settings.n_components} is larger than the smallest training fold ({smallest_train} stimuli): "
            f"set pca <= {smallest_train} (at cv={settings.cv} a training fold holds {smallest_train} of the "
            f"{n} stimuli; more folds or more stimuli hold more)"
        )
    if settings.C_grid is not None:
        check_inner_folds(y, settings, groups, column, named)
    if n_units is not None and settings.n_components > n_units:
        what = f"layer {layer}'s" if layer else "the layer's"
        raise DnnprobeError(f"pca={settings.n_components} is larger than {what} {n_units} units")


def check_inner_folds(y: np.ndarray, settings: ProbeSettings, groups: np.ndarray | None, column: str,
                      named: Callable[[Any], str]) -> None:
    """The checks of the outer folds, on the inner folds a search of C (``probe.C: auto`` or a list) splits
    each training fold into (:data:`dnnprobe.probe.decoders.INNER_CV` folds of the same scheme)."""
    search = f"the {INNER_CV} inner folds of probe.C's search (auto or a list)"
    outer = folds(y, settings, groups)
    if not settings.is_regression:
        classes = np.unique(y)
        for fold, (train, _) in enumerate(outer, 1):
            counts = np.array([np.count_nonzero(y[train] == value) for value in classes])
            if counts.min() < INNER_CV:
                raise DnnprobeError(
                    f"{column}: class {named(classes[np.argmin(counts)])} has {counts.min()} stimuli in training fold "
                    f"{fold} (cv={settings.cv}), fewer than {search}: set probe.C to a number, "
                    "or add stimuli to that class")
    elif min(len(train) for train, _ in outer) < INNER_CV:
        raise DnnprobeError(f"a training fold holds {min(len(train) for train, _ in outer)} stimuli, fewer than "
                            f"{search}: set probe.C to a number, or add stimuli")
    inner = inner_splits(outer, y, INNER_CV, settings.is_regression, groups, settings.shuffle, settings.seed)
    smallest = min(len(train) for fold in inner for train, _ in fold)
    if settings.n_components > smallest:
        raise DnnprobeError(
            f"pca={settings.n_components} is larger than the smallest inner training fold ({smallest} stimuli, in "
            f"{search}): set pca <= {smallest}, or probe.C to a number")


def decoded_targets(params, table) -> list[Target]:
    """One :class:`Target` per entry of probe.label (a column, or ``column:decoder``), named
    by its column. Raises DnnprobeError for a column listed twice or a name MLflow cannot log."""
    entries = label_entries(params.probe.label)
    columns = [entry_column(entry) for entry in entries]
    if len(set(columns)) != len(columns):
        raise DnnprobeError(f"params.yaml: probe.label lists a column twice: {list(entries)!r}")
    for column in columns if len(columns) > 1 else []:  # the column names become metric keys <label>/<layer>
        if not MLFLOW_KEY.fullmatch(column) or len(column) > MAX_LAYER_NAME:
            raise DnnprobeError(f"params.yaml: probe.label column {column!r} cannot name an MLflow metric (allowed: "
                                f"letters, digits, _ - . / and spaces, at most {MAX_LAYER_NAME} characters); rename the column")
    found = []
    for entry, column in zip(entries, columns):
        settings = ProbeSettings.from_params(params, entry)
        found.append(Target(column, targets(table, column, settings), settings))
    return found


# What a table writes for a missing value (pandas' default na_values, compared case-insensitively): as a group,
# it would make every such stimulus one group.
MISSING = {"", "#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>", "n/a", "na",
           "null", "nan", "none"}


def group_column(params, table) -> np.ndarray | None:
    """(n,) the probe.groups column's values (strings), or None without groups.

    Raises DnnprobeError naming the rows whose group is missing (empty, ``nan``, ``NA``, ...).
    """
    if not params.probe.groups:
        return None
    values = [value.strip() for value in table.column(params.probe.groups)]
    missing = [row for row, value in enumerate(values) if value.lower() in MISSING]
    if missing:
        shown = ", ".join(f"{row + 1} ({table.stim_ids[row]}: {values[row]!r})" for row in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DnnprobeError(
            f"{table.location}: probe.groups column {params.probe.groups!r} has no group at stimulus row{'s' if len(missing) > 1 else ''} "
            f"{shown}{more}: give every stimulus its group (a missing value would make all of them one group)")
    return np.asarray(values, dtype=str)


def check_groups(y: np.ndarray, groups: np.ndarray, settings: ProbeSettings, label: str, column: str,
                 groups_name: str) -> None:
    """Refuse groups (``probe.groups``) that make a fold impossible, in the data's terms.

    Fewer groups than folds leave a fold empty; a class whose stimuli all sit in one group is missing
    from the training fold whenever that group is tested; the inner search of ``probe.C: auto`` needs
    as many groups in every training fold as it has folds.
    """
    where = f"probe.groups column {groups_name!r}"
    n_groups = len(np.unique(groups))
    if n_groups < settings.cv:
        raise DnnprobeError(f"{where} has {n_groups} groups, fewer than cv={settings.cv} folds "
                            "(grouped folds never split a group)")
    if not settings.is_regression:
        for value in np.unique(y):
            holding = np.unique(groups[y == value])
            if len(holding) < 2:
                raise DnnprobeError(
                    f"{column}: every stimulus of class {value} is in one group, {str(holding[0])!r} of {where}: "
                    "the fold testing that group has no training stimulus of the class")
    if settings.C_grid is not None:
        for fold, (train, _) in enumerate(folds(y, settings, groups)):
            if len(np.unique(groups[train])) < INNER_CV:
                raise DnnprobeError(f"{where}: training fold {fold + 1} has fewer than {INNER_CV} groups, the "
                                    "folds of probe.C's inner search")
