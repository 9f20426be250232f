"""The decoders: which scikit-learn estimator decodes the label from a fold's principal scores, how it
is scored, and what the data must offer for a cross-validation to mean something.

To add a decoder, add one entry to :data:`DECODERS`; scores are scikit-learn scorer names
(:func:`sklearn.metrics.get_scorer`). Estimators keep scikit-learn's defaults, as DNNBrain's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import get_scorer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from dnnprobe.core.errors import DnnprobeError


class PriorLDA(LinearDiscriminantAnalysis):
    """scikit-learn's LDA, also defined when no feature varies across the training stimuli (a layer
    whose activations are all zero or all equal: a dead ReLU layer), where scikit-learn's fit raises
    IndexError. LDA's posterior is then the class prior: it predicts the most frequent class (as the
    other decoders do on such data), with the priors as probabilities. On any other data it is
    scikit-learn's LDA unchanged.
    """

    def fit(self, X, y):
        if len(X) == 0 or np.ptp(np.asarray(X), axis=0).any():
            return super().fit(X, y)  # X as given: its dtype is scikit-learn's to handle
        X = np.asarray(X, dtype=float)
        self.classes_, counts = np.unique(y, return_counts=True)
        self.priors_ = counts / counts.sum()
        n_classes, n_features = len(self.classes_), X.shape[1]
        log_prior = np.log(self.priors_)
        # What LinearClassifierMixin reads: a decision of log priors, as LDA's own coef_ and intercept_
        # are laid out (one row, the log ratio, for two classes).
        self.coef_ = np.zeros((1 if n_classes == 2 else n_classes, n_features))
        self.intercept_ = np.array([log_prior[1] - log_prior[0]]) if n_classes == 2 else log_prior
        self.means_ = np.repeat(X[:1], n_classes, axis=0)
        self.xbar_ = X[0]
        self.scalings_ = np.zeros((n_features, 0))
        self.explained_variance_ratio_ = np.zeros(0)
        self._max_components = 0
        self.n_features_in_ = n_features
        return self


@dataclass(frozen=True)
class Decoder:
    """One decoder: a scikit-learn factory and what the probe needs to know about it."""

    make: Callable[[float], Any]  # probe.C -> an unfitted scikit-learn estimator
    regression: bool = False  # decodes a continuous column (KFold, r2) rather than classes
    batched_null: bool = False  # its permutation null can be fitted for all shuffles at once (two classes)


DECODERS = {
    "logistic": Decoder(lambda C: LogisticRegression(C=C), batched_null=True),
    "linear_svm": Decoder(lambda C: LinearSVC(C=C)),
    "ridge": Decoder(lambda C: RidgeClassifier(alpha=1.0 / C)),
    "lda": Decoder(lambda C: PriorLDA()),
    "ridge_regression": Decoder(lambda C: Ridge(alpha=1.0 / C), regression=True),
}
SCORINGS = ("accuracy", "balanced_accuracy", "roc_auc", "r2")  # scikit-learn scorer names the probe supports
# probe.C: auto searches these (inverse regularisation strengths, a decade apart, DNNBrain's 1 in the middle).
AUTO_C = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
INNER_CV = 5  # folds of the inner search (GridSearchCV's default cv)


@dataclass(frozen=True)
class ProbeSettings:
    """What a probe run computes; mirrors ``pca``, ``cv`` and ``probe.*`` in params.yaml.

    Raises DnnprobeError for a decoder or scoring that is not known.
    """

    n_components: int = 100
    cv: int = 10
    classifier: str = "logistic"
    C: float = 1.0
    standardize: bool = False
    scoring: str = "accuracy"
    permutations: int = 0
    seed: int = 0
    shuffle: bool = False  # shuffle the folds (random_state = seed); DNNBrain does not
    # probe.C: auto or a list: candidates for C, chosen per training fold by an inner cross-validation
    # (INNER_CV folds of the same scheme); None: C is fixed.
    C_grid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for key, value, choices in (("probe.classifier", self.classifier, DECODERS), ("probe.scoring", self.scoring, SCORINGS)):
            if value not in choices:
                raise DnnprobeError(f"params.yaml: {key} must be one of {', '.join(choices)}, got {value!r}")
        if self.C_grid is not None and self.classifier == "lda":
            raise DnnprobeError("params.yaml: probe.C: lda has no C to choose; set probe.C to a number")

    @classmethod
    def from_params(cls, params, label: str | None = None) -> "ProbeSettings":
        """The settings ``pca``, ``cv`` and ``probe.*`` of a :class:`dnnprobe.core.params.Params`, for one
        entry of ``probe.label`` (:func:`label_entries`; default: the first)."""
        probe = params.probe
        fixed, grid = c_setting(probe.C)
        entry = label_entries(probe.label)[0] if label is None else label
        classifier, scoring = entry_decoder(entry, probe.classifier, probe.scoring)
        return cls(n_components=params.pca, cv=params.cv, classifier=classifier, C=fixed,
                   standardize=probe.standardize, scoring=scoring, permutations=probe.permutations, seed=probe.seed,
                   shuffle=probe.shuffle, C_grid=grid)

    @property
    def decoder(self) -> Decoder:
        return DECODERS[self.classifier]

    @property
    def is_regression(self) -> bool:
        return self.decoder.regression


def c_setting(value) -> tuple[float, tuple[float, ...] | None]:
    """probe.C as (fixed C, candidates): a number is fixed; ``auto`` is :data:`AUTO_C`; a list, those."""
    if isinstance(value, str):
        return 1.0, AUTO_C
    if isinstance(value, (list, tuple)):
        return float(value[0]), tuple(float(v) for v in value)
    return float(value), None


def label_entries(label) -> list[str]:
    """probe.label as a list of entries (a single column name is a list of one)."""
    return [label] if isinstance(label, str) else list(label)


def entry_column(entry: str) -> str:
    """The column of a probe.label entry (``size:ridge_regression`` -> ``size``)."""
    return entry.partition(":")[0]


def entry_decoder(entry: str, classifier: str, scoring: str) -> tuple[str, str]:
    """A probe.label entry's decoder and scoring.

    ``column`` uses probe.classifier and probe.scoring. ``column:decoder`` names its own decoder (say
    ``size:ridge_regression`` beside class labels); its scoring is probe.scoring when that suits the
    decoder (r2 for a continuous target, any other for classes), else r2 or accuracy.
    """
    column, _, own = entry.partition(":")
    if not own:
        return classifier, scoring
    if own not in DECODERS:
        raise DnnprobeError(f"probe.label {entry!r}: decoder {own!r} must be one of {', '.join(DECODERS)}")
    regression = DECODERS[own].regression
    if regression != (scoring == "r2"):
        scoring = "r2" if regression else "accuracy"
    return own, scoring


@dataclass
class Target:
    """One attribute decoded from every layer: its name (the probe.label column), values and settings."""

    name: str
    y: np.ndarray  # (n,) integer classes, or numbers for a regression decoder
    settings: ProbeSettings


def make_estimator(settings: ProbeSettings, C: float | None = None):
    """The decoder fitted on each fold's principal scores, behind a StandardScaler with probe.standardize.
    `C` overrides ``settings.C`` (a candidate of the inner search)."""
    decoder = settings.decoder.make(settings.C if C is None else C)
    return make_pipeline(StandardScaler(), decoder) if settings.standardize else decoder


def score(scoring: str, y_true: np.ndarray, estimator, z_test: np.ndarray) -> float:
    """A fitted decoder's score on held-out principal scores, by scikit-learn scorer name."""
    return float(get_scorer(scoring)(estimator, z_test, y_true))


