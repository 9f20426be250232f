"""Probes refit on all stimuli (probe.save_models): each layer's PCA + decoder as a plain .npz, and how to
apply a saved one to activations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.probe.covpca import CovariancePCASolver
from dnnprobe.probe.decoders import ProbeSettings, make_estimator
from dnnprobe.probe.foldpca import GramPCASolver


def save_refit_models(grams, activations_path, y: np.ndarray, settings: ProbeSettings, folder: Path,
                      C_per_layer: dict[str, float] | None = None) -> list[str]:
    """Refit PCA + decoder on all stimuli per layer and save each as ``<layer>.npz`` (`C_per_layer`: a C
    for some layers in place of ``settings.C``).

    The PCA components in unit space need the activations themselves: ``V = Xc^T U / sqrt(lambda)``
    is accumulated one column block at a time, so memory stays bounded.
    """
    saved = []
    everyone = np.arange(len(y))
    with ActivationFile(activations_path) as activations:
        for layer in grams.layers:
            if grams.route(layer) == "covariance":  # components directly in unit space
                solver = CovariancePCASolver(grams.moments(layer), settings.n_components)
                pca = solver.fit_all()
                scores = solver.project([pca], activations.row_blocks(layer))[0]
                decoder = make_estimator(settings, (C_per_layer or {}).get(layer)).fit(scores, y)
                means = [solver.shift + pca.shifted_mean]
                components = [pca.components]
                variances = pca.values
            else:
                pca = GramPCASolver(grams.gram_rows(layer), settings.n_components).fit(everyone)
                decoder = make_estimator(settings, (C_per_layer or {}).get(layer)).fit(pca.train_scores(), y)
                variances = pca.scale ** 2
                means, components = [], []
                for block in activations.column_blocks(layer):
                    mean = block.mean(axis=0, dtype=np.float64)
                    means.append(mean.astype(np.float32))
                    part = np.zeros((block.shape[1], settings.n_components), dtype=np.float32)
                    part[:, pca.usable] = ((block - mean).T @ pca.vectors[:, pca.usable]) / pca.scale[pca.usable]
                    components.append(part)
            final = decoder[-1] if hasattr(decoder, "steps") else decoder
            scaler = decoder[0] if hasattr(decoder, "steps") else None
            np.savez(
                folder / f"{layer}.npz",
                layer=np.str_(layer),
                classifier=np.str_(settings.classifier),
                mean=np.concatenate(means).astype(np.float32),
                components=np.concatenate(components).T.astype(np.float32),
                explained_variance=variances / (len(y) - 1),
                scaler_mean=scaler.mean_ if scaler is not None else np.zeros(settings.n_components),
                scaler_scale=scaler.scale_ if scaler is not None else np.ones(settings.n_components),
                coef=np.atleast_2d(final.coef_),
                intercept=np.atleast_1d(final.intercept_),
                classes=getattr(final, "classes_", np.array([])),
            )
            saved.append(layer)
    return saved


def load_refit_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A saved probe as plain arrays (no pickle: safe to open from anywhere)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def refit_decision_function(model: dict[str, np.ndarray], activations: np.ndarray) -> np.ndarray:
    """Decision values of a saved probe for (n, units) activations (flattened DNNBrain rows)."""
    z = (activations - model["mean"]) @ model["components"].T
    z = (z - model["scaler_mean"]) / model["scaler_scale"]
    decision = z @ model["coef"].T + model["intercept"]
    return decision[:, 0] if decision.shape[1] == 1 else decision


def save_probe_models(params, attributes, results, grams, activations_path, folder: Path) -> None:
    """models/probes: each layer's PCA + decoder refit on all stimuli, as .npz (loads without pickle); with
    several attributes one subfolder per attribute. A searched C is refit with the C chosen in most folds
    (the smaller of equals)."""
    saved = []
    if params.probe.save_models:
        for target in attributes:
            where = folder / target.name if len(attributes) > 1 else folder
            where.mkdir(parents=True, exist_ok=True)
            chosen = {layer: result.C for layer, result in results[target.name].items() if result.C is not None}
            saved = save_refit_models(grams, activations_path, target.y, target.settings, where,
                                      C_per_layer={layer: most_chosen(C) for layer, C in chosen.items()})
    index = {"save_models": params.probe.save_models, "layers": saved,
             "format": "numpy .npz, np.load(path, allow_pickle=False); see dnnprobe.probe.refit.load_refit_model"}
    if len(attributes) > 1:
        index["attributes"] = [target.name for target in attributes]
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")


def most_chosen(values: np.ndarray) -> float:
    """The value chosen in most folds; the smallest of equally frequent ones (stronger regularisation)."""
    candidates, counts = np.unique(values, return_counts=True)
    return float(candidates[np.argmax(counts)])
