"""The decoders: which scikit-learn estimator decodes the label from a fold's principal scores, how it
is scored, and how a probe.label entry names its own (the targets and the checks of the data are
:mod:`dnnprobe.probe.targets`).

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


def make_estimator(settings: ProbeSettings, C: float | None = None):
    """The decoder fitted on each fold's principal scores, behind a StandardScaler with probe.standardize.
    `C` overrides ``settings.C`` (a candidate of the inner search)."""
    decoder = settings.decoder.make(settings.C if C is None else C)
    return make_pipeline(StandardScaler(), decoder) if settings.standardize else decoder


def score(scoring: str, y_true: np.ndarray, estimator, z_test: np.ndarray) -> float:
    """A fitted decoder's score on held-out principal scores, by scikit-learn scorer name."""
    return float(get_scorer(scoring)(estimator, z_test, y_true))