def targets(table, label: str, settings: ProbeSettings) -> np.ndarray:
    """The decoded column of a stimulus table: integer classes, or numbers for a regression decoder.

    Raises DnnprobeError naming the table, row and value that is not a class label.
    """
    from dnnprobe.stimuli.table import class_label  # the table's own module (a stage that reads a table imports it)

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
    from dnnprobe.stimuli.table import class_label  # how the table's labels are read: 1 and 1.0 are class 1

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
        if counts.min() < settings.cv and groups is None:
            small = classes[np.argmin(counts)]
            raise DnnprobeError(
                f"{column}: class {named(small)} has {counts.min()} stimuli, fewer than cv={settings.cv} folds "
                f"(set cv <= {counts.min()}, or add stimuli to that class)"
            )
        if settings.scoring == "roc_auc" and len(classes) != 2:
            raise DnnprobeError(f"probe.scoring=roc_auc needs two classes; {column} has {len(classes)}")
    if groups is not None:
        check_groups(y, groups, settings, label, column, groups_name)
    smallest_train = n - max(len(test) for _, test in _outer_splits(y, settings, groups))
    if settings.n_components > smallest_train:
        # A training fold holds n - ceil(n / cv) stimuli: more folds (or more stimuli) make it larger.
        raise DnnprobeError(
            f"pca={settings.n_components} is larger than the smallest training fold ({smallest_train} stimuli): "
            f"set pca <= {smallest_train} (at cv={settings.cv} a training fold holds {smallest_train} of the "
            f"{n} stimuli; more folds or more stimuli hold more)"
        )
    if n_units is not None and settings.n_components > n_units:
        what = f"layer {layer}'s" if layer else "the layer's"
        raise DnnprobeError(f"pca={settings.n_components} is larger than {what} {n_units} units")


def decoded_targets(params, table) -> list[Target]:
    """One :class:`Target` per entry of probe.label (a column, or ``column:decoder``), named
    by its column. Raises DnnprobeError for a column listed twice or a name MLflow cannot log."""
    from dnnprobe.track.keys import MAX_LAYER_NAME, MLFLOW_KEY

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


def group_column(params, table) -> np.ndarray | None:
    """(n,) the probe.groups column's values (strings), or None without groups."""
    if not params.probe.groups:
        return None
    return np.asarray([value.strip() for value in table.column(params.probe.groups)], dtype=str)


def _outer_splits(y: np.ndarray, settings: ProbeSettings, groups: np.ndarray | None):
    from dnnprobe.probe.splits import make_splits

    return make_splits(y, settings.cv, settings.is_regression, groups, settings.shuffle, settings.seed)


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
        for fold, (train, _) in enumerate(_outer_splits(y, settings, groups)):
            if len(np.unique(groups[train])) < INNER_CV:
                raise DnnprobeError(f"{where}: training fold {fold + 1} has fewer than {INNER_CV} groups, the "
                                    "folds of probe.C's inner search")
