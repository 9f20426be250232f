"""Probe designs beyond DNNBrain's: grouped folds, several attributes per run, C chosen inside the folds.
Each is checked against scikit-learn doing the same thing directly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import (GridSearchCV, GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold,
                                     cross_val_score, permutation_test_score)
from sklearn.pipeline import make_pipeline

from helpers import low_rank_data, tiny_params
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.probe.crossval import cross_validate_covariance, cross_validate_gram, cross_validate_targets, gram_fold_pcas
from dnnprobe.probe.decoders import ProbeSettings, make_estimator
from dnnprobe.probe.permutation import fold_of_each_stimulus, null_shuffles
from dnnprobe.probe.splits import make_splits
from dnnprobe.probe.targets import Target, folds


def gram_of(X):
    X64 = X.astype(np.float64)
    return X64 @ X64.T


def grouped_task(n_groups: int = 30, size: int = 4, d: int = 60, seed: int = 0, signal: float = 0.6):
    """Stimuli in groups of `size` sharing a class (a concept-level attribute) and a group-specific pattern."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{i:02d}" for i in range(n_groups)], size)
    y = np.repeat(np.arange(n_groups) % 2, size)
    concept = rng.normal(0, 1.0, (n_groups, d))
    X = np.repeat(concept, size, axis=0) + rng.normal(0, 0.7, (n_groups * size, d))
    X[:, :3] += signal * y[:, None]
    order = rng.permutation(len(y))  # groups scattered through the table, as in a real one
    return X[order].astype(np.float32), y[order], groups[order]


# ---- 1. grouped folds ---------------------------------------------------------------------------


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_grouped_folds_never_split_a_group_and_are_sklearns(regression, shuffle):
    X, y, groups = grouped_task(n_groups=25, size=3)
    target = X[:, 0].astype(np.float64) if regression else y
    splits = make_splits(target, 5, regression, groups, shuffle=shuffle, seed=3)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(len(y)))
    kind = GroupKFold if regression else StratifiedGroupKFold
    reference = kind(5, shuffle=shuffle, random_state=3 if shuffle else None).split(X, target, groups)
    for (train, test), (ref_train, ref_test) in zip(splits, reference):
        np.testing.assert_array_equal(test, np.sort(ref_test))
        np.testing.assert_array_equal(train, np.sort(ref_train))


def test_without_groups_the_folds_are_dnnbrains():
    _, y = low_rank_data(60, 10)
    for (train, test), (ref_train, ref_test) in zip(folds(y, ProbeSettings(cv=5)), StratifiedKFold(5).split(y, y)):
        np.testing.assert_array_equal(test, ref_test)
    shuffled = folds(y, ProbeSettings(cv=5, shuffle=True, seed=7))
    for (_, test), (_, ref_test) in zip(shuffled, StratifiedKFold(5, shuffle=True, random_state=7).split(y, y)):
        np.testing.assert_array_equal(test, np.sort(ref_test))


def test_grouped_fold_accuracies_match_sklearn_cross_val_score():
    X, y, groups = grouped_task()
    settings = ProbeSettings(n_components=8, cv=5)
    ours = cross_validate_gram(gram_of(X), y, settings, groups=groups).score
    pipeline = make_pipeline(PCA(8, svd_solver="full"), LogisticRegression())
    reference = cross_val_score(pipeline, X.astype(np.float64), y, groups=groups, cv=StratifiedGroupKFold(5))
    test_sizes = np.array([len(test) for _, test in folds(y, settings, groups)])
    assert (np.abs(ours - reference) * test_sizes).max() <= 1.0 + 1e-9


def test_grouped_null_with_one_stimulus_per_group_is_permutation_test_score():
    """Exchanging whole groups within folds, with groups of one, is scikit-learn's shuffle within folds."""
    X, y = low_rank_data(48, 20, seed=2, signal=0.4)
    groups = np.array([f"s{i}" for i in range(len(y))])
    settings = ProbeSettings(n_components=4, cv=4, permutations=15, seed=5, classifier="ridge")
    ours = cross_validate_gram(gram_of(X), y, settings, groups=groups)
    splits = folds(y, settings, groups)
    pipeline = make_pipeline(PCA(4, svd_solver="full"), make_estimator(settings))
    observed, null, p_value = permutation_test_score(pipeline, X.astype(np.float64), y, cv=splits,
                                                     groups=fold_of_each_stimulus(splits, len(y)),
                                                     n_permutations=15, random_state=5)
    assert ours.mean == pytest.approx(observed, abs=1e-12)
    np.testing.assert_allclose(ours.null, null, atol=1e-12)
    assert ours.p_value == pytest.approx(p_value)


