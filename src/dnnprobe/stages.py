"""The pipeline stages as plain functions: what each DVC stage reads, computes and writes.

``dnnprobe <stage>`` (:mod:`dnnprobe.cli`) calls these with paths from dvc.yaml and parameters
from params.yaml; tests call them directly. Every stage validates its inputs before it starts the
expensive part, and writes each output atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from dnnprobe.atomic import atomic_output
from dnnprobe.errors import DnnprobeError
from dnnprobe.params import Params
from dnnprobe.stimuli import IMAGE_EXTENSIONS, StimulusTable, file_sha256, table_from_classes


# ---- stimuli ------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same disk: no second copy of every image
    except OSError:
        shutil.copyfile(source, target)


def _import_table(table_path: str, images: Path) -> StimulusTable:
    """stimuli.source=stimcsv: a user's .stim.csv; its images are linked into the output folder."""
    if not table_path:
        raise DnnprobeError("params.yaml: stimuli.table must name a .stim.csv when stimuli.source is stimcsv")
    table = StimulusTable.read(table_path)
    if "label" in table.columns:  # DNNBrain's reserved class column: say now, not after extraction
        table.integer_labels("label")
    table.check_images_exist()
    for stim_id, source in zip(table.stim_ids, table.image_paths()):
        _link_or_copy(source, images / stim_id)
    return table


def _import_folder(folder: str, images: Path) -> StimulusTable:
    """stimuli.source=folder: one subfolder per class; label = index of the sorted class names."""
    root = Path(folder)
    if not folder or not root.is_dir():
        raise DnnprobeError(f"params.yaml: stimuli.folder {folder!r} is not a folder of class subfolders")
    stim_ids, conditions = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if "," in class_dir.name:
            raise DnnprobeError(f"{class_dir}: class folder names may not contain commas (the .stim.csv is comma-separated)")
        for image in sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            stim_id = image.relative_to(root).as_posix()
            _link_or_copy(image, images / stim_id)
            stim_ids.append(stim_id)
            conditions.append(class_dir.name)
    if not stim_ids:
        raise DnnprobeError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders")
    return table_from_classes(stim_ids, conditions, image_folder="", title=f"images of {root.name}")


def make_stimuli(params: Params, table_path: str | os.PathLike, image_folder: str | os.PathLike) -> StimulusTable:
    """Write the stimulus table and its image folder (the contract every later stage reads)."""
    from dnnprobe.demo import write_demo_set

    table_path, image_folder = Path(table_path), Path(image_folder)
    source = params.stimuli.source
    with atomic_output(image_folder, directory=True) as images:
        if source == "demo":
            demo = params.stimuli.demo
            table = write_demo_set(images, demo.n_per_class, demo.image_size, demo.seed)
        elif source == "stimcsv":
            table = _import_table(params.stimuli.table, images)
        elif source == "folder":
            table = _import_folder(params.stimuli.folder, images)
        else:
            from dnnprobe.bold5000 import fetch_bold5000

            table = fetch_bold5000(params.stimuli.bold5000, images)
        # path= is relative to the table's folder, so the pair can be shared (see stimuli.py).
        table.header = {
            "type": "image",
            "path": os.path.relpath(image_folder.resolve(), table_path.parent.resolve()),
            **{k: v for k, v in table.header.items() if k not in ("type", "path")},
            "source": source,
        }
        table.location = table_path
        table.write(table_path)
    return table


# ---- network and extraction ---------------------------------------------------------------


def make_network(params: Params, out_path: str | os.PathLike):
    """Build the network with the requested weights and save them under models/."""
    from dnnprobe.network import build_network, save_network

    model, source = build_network(params.model.arch, params.model.weights, params.model.seed)
    return save_network(model, out_path, params.model.arch, params.model.weights, params.model.seed, source)


def extract(
    params: Params, table_path: str | os.PathLike, network_path: str | os.PathLike, out_path: str | os.PathLike,
    progress: bool = True,
):
    """One forward pass over the stimuli; every layer in extract.layers to one .act.h5."""
    from dnnprobe.extraction import extract_activations
    from dnnprobe.network import load_network, resolve_layers

    table = StimulusTable.read(table_path)
    model, info = load_network(network_path, params.model.arch)
    module_paths = resolve_layers(model, params.model.arch, params.extract.layers)
    settings = params.extract
    attrs = {
        **info.as_attrs(),
        "stimuli_sha256": file_sha256(table_path),
        "stimuli_file": Path(table_path).name,
        "stimuli_rows": len(table),
    }
    return extract_activations(
        table, model, module_paths, out_path,
        batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype,
        compression=settings.compression, num_workers=settings.num_workers, file_attrs=attrs, progress=progress,
    )


