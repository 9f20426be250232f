"""The pipeline stages as plain functions: what each DVC stage reads, computes and writes.

``dnnprobe <stage>`` (:mod:`dnnprobe.cli`) calls these with paths from dvc.yaml and parameters
from params.yaml; tests call them directly. Every stage validates its inputs before it starts the
expensive part, and writes each output atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from dnnprobe.atomic import atomic_output, claim
from dnnprobe.errors import DnnprobeError, missing_file_hint
from dnnprobe.params import Params
from dnnprobe.stimuli import (
    IMAGE_EXTENSIONS, ImageList, StimulusTable, check_image, file_sha256, image_checksums, is_stimulus_file,
    table_from_classes, text_sha256,
)


# ---- stimuli ------------------------------------------------------------------------------


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies inside `folder` (also resolved)."""
    return _resolved(path).is_relative_to(_resolved(folder))


def _copy_image(source: Path, target: Path) -> None:
    """Copy an image's bytes into the stage's output; never link the user's file.

    With DVC's hardlink cache (.dvc/config) an output file becomes a read-only object of DVC's cache:
    a hard link to the user's original would make the original that object.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def user_folder(params: Params) -> Path:
    """stimuli.folder: the only place the stimcsv and folder sources read from (DVC watches it)."""
    folder = Path(params.stimuli.folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "not found"
        raise DnnprobeError(f"params.yaml: stimuli.folder {folder} is {what}{missing_file_hint()}")
    return folder


def _import_table(params: Params, images: Path) -> StimulusTable:
    """stimuli.source=stimcsv: a user's .stim.csv inside stimuli.folder; its images are copied.

    Every image must resolve, links included, inside the table's path= folder, and that folder inside
    stimuli.folder: what is read is exactly what DVC watches, and a link cannot pull in a file from
    elsewhere (a key, say) that DVC would then cache and push.
    """
    folder = user_folder(params)
    if not params.stimuli.table:
        raise DnnprobeError("params.yaml: stimuli.table must name a .stim.csv in stimuli.folder when stimuli.source is stimcsv")
    table_path = folder / params.stimuli.table
    if not _inside(table_path, folder):
        raise DnnprobeError(
            f"params.yaml: stimuli.table {table_path} is outside stimuli.folder {folder}, the folder DVC watches; "
            "move the table into it, or set stimuli.folder to a folder that holds the table and its images")
    table = StimulusTable.read(table_path)
    if "label" in table.columns:  # DNNBrain's reserved class column: say now, not after extraction
        table.integer_labels("label")
    image_root = table.image_folder
    if not image_root.is_dir():  # often a DNNBrain table made on another machine (path=/nfs/...)
        raise DnnprobeError(
            f"{table_path}: path={table.header['path']} is not a folder; set path= to the folder of its images, "
            "inside stimuli.folder (a relative path= is read from the table's folder)")
    if not _inside(image_root, folder):
        raise DnnprobeError(
            f"{table_path}: path={table.header['path']} ({_resolved(image_root)}) is outside stimuli.folder {folder}, "
            "the folder DVC watches; put the images inside it and make path= point there")
    table.check_images_exist()
    for row, (stim_id, source) in enumerate(zip(table.stim_ids, table.image_paths()), start=1):
        if not _inside(source, image_root):
            raise DnnprobeError(
                f"{table_path}, stimulus row {row}: {stim_id} is a link to {_resolved(source)}, outside the "
                f"path= folder {image_root}; links out of the stimulus folder are not followed")
        try:
            check_image(source)
        except DnnprobeError as exc:
            raise DnnprobeError(f"{table_path}, stimulus row {row}: {exc}") from None
        _copy_image(source, images / stim_id)
    return table


def _import_folder(params: Params, images: Path) -> StimulusTable:
    """stimuli.source=folder: one subfolder per class; label = index of the sorted class names.

    Hidden files (``.DS_Store``, macOS ``._*`` files) and files that are not images are skipped, and
    counted; links to folders, and links to files outside stimuli.folder, are refused.
    """
    root = user_folder(params)
    found: list[tuple[Path, str]] = []  # (image, class name)
    skipped: list[str] = []
    for class_dir in sorted(root.iterdir()):
        if class_dir.is_symlink() and class_dir.is_dir():
            raise DnnprobeError(f"{class_dir}: is a link to a folder; links are not followed "
                                "(put the images themselves under stimuli.folder)")
        if class_dir.name.startswith(".") or not class_dir.is_dir():
            skipped.append(class_dir.name)
            continue
        if "," in class_dir.name:
            raise DnnprobeError(f"{class_dir}: class folder names may not contain commas (the .stim.csv is comma-separated)")
        for folder, subfolders, files in os.walk(class_dir):
            for name in subfolders:
                if (Path(folder) / name).is_symlink():
                    raise DnnprobeError(f"{Path(folder) / name}: is a link to a folder; links are not followed "
                                        "(put the images themselves under stimuli.folder)")
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in files:
                path = Path(folder) / name
                if not is_stimulus_file(name):
                    skipped.append(path.relative_to(root).as_posix())
                elif not _inside(path, root):
                    raise DnnprobeError(f"{path}: is a link to {_resolved(path)}, outside stimuli.folder {root}; "
                                        "links out of the stimulus folder are not followed")
                else:
                    found.append((path, class_dir.name))
    if not found:
        raise DnnprobeError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders")
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"stimuli: skipped {len(skipped)} entries of {root} that are hidden or not images: {shown}",
              file=sys.stderr)
    stim_ids, conditions = [], []
    for path, condition in sorted(found):
        check_image(path)
        stim_id = path.relative_to(root).as_posix()
        _copy_image(path, images / stim_id)
        stim_ids.append(stim_id)
        conditions.append(condition)
    return table_from_classes(stim_ids, conditions, image_folder="", title=f"images of {root.name}")


def make_stimuli(params: Params, table_path: str | os.PathLike, image_folder: str | os.PathLike) -> StimulusTable:
    """Write the stimulus table and its image folder (the contract every later stage reads).

    The table records ``images_sha256=``, the identity of its images (:func:`image_checksums`), so that
    later stages can tell whether files were made from these stimuli. The user's files are only read.
    """
    from dnnprobe.demo import write_demo_set

    table_path, image_folder = Path(table_path), Path(image_folder)
    source = params.stimuli.source
    with claim(table_path, image_folder), atomic_output(image_folder, directory=True) as images:
        if source == "demo":
            demo = params.stimuli.demo
            table = write_demo_set(images, demo.n_per_class, demo.image_size, demo.seed)
        elif source == "stimcsv":
            table = _import_table(params, images)
        elif source == "folder":
            table = _import_folder(params, images)
        else:
            from dnnprobe.bold5000 import fetch_bold5000

            table = fetch_bold5000(params.stimuli.bold5000, images)
        # path= is relative to the table's folder, so the pair can be shared (see stimuli.py).
        table.header = {
            "type": "image",
            "path": os.path.relpath(image_folder.resolve(), table_path.parent.resolve()),
            **{k: v for k, v in table.header.items() if k not in ("type", "path", "images_sha256")},
            "source": source,
            "images_sha256": text_sha256(image_checksums(images, table.stim_ids)),
        }
        table.location = table_path
        table.write(table_path)
    return table


# ---- check: the table against the probe's settings, before any expensive stage ---------------


def check(params: Params, table_path: str | os.PathLike, image_list_path: str | os.PathLike) -> ImageList:
    """Check that the probe can run on this table with these settings; write the image list.

    Everything the table and params.yaml reveal is checked here, before extraction and the Gram
    matrices (minutes to hours): the label column, its classes against ``cv``, ``pca`` against the
    smallest training fold, the layer names MLflow must accept. The image list written
    (``data/images.sha256``: each image's sha256 in table order) is what extraction reads: it depends
    on the images and their order, not on the labels, so editing labels never reruns extraction.
    """
    from dnnprobe.probe import ProbeSettings, check_targets
    from dnnprobe.tracking import check_layer_names

    table = StimulusTable.read(table_path)
    check_layer_names(params.extract.layers, "params.yaml: extract.layers")
    # Only what the checks use (dvc.yaml lists exactly these params for this stage).
    settings = ProbeSettings(n_components=params.pca, cv=params.cv, classifier=params.probe.classifier,
                             scoring=params.probe.scoring)
    check_targets(probe_targets(table, params), settings, label=params.probe.label, table=str(table_path))
    table.check_images_exist()
    checksums = image_checksums(table.image_folder, table.stim_ids)
    recorded = table.header.get("images_sha256")
    if recorded and recorded != text_sha256(checksums):
        raise DnnprobeError(
            f"{table_path}: the images in {table.image_folder} are not the ones this table was written with "
            "(images_sha256 differs); rerun the stimuli stage")
    image_list_path = Path(image_list_path)
    if _resolved(image_list_path.with_suffix("")) != _resolved(table.image_folder):
        raise DnnprobeError(f"{image_list_path}: an image list must sit next to the folder it lists: "
                            f"{os.path.normpath(table.image_folder)}.sha256 for {table_path}")
    with atomic_output(image_list_path) as temp:
        temp.write_text(checksums, encoding="utf-8")
    return ImageList.read(image_list_path)


# ---- network and extraction ---------------------------------------------------------------

EXTERNAL_WEIGHTS = Path("models/external")  # a weights file must be here: dvc.yaml's network stage watches it


def make_network(params: Params, out_path: str | os.PathLike):
    """Build the network with the requested weights and save them under models/.

    A weights file (``model.weights: <path>``) must lie inside models/external/, which the network
    stage lists as a dependency, so that DVC reruns it when the file changes.
    """
    from dnnprobe.network import build_network, save_network

    weights = params.model.weights
    if weights not in ("random", "imagenet") and not _inside(Path(weights), EXTERNAL_WEIGHTS):
        raise DnnprobeError(
            f"params.yaml: model.weights {weights} is outside {EXTERNAL_WEIGHTS}/, the folder DVC watches for "
            f"weights files; copy it there (and `dvc add` it to share it) and set model.weights to the copy")
    with claim(out_path, f"{out_path}.json"):
        model, source = build_network(params.model.arch, weights, params.model.seed)
        return save_network(model, out_path, params.model.arch, weights, params.model.seed, source)


def extract(
    params: Params, image_list_path: str | os.PathLike, network_path: str | os.PathLike, out_path: str | os.PathLike,
    progress: bool = True,
):
    """One forward pass over the listed images; every layer in extract.layers to one .act.h5.

    The file records which images (``images_sha256``, the list's sha256) and which weights
    (``network_sha256``) it was computed from; each image's bytes are checked against the list.
    """
    from dnnprobe.extraction import extract_activations
    from dnnprobe.network import load_network, resolve_layers

    images = ImageList.read(image_list_path)
    model, info = load_network(network_path, params.model.arch)
    module_paths = resolve_layers(model, params.model.arch, params.extract.layers)
    settings = params.extract
    attrs = {**info.as_attrs(), "images_sha256": images.sha256, "stimuli_rows": len(images)}
    return extract_activations(
        images, model, module_paths, out_path,
        batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype,
        compression=settings.compression, num_workers=settings.num_workers, file_attrs=attrs, progress=progress,
    )


def gram(activations_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True) -> list[str]:
    from dnnprobe.gram import write_gram_file

    return write_gram_file(activations_path, out_path, progress=progress)


# ---- probe --------------------------------------------------------------------------------


def probe_settings(params: Params):
    """The probe's settings (``pca``, ``cv``, ``probe.*``) as :class:`dnnprobe.probe.ProbeSettings`."""
    from dnnprobe.probe import ProbeSettings

    return ProbeSettings(
        n_components=params.pca, cv=params.cv, classifier=params.probe.classifier, C=params.probe.C,
        standardize=params.probe.standardize, scoring=params.probe.scoring,
        permutations=params.probe.permutations, seed=params.probe.seed,
    )


def probe_targets(table: StimulusTable, params: Params) -> np.ndarray:
    """The decoded column (``probe.label``): integer classes, or numbers for ridge regression."""
    if params.probe.classifier == "ridge_regression":
        return table.numeric_column(params.probe.label)
    values = table.column(params.probe.label)
    try:
        return table.integer_labels(params.probe.label)
    except DnnprobeError:
        rows = [i for i, v in enumerate(values) if not _is_integer(v)]
        if not rows:  # integers, but too large
            raise
        row = rows[0]
        numeric = all(_is_number(v) for v in values)
        hint = " (a continuous column: use probe.classifier=ridge_regression and probe.scoring=r2)" if numeric else ""
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


def _check_same_stimuli(table_path, table: StimulusTable, grams) -> None:
    """The Gram matrices' rows must be the table's stimuli: same count, and the same images in the same
    order (``images_sha256``, recorded by the stimuli stage in the table and by extraction in the file)."""
    if grams.n_stim != len(table):
        raise DnnprobeError(f"{grams.path}: {grams.n_stim} stimuli, but {table_path} lists {len(table)}")
    ours, theirs = table.header.get("images_sha256"), grams.attrs.get("images_sha256")
    if ours and theirs and ours != str(theirs):
        raise DnnprobeError(
            f"{grams.path} was computed from other images than {table_path} lists (images_sha256 "
            f"{str(theirs)[:12]}... vs {ours[:12]}...); rerun the pipeline from the check stage (dvc repro)")


def _check_activations_match(activations_path, grams, n_stim: int, table_path, read_data: bool) -> str:
    """The activation file must be the one the Gram matrices were computed from; returns its sha256.

    Its recorded provenance (images, weights, rows, layers) is compared always; its bytes are hashed
    and compared with the sha256 the gram stage recorded only when the probe reads its data
    (``probe.save_models``), since hashing a BOLD5000-sized file takes a while.
    """
    from dnnprobe.actfile import ActivationFile

    recorded = grams.activations_sha256
    with ActivationFile(activations_path) as activations:
        activations.check_rows(n_stim, str(table_path))
        missing = [layer for layer in grams.layers if layer not in activations.layers]
        if missing:
            raise DnnprobeError(
                f"{activations_path}: no layer {missing[0]!r}, which {grams.path} has; rerun the gram stage (dvc repro gram)"
            )
        for key in ("images_sha256", "network_sha256"):
            mine, theirs = activations.attrs.get(key), grams.attrs.get(key)
            if mine is not None and theirs is not None and str(mine) != str(theirs):
                raise DnnprobeError(f"{grams.path} was not computed from {activations_path} ({key} differs); "
                                    "rerun the gram stage (dvc repro gram)")
    if read_data and recorded:
        actual = file_sha256(activations_path)
        if actual != recorded:
            raise DnnprobeError(f"{grams.path} was not computed from {activations_path} (the file's sha256 differs "
                                "from the one the gram stage recorded); rerun the gram stage (dvc repro gram)")
    return recorded


def probe(
    params: Params,
    table_path: str | os.PathLike,
    gram_path: str | os.PathLike,
    activations_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    models_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Cross-validated decoding of probe.label from every layer; outputs, metrics and an MLflow run.

    Refuses, before any work, a table, Gram file and activation file that do not come from each other,
    and any setting the data cannot support. Every hash logged to MLflow is of a file as it was read.
    """
    from tqdm import tqdm

    from dnnprobe import stats, tracking
    from dnnprobe.gram import GramFile
    from dnnprobe.probe import check_targets, cross_validate_gram, save_layer_result

    table = StimulusTable.read(table_path)
    y = probe_targets(table, params)
    settings = probe_settings(params)
    outputs = (out_dir, metrics_path, models_dir)
    with claim(*outputs), GramFile(gram_path) as grams:
        _check_same_stimuli(table_path, table, grams)
        activations_sha256 = _check_activations_match(activations_path, grams, len(table), table_path,
                                                      read_data=params.probe.save_models)
        tracking.check_layer_names(grams.layers, str(gram_path))
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
            # Each hash is of a file as it was read: the table and the Gram file here, the activation
            # file by the gram stage that read it (and again here when the probe reads it).
            "stimuli_sha256": file_sha256(table_path), "images_sha256": table.header.get("images_sha256", ""),
            "gram_sha256": file_sha256(gram_path), "activations_sha256": activations_sha256,
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
                summary_text = json.dumps(summary, indent=2) + "\n"
                (temp_dir / "summary.json").write_text(summary_text)
                metrics = stats.metrics_json(summary, params.probe.scoring)
                temp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
                _save_probe_models(params, y, settings, grams, activations_path, temp_models)
            run.log_artifact(metrics_path)
            # The report stage finds this run by the sha256 of the summary it produced: no run id in
            # an output (it would change every run, and with it dvc.lock).
            run.record_summary(text_sha256(summary_text))
    return summary


def _save_probe_models(params, y, settings, grams, activations_path, folder: Path) -> None:
    """models/probes: each layer's PCA + decoder refit on all stimuli, as .npz (loads without pickle)."""
    from dnnprobe.probe import save_refit_models

    saved = save_refit_models(grams, activations_path, y, settings, folder) if params.probe.save_models else []
    index = {"save_models": params.probe.save_models, "layers": saved,
             "format": "numpy .npz, np.load(path, allow_pickle=False); see dnnprobe.probe.load_refit_model"}
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")


# ---- report -------------------------------------------------------------------------------


def _read_summary(probe_dir: Path) -> tuple[dict, str]:
    """The probe's summary.json, and the sha256 of its text (how the report finds the MLflow run)."""
    path = probe_dir / "summary.json"
    try:
        text = path.read_text()
        summary = json.loads(text)
        if not isinstance(summary, dict) or not {"layers", "layer_order"} <= set(summary):
            raise ValueError("no 'layers' and 'layer_order'")
    except FileNotFoundError:
        raise DnnprobeError(f"{path}: missing; run the probe stage first") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise DnnprobeError(f"{path}: not a probe summary ({reason}); rerun the probe stage") from None
    return summary, text_sha256(text)


def report(
    params: Params,
    probe_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    plot_path: str | os.PathLike,
) -> list[Path]:
    """The Conv-vs-ReLU figure, a confusion-matrix figure and the DVC plot table.

    They are attached to the MLflow run that produced exactly these probe results (found by the sha256
    of summary.json in ``tracking.experiment``); without such a run they are only written, with a warning.
    """
    from dnnprobe import report as figures
    from dnnprobe import tracking

    probe_dir = Path(probe_dir)
    summary, summary_sha256 = _read_summary(probe_dir)
    layer = params.report.confusion_layer or summary["layer_order"][-1]
    if layer not in summary["layer_order"]:
        raise DnnprobeError(
            f"params.yaml: report.confusion_layer {layer!r} was not probed (layers: {', '.join(summary['layer_order'])})"
        )
    with claim(figures_dir, plot_path), atomic_output(figures_dir, directory=True) as temp:
        try:
            paths = figures.save_figure(figures.conv_vs_relu_figure(summary), temp / "conv_vs_relu")
        except KeyError as exc:  # valid JSON, but not what the probe writes
            raise DnnprobeError(f"{probe_dir / 'summary.json'}: not a probe summary (no {exc}); rerun the probe stage") from None
        conf_path = probe_dir / layer / "conf_m.npy"
        if conf_path.is_file():
            conf_m = np.load(conf_path, allow_pickle=False)
            paths += figures.save_figure(
                figures.confusion_figure(conf_m, summary.get("class_names", []), layer), temp / "confusion")
    with atomic_output(plot_path) as temp_plot:
        figures.write_plot_csv(summary, temp_plot)
    final = [Path(figures_dir) / p.name for p in paths]
    warning = tracking.log_artifacts_to_probe_run(params.tracking.experiment, summary_sha256,
                                                  final + [Path(plot_path)], "report")
    if warning:
        print(f"dnnprobe report: warning: {warning}")
    return final