def test_grouped_null_exchanges_whole_groups_and_scores_as_sklearn():
    """Each shuffle gives every group the labels of another group of its size in its test fold; the null is
    scikit-learn's score of the same pipeline on the same folds for each shuffle, and p its formula."""
    X, y, groups = grouped_task(n_groups=24, size=3)
    groups[groups == "g00"] = "g02"  # one group of 6 (one class): it has no partner and keeps its labels
    settings = ProbeSettings(n_components=5, cv=4, permutations=6, seed=1, classifier="ridge")
    splits = folds(y, settings, groups)
    shuffles = null_shuffles(y, splits, settings, groups)
    fold_of = fold_of_each_stimulus(splits, len(y))
    moved = 0
    for shuffled in shuffles:
        assert all(np.array_equal(np.bincount(shuffled[test], minlength=2), np.bincount(y[test], minlength=2))
                   for _, test in splits)
        for group in np.unique(groups):
            members = np.flatnonzero(groups == group)
            # a concept-level attribute stays one per group: a permuted labelling a real one could be
            assert len(set(shuffled[members])) == 1
            donors = [g for g in np.unique(groups) if np.array_equal(y[groups == g], shuffled[members])
                      and fold_of[groups == g][0] == fold_of[members][0] and (groups == g).sum() == len(members)]
            assert donors
        np.testing.assert_array_equal(shuffled[groups == "g02"], y[groups == "g02"])
        moved += not np.array_equal(shuffled, y)
    assert moved == len(shuffles)
    ours = cross_validate_gram(gram_of(X), y, settings, groups=groups)
    pipeline = make_pipeline(PCA(5, svd_solver="full"), make_estimator(settings))
    reference = [cross_val_score(pipeline, X.astype(np.float64), shuffled, cv=splits).mean() for shuffled in shuffles]
    np.testing.assert_allclose(ours.null, reference, atol=1e-12)
    assert ours.p_value == pytest.approx((np.sum(np.array(reference) >= ours.mean) + 1) / 7)


def test_grouped_null_is_wider_than_a_stimulus_shuffle_on_concept_level_labels():
    """Why groups are exchanged whole: a concept-level attribute the activations do not carry (labels
    drawn per group at random) still ties images of one concept together, and the within-fold stimulus
    shuffle's null is narrower than the grouped one."""
    X, _, groups = grouped_task(n_groups=24, size=4, signal=0.0, seed=4)
    codes = np.unique(groups, return_inverse=True)[1]
    y = (np.random.default_rng(9).permutation(24) % 2)[codes]
    settings = ProbeSettings(n_components=6, cv=4, permutations=60, seed=0)
    grouped = cross_validate_gram(gram_of(X), y, settings, groups=groups).null
    stimulus = cross_validate_gram(gram_of(X), y, settings).null
    assert np.std(grouped) > np.std(stimulus)


def test_check_stage_refuses_bad_groups_in_seconds(tiny_stimuli, tmp_path):
    from dnnprobe.stages.check import check

    table = table_with_columns(tiny_stimuli, tmp_path, group=lambda i, label: "animal" if label == "1" else f"g{i}")
    with pytest.raises(DnnprobeError, match="every stimulus of class 1 is in one group, 'animal'"):
        check(tiny_params(**{"probe.groups": "group"}), table, tmp_path / "images.sha256")


# ---- 2. several attributes ------------------------------------------------------------------------


def test_several_targets_give_each_its_single_target_result():
    X, y, groups = grouped_task(n_groups=30, size=3)
    rng = np.random.default_rng(1)
    other = (X[:, 5] > np.median(X[:, 5])).astype(int)
    size = X[:, :2].sum(axis=1).astype(np.float64) + rng.normal(0, 1, len(y))
    base = ProbeSettings(n_components=6, cv=3, permutations=5)
    regression = replace(base, classifier="ridge_regression", scoring="r2")
    targets = [Target("a", y, base), Target("b", other, replace(base, scoring="balanced_accuracy")),
               Target("size", size, regression)]
    for grouped in (None, groups):
        together = cross_validate_targets(gram_fold_pcas(gram_of(X), 6), targets, grouped)
        for target in targets:
            alone = cross_validate_gram(gram_of(X), target.y, target.settings, groups=grouped)
            np.testing.assert_array_equal(together[target.name].score, alone.score)
            np.testing.assert_array_equal(together[target.name].null, alone.null)