def gram(activations_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True) -> list[str]:
    from dnnprobe.gram import write_gram_file

    return write_gram_file(activations_path, out_path, progress=progress)


# ---- probe --------------------------------------------------------------------------------


def probe_targets(table: StimulusTable, params: Params) -> np.ndarray:
    if params.probe.classifier == "ridge_regression":
        return table.numeric_column(params.probe.label)
    values = table.column(params.probe.label)
    try:
        return table.integer_labels(params.probe.label)
    except DnnprobeError:
        numeric = all(_is_number(v) for v in values)
        hint = " (a continuous column: use probe.classifier=ridge_regression and probe.scoring=r2)" if numeric else ""
        row = next(i for i, v in enumerate(values) if not _is_integer(v))
        raise DnnprobeError(
            f"{table.location}: column {params.probe.label!r} is not an integer class label "
            f"(stimulus row {row + 1}, {table.stim_ids[row]}: {values[row]!r}){hint}"
        ) from None


def _is_integer(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def probe(
    params: Params,
    table_path: str | os.PathLike,
    gram_path: str | os.PathLike,
    activations_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    run_info_path: str | os.PathLike,
    models_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Cross-validated decoding of probe.label from every layer; outputs, metrics and an MLflow run."""
    from tqdm import tqdm

    from dnnprobe import stats, tracking
    from dnnprobe.gram import GramFile
    from dnnprobe.probe import ProbeSettings, cross_validate_gram, save_layer_result

    table = StimulusTable.read(table_path)
    y = probe_targets(table, params)
    settings = ProbeSettings(
        n_components=params.pca, cv=params.cv, classifier=params.probe.classifier, C=params.probe.C,
        standardize=params.probe.standardize, scoring=params.probe.scoring,
        permutations=params.probe.permutations, seed=params.probe.seed,
    )
    with GramFile(gram_path) as grams:
        if grams.n_stim != len(table):
            raise DnnprobeError(f"{gram_path}: {grams.n_stim} stimuli, but {table_path} lists {len(table)}")
        _check_activations_match(activations_path, grams, len(table), table_path)
        from dnnprobe.probe import check_targets

        for layer in grams.layers:  # every check before any work
            check_targets(y, settings, grams.n_units(layer), params.probe.label, layer=layer, table=str(table_path))
        provenance = {k: (v.item() if hasattr(v, "item") else v) for k, v in grams.attrs.items()
                      if k.startswith(("network_", "stimuli_"))}
        summary = {
            "arch": provenance.get("network_arch", params.model.arch),
            "weights": provenance.get("network_weights", params.model.weights),
            "weights_sha256": provenance.get("network_sha256", ""),
            "stimulus_set": table.header.get("title", Path(table_path).name),
            "is_demo": table.header.get("source") == "demo",
            "source": table.header.get("source", ""),
            "n_stimuli": len(table), "pca": params.pca, "cv": params.cv, "label": params.probe.label,
            "classifier": params.probe.classifier, "C": params.probe.C, "scoring": params.probe.scoring,
            "standardize": params.probe.standardize, "permutations": params.probe.permutations,
            "layer_order": grams.layers,
        }
        if not settings.is_regression:
            summary["classes"] = [str(c) for c in np.unique(y)]
            names = dict(zip(table.columns.get("label", []), table.columns.get("condition", [])))
            summary["class_names"] = [names.get(c, c) for c in summary["classes"]]
        summary["compare_dnnbrain"] = (summary["arch"], summary["weights"], summary["source"], params.pca, params.cv,
                                       params.probe.classifier, params.probe.scoring) == (
            "alexnet", "imagenet", "bold5000", 100, 10, "logistic", "accuracy")
        run_params = {
            "pca": params.pca, "cv": params.cv, "arch": summary["arch"], "weights": summary["weights"],
            "weights_sha256": summary["weights_sha256"], "seed": provenance.get("network_seed", params.model.seed),
            "classifier": params.probe.classifier, "C": params.probe.C, "label": params.probe.label,
            "scoring": params.probe.scoring, "standardize": params.probe.standardize,
            "permutations": params.probe.permutations, "permutation_seed": params.probe.seed,
            "stimuli_source": summary["source"], "n_stimuli": len(table),
            "stimuli_sha256": file_sha256(table_path), "activations_md5": tracking.file_md5(activations_path),
            "layers": grams.layers,
        }
        run_name = f"{summary['arch']}-{summary['weights']}-pca{params.pca}-cv{params.cv}"
        results = {}
        with tracking.probe_run(params.tracking.experiment, run_name, run_params, params.probe.scoring) as run:
            # Scores, metrics and refit models are renamed into place together, once all are written:
            # a failure anywhere leaves none of them (and the MLflow run FAILED).
            with atomic_output(out_dir, directory=True) as temp_dir, atomic_output(metrics_path) as temp_metrics, \
                    atomic_output(models_dir, directory=True) as temp_models:
                for layer in tqdm(grams.layers, desc="probe", unit="layer", disable=not progress):
                    result = cross_validate_gram(grams.gram(layer), y, settings)
                    results[layer] = result
                    save_layer_result(result, temp_dir / layer)
                    run.log_layer(layer, result.score, result.mean, result.sem, stats.layer_extras(result))
                summary.update(stats.summarise(results, summary["layer_order"], settings))
                summary["chance"], summary["chance_source"] = stats.chance_level(results, y, params.probe.scoring)
                (temp_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                metrics = stats.metrics_json(summary, params.probe.scoring)
                temp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
                _save_probe_models(params, y, settings, grams, activations_path, temp_models)
            import mlflow

            mlflow.log_artifact(str(metrics_path))
            run.write_info(run_info_path)
    return summary


def _check_activations_match(activations_path, grams, n_stim: int, table_path) -> None:
    """The activation file is logged (md5) and read for the refit models: it must be the one the Gram came from."""
    from dnnprobe.actfile import ActivationFile

    with ActivationFile(activations_path) as activations:
        activations.check_rows(n_stim, str(table_path))
        missing = [layer for layer in grams.layers if layer not in activations.layers]
        if missing:
            raise DnnprobeError(
                f"{activations_path}: no layer {missing[0]!r}, which {grams.path} has; rerun the gram stage (dvc repro gram)"
            )


def _save_probe_models(params, y, settings, grams, activations_path, folder: Path) -> None:
    """models/probes: each layer's PCA + decoder refit on all stimuli, as .npz (loads without pickle)."""
    from dnnprobe.probe import save_refit_models

    saved = save_refit_models(grams, activations_path, y, settings, folder) if params.probe.save_models else []
    index = {"save_models": params.probe.save_models, "layers": saved,
             "format": "numpy .npz, np.load(path, allow_pickle=False); see dnnprobe.probe.load_refit_model"}
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")


# ---- report -------------------------------------------------------------------------------


def report(
    params: Params,
    probe_dir: str | os.PathLike,
    run_info_path: str | os.PathLike,
    figures_dir: str | os.PathLike,
    plot_path: str | os.PathLike,
) -> list[Path]:
    """The Conv-vs-ReLU figure, a confusion-matrix figure and the DVC plot table; logged to MLflow."""
    import numpy as np

    from dnnprobe import report as figures
    from dnnprobe import tracking

    probe_dir = Path(probe_dir)
    try:
        summary = json.loads((probe_dir / "summary.json").read_text())
    except FileNotFoundError:
        raise DnnprobeError(f"{probe_dir / 'summary.json'}: missing; run the probe stage first") from None
    with atomic_output(figures_dir, directory=True) as temp:
        paths = figures.save_figure(figures.conv_vs_relu_figure(summary), temp / "conv_vs_relu")
        layer = params.report.confusion_layer or summary["layer_order"][-1]
        if layer not in summary["layer_order"]:
            raise DnnprobeError(
                f"params.yaml: report.confusion_layer {layer!r} was not probed (layers: {', '.join(summary['layer_order'])})"
            )
        conf_path = probe_dir / layer / "conf_m.npy"
        if conf_path.is_file():
            conf_m = np.load(conf_path, allow_pickle=False)
            paths += figures.save_figure(
                figures.confusion_figure(conf_m, summary.get("class_names", []), layer), temp / "confusion")
    with atomic_output(plot_path) as temp_plot:
        figures.write_plot_csv(summary, temp_plot)
    final = [Path(figures_dir) / p.name for p in paths]
    warning = tracking.log_artifacts_to_run(run_info_path, final + [Path(plot_path)], "report")
    if warning:
        print(f"dnnprobe report: warning: {warning}")
    return final
