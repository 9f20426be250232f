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

    def __post_init__(self) -> None:
        for key, value, choices in (("probe.classifier", self.classifier, DECODERS), ("probe.scoring", self.scoring, SCORINGS)):
            if value not in choices:
                raise DnnprobeError(f"params.yaml: {key} must be one of {', '.join(choices)}, got {value!r}")

    @classmethod
    def from_params(cls, params) -> "ProbeSettings":
        """The settings ``pca``, ``cv`` and ``probe.*`` of a :class:`dnnprobe.core.params.Params`."""
        probe = params.probe
        return cls(n_components=params.pca, cv=params.cv, classifier=probe.classifier, C=probe.C,
                   standardize=probe.standardize, scoring=probe.scoring, permutations=probe.permutations, seed=probe.seed)

    @property
    def decoder(self) -> Decoder:
        return DECODERS[self.classifier]

    @property
    def is_regression(self) -> bool:
        return self.decoder.regression


def make_estimator(settings: ProbeSettings):
    """The decoder fitted on each fold's principal scores, behind a StandardScaler with probe.standardize."""
    decoder = settings.decoder.make(settings.C)
    return make_pipeline(StandardScaler(), decoder) if settings.standardize else decoder


def score(scoring: str, y_true: np.ndarray, estimator, z_test: np.ndarray) -> float:
    """A fitted decoder's score on held-out principal scores, by scikit-learn scorer name."""
    return float(get_scorer(scoring)(estimator, z_test, y_true))


def targets(table, label: str, settings: ProbeSettings) -> np.ndarray:
    """The decoded column of a stimulus table: integer classes, or numbers for a regression decoder.

    Raises DnnprobeError naming the table, row and value that is not a class label.
    """
    from dnnprobe.stimuli import class_label  # the table's own module (a stage that reads a table imports it)

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
    from dnnprobe.stimuli import class_label  # how the table's labels are read: 1 and 1.0 are class 1

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
    layer: str | None = None, table: str | None = None, names: dict[int, str] | None = None,
) -> None:
    """Reject settings that cannot give a meaningful cross-validation, before any work.

    `layer`, `table` and `names` (class -> its name, see :func:`class_names`) only make the messages
    name the layer, the stimulus table and the class at fault.
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
        if counts.min() < settings.cv:
            small = classes[np.argmin(counts)]
            raise DnnprobeError(
                f"{column}: class {named(small)} has {counts.min()} stimuli, fewer than cv={settings.cv} folds "
                f"(set cv <= {counts.min()}, or add stimuli to that class)"
            )
        if settings.scoring == "roc_auc" and len(classes) != 2:
            raise DnnprobeError(f"probe.scoring=roc_auc needs two classes; {column} has {len(classes)}")
    smallest_train = n - int(np.ceil(n / settings.cv))
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