def test_targets_that_share_folds_share_their_pca(monkeypatch):
    import dnnprobe.probe.crossval as probe_module

    X, y = low_rank_data(60, 40)
    built = []
    original = probe_module.GramPCASolver
    monkeypatch.setattr(probe_module, "GramPCASolver", lambda *a, **k: built.append(1) or original(*a, **k))
    regression = ProbeSettings(n_components=4, cv=3, classifier="ridge_regression", scoring="r2")
    targets = [Target(name, X[:, i].astype(np.float64), regression) for i, name in enumerate("abcde")]
    cross_validate_targets(gram_fold_pcas(gram_of(X), 4), targets)
    assert len(built) == 1  # KFold ignores the target: one set of fold PCAs for all five


# ---- 3. C chosen inside the folds -----------------------------------------------------------------


@pytest.mark.parametrize("grouped", [False, True])
def test_nested_C_matches_gridsearchcv_per_fold(grouped):
    X, y, groups = grouped_task(n_groups=40, size=3, d=50, signal=0.35)
    groups = groups if grouped else None
    grid = (0.001, 0.1, 10.0)
    settings = ProbeSettings(n_components=6, cv=3, C_grid=grid)
    ours = cross_validate_gram(gram_of(X), y, settings, groups=groups)
    inner_cv = StratifiedGroupKFold(5) if grouped else StratifiedKFold(5)
    for fold, (train, test) in enumerate(folds(y, settings, groups)):
        search = GridSearchCV(make_pipeline(PCA(6, svd_solver="full"), LogisticRegression()),
                              {"logisticregression__C": list(grid)}, cv=inner_cv)
        search.fit(X[train].astype(np.float64), y[train], groups=None if groups is None else groups[train])
        assert ours.C[fold] == search.best_params_["logisticregression__C"]
        reference = search.score(X[test].astype(np.float64), y[test])
        assert abs(ours.score[fold] - reference) * len(test) <= 1.0 + 1e-9
    assert ours.C.shape == (3,)


def test_nested_C_for_a_continuous_target_and_the_covariance_route():
    """Ridge's alpha = 1 / C; the d x d route refits the inner PCAs from the moments and held-out rows."""
    from dnnprobe.gram.moments import LayerMoments

    X, _ = low_rank_data(90, 30, seed=4)
    target = X[:, :3].sum(axis=1).astype(np.float64) + np.random.default_rng(0).normal(0, 2.0, 90)
    grid = (0.01, 1.0, 100.0)
    settings = ProbeSettings(n_components=5, cv=3, classifier="ridge_regression", scoring="r2", C_grid=grid)
    shift = X[0].astype(np.float32)
    centred = X.astype(np.float64) - shift
    moments = LayerMoments(centred.T @ centred, centred.sum(axis=0), shift, len(X))
    ours = cross_validate_covariance(moments, lambda rows: X[rows], lambda: iter([(0, X)]), target, settings)
    via_gram = cross_validate_gram(gram_of(X), target, settings)
    np.testing.assert_array_equal(ours.C, via_gram.C)
    for fold, (train, test) in enumerate(KFold(3).split(X)):
        search = GridSearchCV(make_pipeline(PCA(5, svd_solver="full"), Ridge()),
                              {"ridge__alpha": [1.0 / C for C in grid]}, cv=KFold(5), scoring="r2")
        search.fit(X[train].astype(np.float64), target[train])
        assert ours.C[fold] == pytest.approx(1.0 / search.best_params_["ridge__alpha"])
        assert ours.score[fold] == pytest.approx(search.score(X[test].astype(np.float64), target[test]), abs=1e-6)


def test_nested_C_null_chooses_C_again_for_every_shuffle():
    X, y = low_rank_data(60, 20, seed=6, signal=0.4)
    settings = ProbeSettings(n_components=4, cv=3, classifier="ridge", C_grid=(0.01, 1.0), permutations=4, seed=2)
    ours = cross_validate_gram(gram_of(X), y, settings)
    splits = folds(y, settings)
    shuffles = null_shuffles(y, splits, settings)
    reference = []
    for shuffled in shuffles:
        scores = []
        for fold, (train, test) in enumerate(splits):
            inner = [(train[a], train[b]) for a, b in StratifiedKFold(5).split(train, y[train])]  # observed labels' folds
            search = GridSearchCV(make_pipeline(PCA(4, svd_solver="full"), make_estimator(settings)),
                                  {"ridgeclassifier__alpha": [100.0, 1.0]},
                                  cv=[(np.searchsorted(train, a), np.searchsorted(train, b)) for a, b in inner])
            search.fit(X[train].astype(np.float64), shuffled[train])
            scores.append(search.score(X[test].astype(np.float64), shuffled[test]))
        reference.append(np.mean(scores))
    np.testing.assert_allclose(ours.null, reference, atol=1 / 20 + 1e-9)


