"""Probes refit on all stimuli (probe.save_models): a saved probe predicts as scikit-learn's pipeline."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from helpers import low_rank_data
from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.refit import load_refit_model, refit_decision_function, save_refit_models


def test_refit_model_predicts_like_sklearn_pipeline_fit_on_all(tmp_path):
    X, y = low_rank_data(50, 60, seed=13)
    acts = tmp_path / "a.act.h5"
    with ActivationWriter(acts, 50, {"layer": (15, 2, 2)}, rows_per_chunk=16) as writer:
        writer.write({"layer": X})
    write_gram_file(acts, tmp_path / "g.h5", progress=False)
    with GramFile(tmp_path / "g.h5") as grams:
        assert save_refit_models(grams, acts, y, ProbeSettings(n_components=6, cv=3), tmp_path) == ["layer"]
    model = load_refit_model(tmp_path / "layer.npz")
    ours = refit_decision_function(model, X.astype(np.float64))
    reference = make_pipeline(PCA(6, svd_solver="full"), LogisticRegression()).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(ours, reference.decision_function(X.astype(np.float64)), rtol=1e-4, atol=1e-4)
