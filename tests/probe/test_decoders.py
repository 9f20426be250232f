"""The decoders: the registry, scorers by scikit-learn name, and the settings they accept."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.probe.decoders import DECODERS, ProbeSettings, make_estimator, score


def test_every_decoder_is_one_registry_entry_with_its_kind():
    assert set(DECODERS) == {"logistic", "linear_svm", "ridge", "lda", "ridge_regression"}
    assert [name for name, d in DECODERS.items() if d.regression] == ["ridge_regression"]
    assert [name for name, d in DECODERS.items() if d.batched_null] == ["logistic"]
    assert make_estimator(ProbeSettings(C=0.5)).get_params()["C"] == 0.5
    assert make_estimator(ProbeSettings(classifier="ridge", C=0.5)).get_params()["alpha"] == 2.0
    assert [step for step, _ in make_estimator(ProbeSettings(standardize=True)).steps] == \
        ["standardscaler", "logisticregression"]


def test_scores_are_scikit_learns_by_name():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    z[:, 0] += y
    fitted = LogisticRegression().fit(z, y)
    assert score("accuracy", y, fitted, z) == accuracy_score(y, fitted.predict(z))
    assert score("roc_auc", y, fitted, z) == roc_auc_score(y, fitted.decision_function(z))


@pytest.mark.parametrize("field, value, message", [
    ("classifier", "forest", "^params.yaml: probe.classifier must be one of logistic, linear_svm"),
    ("scoring", "f1", "^params.yaml: probe.scoring must be one of accuracy"),
])
def test_unknown_decoder_or_scoring_is_refused(field, value, message):
    with pytest.raises(DnnprobeError, match=message):
        ProbeSettings(**{field: value})