# ---- the probe stage: several attributes, groups, C auto -------------------------------------------


def table_with_columns(tiny_stimuli, folder, **columns):
    """The tiny demo table with more columns (``name=f(row, label)``), its images where they are."""
    lines = tiny_stimuli.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("data="))
    header = [f"path={tiny_stimuli.parent / 'images'}" if line.startswith("path=") else line for line in lines[:start]]
    rows = lines[start + 1:]
    out = header + [lines[start] + "".join(f",{name}" for name in columns)]
    for i, row in enumerate(rows):
        label = row.split(",")[1]
        out.append(row + "".join(f",{make(i, label)}" for make in columns.values()))
    path = folder / "table.stim.csv"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.fixture(scope="module")
def four_layer_gram(tmp_path_factory, tiny_activations):
    """The tiny set's Gram file of two depths only: stage tests of several designs stay fast."""
    from dnnprobe.gram.writer import write_gram_file

    path = tmp_path_factory.mktemp("gram4") / "gram.h5"
    write_gram_file(tiny_activations, path, layers=["conv5", "conv5_relu", "fc2", "fc2_relu"], progress=False)
    return path


def test_probe_stage_decodes_several_attributes_as_single_runs_do(tiny_stimuli, four_layer_gram, tiny_activations,
                                                                  tmp_path):
    from dnnprobe.stages.probe import probe
    from dnnprobe.stages.report import report

    table = table_with_columns(tiny_stimuli, tmp_path, group=lambda i, label: f"g{i // 2}",
                               odd=lambda i, label: int(i % 3 == 0), size=lambda i, label: f"{(i * 7) % 11 / 3:.3f}")

    def run(name, label):
        params = tiny_params(**{"probe.label": label, "probe.groups": "group", "probe.C": "[0.1, 1]",
                                "probe.permutations": 3})
        folder = tmp_path / name
        probe(params, table, four_layer_gram, tiny_activations, folder / "probe", folder / "metrics.json",
              folder / "models", progress=False)
        return params, folder

    params, together = run("together", "[label, odd, 'size:ridge_regression']")
    metrics = json.loads((together / "metrics.json").read_text())
    assert list(metrics)[:2] == ["label/conv5", "label/conv5_relu"] and len(metrics) == 3 * 4
    summary = json.loads((together / "probe" / "summary.json").read_text())
    assert summary["attributes"]["size"]["scoring"] == "r2" and summary["attributes"]["odd"]["scoring"] == "accuracy"
    assert len(summary["attributes"]["odd"]["layers"]["fc2"]["C"]) == 3  # chosen per fold
    for name, label in (("odd", "odd"), ("size", "size:ridge_regression")):
        _, alone = run(name, label)
        single = json.loads((alone / "metrics.json").read_text())
        assert single == {layer.split("/", 1)[1]: value for layer, value in metrics.items() if layer.startswith(name + "/")}
        for layer in ("conv5", "fc2_relu"):
            for kind in ("score.npy", "C.npy", "null.npy"):
                np.testing.assert_array_equal(np.load(together / "probe" / name / layer / kind),
                                              np.load(alone / "probe" / layer / kind))
    paths = report(params, together / "probe", together / "figures", together / "plot.csv")
    assert {p.name for p in paths} >= {"conv_vs_relu_label.png", "conv_vs_relu_odd.png", "conv_vs_relu_size.png",
                                       "confusion_label.png"}
    import csv

    rows = list(csv.DictReader((together / "plot.csv").read_text().splitlines()))
    assert len(rows) == 3 * 4 and rows[0]["scoring"] == "accuracy (label)"


def test_several_labels_are_refused_when_listed_twice_or_unloggable(tiny_stimuli, tmp_path):
    from dnnprobe.probe.targets import decoded_targets
    from dnnprobe.stimuli.table import StimulusTable

    table = StimulusTable.read(table_with_columns(tiny_stimuli, tmp_path, **{"odd+": lambda i, label: i % 2}))
    with pytest.raises(DnnprobeError, match="probe.label lists a column twice"):
        decoded_targets(tiny_params(**{"probe.label": "[label, 'label:ridge']"}), table)
    with pytest.raises(DnnprobeError, match="probe.label column 'odd\\+' cannot name an MLflow metric"):
        decoded_targets(tiny_params(**{"probe.label": "[label, odd+]"}), table)
    with pytest.raises(DnnprobeError, match="decoder 'svm' must be one of"):
        decoded_targets(tiny_params(**{"probe.label": "[label, 'other:svm']"}), table)
