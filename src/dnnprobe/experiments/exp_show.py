"""Experiments as ``dvc exp show --json`` lists them: their params and their per-layer scores.

For every commit and each of its experiments DVC prints the params.yaml values and
reports/metrics.json (the mean score per layer); the SEM per layer and each attribute's chance level
come from each one's reports/metrics_detail.json (``git show``). Experiments that did not compute their own metrics are
skipped: queued, running and failed ones (DVC shows its baseline's metrics under a failed experiment's
name and params, treeverse/dvc#9787), and so are exact repeats (the workspace repeats the commit or
experiment last run there). Only keys dnnprobe reads count as settings: a key it does not know
(``classifier: ridge`` at the top level) is no setting, since no stage read it.

Read by ``dnnprobe sweep`` (:mod:`dnnprobe.experiments.sweep`) and ``dnnprobe compare``
(:mod:`dnnprobe.experiments.compare`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import comparable, flatten
from dnnprobe.stages.params import Params

METRICS_FILE = "reports/metrics.json"  # layer -> mean fold score
DETAILS_FILE = "reports/metrics_detail.json"  # "sem" -> layer -> SEM over folds; in git, read with `git show`
CHANCE_WITHOUT_CLASSES = {"r2": 0.0, "roc_auc": 0.5}  # chance levels that do not depend on the class counts
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Experiment:
    name: str  # DVC experiment name, branch or short commit, or "workspace"
    params: dict[str, object]  # params.yaml flattened to dotted keys ("probe.C": 1.0)
    scoring: str  # the scoring of the per-layer means (of probe.label's first column)
    scores: dict[str, tuple[float, float]]  # layer -> (mean, SEM over folds), in layer order
    # What the means are, scoring and decoder as they ran: "r2 (ridge_regression)"; per column with several
    # columns, "accuracy (label: logistic), r2 (size: ridge_regression)". Empty: `scoring` says it.
    measure: str = ""
    # Each decoded attribute (probe.label's columns, in order) -> (decoder, scoring). With several, the
    # keys of `scores` are "<attribute>/<layer>" (:func:`attribute_scores`). Empty: probe.label's one column.
    attributes: dict[str, tuple[str, str]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)  # attribute -> chance level, where known (:func:`chance_levels`)


def decoded(params: dict[str, object]) -> dict[str, tuple[str, str]]:
    """Each attribute an experiment's params (dotted) decode -> (decoder, scoring), in probe.label's order: a
    ``column:decoder`` entry names its own decoder and scoring, the other columns use probe.classifier and
    probe.scoring (:func:`dnnprobe.probe.decoders.entry_decoder`)."""
    from dnnprobe.probe.decoders import entry_column, entry_decoder, label_entries  # scikit-learn: only when read

    classifier, scoring = str(params.get("probe.classifier", "logistic")), str(params.get("probe.scoring", "accuracy"))
    label = params.get("probe.label", "label")
    try:
        ran = {entry_column(str(entry)): entry_decoder(str(entry), classifier, scoring) for entry in label_entries(label)}
    except (DnnprobeError, TypeError):  # a label no probe ran (the probe refuses it): as params.yaml says
        ran = {}
    return ran or {str(label): (classifier, scoring)}


def measure(params: dict[str, object]) -> tuple[str, str]:
    """(scoring of the first column, what the means are: :attr:`Experiment.measure`) of an experiment's
    params (dotted), as :func:`decoded` reads them."""
    ran = [(column, decoder, scored) for column, (decoder, scored) in decoded(params).items()]
    if len(ran) == 1:
        return ran[0][2], f"{ran[0][2]} ({ran[0][1]})"
    return ran[0][2], ", ".join(f"{scored} ({column}: {decoder})" for column, decoder, scored in ran)


DEFAULTS = Params().flat()  # the params.yaml keys dnnprobe reads, dotted -> today's default
KNOWN_PARAMS = frozenset(DEFAULTS)
# What decodes each attribute: shown across experiments as each attribute ran (:func:`attribute_rows`), never
# raw (probe.scoring is only the default of a column that names its own decoder: size:ridge_regression).
DECODER_KEYS = ("probe.label", "probe.classifier", "probe.scoring")


def _experiment(entry: dict, name: str, repo: str | os.PathLike | None) -> Experiment | None:
    # Only finished results: a queued or running experiment's entry shows its baseline's metrics (stale
    # numbers under its name), and so does a failed one (marked by "error"; treeverse/dvc#9787).
    state = (entry.get("executor") or {}).get("state")
    if state not in (None, "success") or entry.get("error"):
        return None
    data = entry.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data")
    details = _details(repo, str(entry.get("rev", ""))) if metrics and repo is not None else {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data")
    if not metrics or not params:
        return None
    # A key an older params.yaml lacks ran as today's default (tokens `all`, preprocess `dnnbrain`): shown as
    # that default, never as None, and no difference from an experiment that sets it to the default.
    params = {**DEFAULTS, **{key: value for key, value in flatten(params).items() if key in KNOWN_PARAMS}}
    scoring, measured = measure(params)
    sems = details.get("sem") or {}
    scores = {}
    for layer, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scores[layer] = (float(value), float(sems.get(layer, np.nan)))
        elif isinstance(value, dict) and f"{scoring}_mean" in value:  # the nested metrics.json of earlier commits
            scores[layer] = (float(value[f"{scoring}_mean"]), float(value.get(f"{scoring}_sem", np.nan)))
    attributes = decoded(params)
    return Experiment(name, params, scoring, scores, measured, attributes,
                      chance_levels(attributes, details)) if scores else None


def chance_levels(attributes: dict[str, tuple[str, str]], details: dict) -> dict[str, float]:
    """Each attribute's chance level (attribute -> level; one that cannot be known is left out): as the
    probe recorded it (metrics_detail.json's ``chance``), else, for results from before it did, the
    permutation null's mean over the attribute's layers (the probe's own chance when permutations ran),
    else what the scoring alone gives (0 for r2, 0.5 for roc_auc). The other scorings' chance depends on
    the class counts (accuracy: the majority class's share), which `dvc exp show` does not carry."""
    recorded, nulls = details.get("chance") or {}, details.get("null_mean") or {}
    several = len(attributes) > 1
    levels = {}
    for name, (_, scoring) in attributes.items():
        null = [value for key, value in nulls.items() if (key.startswith(f"{name}/") if several else "/" not in key)]
        if isinstance(recorded, dict) and isinstance(recorded.get(name), (int, float)):
            levels[name] = float(recorded[name])
        elif null:
            levels[name] = float(np.mean(null))
        elif scoring in CHANCE_WITHOUT_CLASSES:
            levels[name] = CHANCE_WITHOUT_CLASSES[scoring]
    return levels


def attribute_scores(experiment: Experiment) -> dict[str, dict[str, tuple[float, float]]]:
    """An experiment's scores per decoded attribute: attribute -> layer -> (mean, SEM), in layer order.
    With several attributes metrics.json's keys are ``<attribute>/<layer>``; with one, the layer names."""
    names = list(experiment.attributes) or [str(experiment.params.get("probe.label", "label"))]
    if len(names) == 1 or not any("/" in key for key in experiment.scores):
        return {names[0]: dict(experiment.scores)}
    split: dict[str, dict[str, tuple[float, float]]] = {}
    for key, value in experiment.scores.items():
        name, _, layer = key.partition("/")
        split.setdefault(name, {})[layer or name] = value
    return split


def _details(repo: str | os.PathLike, rev: str) -> dict:
    """metrics_detail.json of a commit or experiment (``git show``), or of the workspace; {} if absent.

    It is a git-tracked output rather than a DVC metric (which keeps `dvc exp show` to one column per
    layer), so `dvc exp show --json` does not carry it.
    """
    try:
        if rev == "workspace":
            text = (Path(repo) / DETAILS_FILE).read_text()
        else:
            result = subprocess.run(["git", "show", f"{rev}:{DETAILS_FILE}"], cwd=repo, capture_output=True, text=True)
            if result.returncode != 0:
                return {}
            text = result.stdout
        details = json.loads(text)
    except (OSError, ValueError):
        return {}
    return details if isinstance(details, dict) else {}


def experiments_from_exp_show(exp_show: list[dict], repo: str | os.PathLike | None = None,
                              skipped: list[str] | None = None, keep_named_repeats: bool = False,
                              repeats: list[tuple[str, str]] | None = None) -> list[Experiment]:
    """Every commit and experiment in `dvc exp show --json` output that computed probe metrics.

    With `repo` (the repository the output is of), each one's SEM comes from its metrics_detail.json;
    without it the SEM is NaN (no band in the figure). The names of experiments left out because they
    did not finish (queued, running, failed) are appended to `skipped`. One that repeats an earlier
    one's settings and scores is left out (one line per result in a figure), unless it is a named
    experiment and `keep_named_repeats` is set (for a user who asks for it by name); each such
    (left out, the one kept) pair is appended to `repeats` (the workspace, which repeats what was last run
    there, is not).
    """
    _check_exp_show(exp_show, "dvc exp show --json")
    entries = []
    for commit in exp_show:
        entries.append((commit, _name(commit)))
        for experiment in commit.get("experiments") or []:
            entries += [(rev, _name(rev)) for rev in experiment.get("revs") or []]
    # The workspace last: when it repeats a commit or an experiment, that one's name is kept.
    entries.sort(key=lambda pair: pair[1] == "workspace")
    found, seen = [], {}
    for entry, name in entries:
        experiment = _experiment(entry, name, repo)
        if experiment is None:
            unfinished = entry.get("error") or (entry.get("executor") or {}).get("state") not in (None, "success")
            if skipped is not None and unfinished:
                skipped.append(name)
            continue
        key = repeat_key(experiment)
        if key not in seen or (keep_named_repeats and entry.get("name")):
            seen.setdefault(key, name)
            found.append(experiment)
        elif repeats is not None and name != "workspace":
            repeats.append((name, seen[key]))
    return found


def repeat_key(experiment: Experiment) -> str:
    """What two experiments share when one repeats the other: the settings (the stimuli as the set they name,
    :func:`stimulus_set`: a `stimuli.folder` the demo set never read is no difference) and each layer's mean
    (not the SEM: an older metrics.json carried it and a newer one leaves it to metrics_detail.json)."""
    params = {key: comparable(value) for key, value in experiment.params.items() if not key.startswith("stimuli.")}
    means = {layer: mean for layer, (mean, _) in experiment.scores.items()}
    return json.dumps([params, stimulus_set(experiment.params), means], sort_keys=True)


def _name(entry: dict) -> str:
    rev = str(entry.get("rev", ""))
    return entry.get("name") or (rev if rev == "workspace" else rev[:7])


def run_exp_show(repo: str | os.PathLike = ".", all_commits: bool = False) -> list[dict]:
    """`dvc exp show --json` in `repo`, parsed."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise DnnprobeError("dvc: not on PATH (activate .venv, or pass --exp-show with saved `dvc exp show --json` output)")
    command = [dvc, "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise DnnprobeError(f"dvc exp show --json in {Path(repo).resolve()} failed: {message}")
    return json.loads(result.stdout)


def load_exp_show(path: str | os.PathLike) -> list[dict]:
    try:
        exp_show = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DnnprobeError(f"{path}: not readable `dvc exp show --json` output ({exc})") from None
    _check_exp_show(exp_show, str(path))
    return exp_show


def _check_exp_show(exp_show: object, where: str) -> None:
    """`dvc exp show --json` prints a JSON list with one object per commit; refuse anything else in one line."""
    if isinstance(exp_show, list) and all(isinstance(commit, dict) for commit in exp_show):
        return
    kinds = {dict: "an object", list: "a list of other values", str: "a string"}
    got = kinds.get(type(exp_show), "a number or null")
    raise DnnprobeError(f"{where}: not `dvc exp show --json` output (a JSON list of commits; this is {got})")


def varying_params(experiments: list[Experiment]) -> list[str]:
    """The params.yaml keys whose value differs between the experiments (what the sweep changed)."""
    keys = sorted({key for experiment in experiments for key in experiment.params})
    return [key for key in keys if len({comparable(e.params.get(key)) for e in experiments}) > 1]


def repeats_lines(repeats: list[tuple[str, str]], verb: str) -> list[str]:
    """One line per experiment kept, naming those left out as its repeats (five, then how many more):
    ``alexnet: same settings and scores as lead-fixes, drawn once``."""
    by_kept: dict[str, list[str]] = {}
    for name, kept in repeats:
        by_kept.setdefault(kept, []).append(name)
    lines = []
    for kept, names in by_kept.items():
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        lines.append(f"{', '.join(names[:5])}{more}: same settings and scores as {kept}, {verb} once")
    return lines


def shown_settings(experiments: list[Experiment]) -> list[str]:
    """The settings to show across experiments: those that vary, less :data:`DECODER_KEYS` (shown per
    attribute as it ran, :func:`attribute_rows`)."""
    return [key for key in varying_params(experiments) if key not in DECODER_KEYS]


def ran(experiment: Experiment, attribute: str) -> str:
    """How an experiment decoded an attribute, as it ran: ``ridge_regression (r2)``; "-" if it did not."""
    attributes = experiment.attributes or decoded(experiment.params)
    if attribute not in attributes:
        return "-"
    decoder, scoring = attributes[attribute]
    return f"{decoder} ({scoring})"


def attribute_rows(experiments: list[Experiment]) -> list[tuple[str, list[str]]]:
    """One row per attribute any experiment decoded: ``attribute size`` -> each experiment's ``ridge_regression
    (r2)`` (or "-")."""
    names = dict.fromkeys(name for e in experiments for name in (e.attributes or decoded(e.params)))
    return [(f"attribute {name}", [ran(e, name) for e in experiments]) for name in names]


def stimulus_set(params: dict[str, object]) -> str:
    """The stimulus set an experiment's params (dotted) name: ``demo (n_per_class=12, 64 px, seed 0)``,
    ``stimcsv data/external/my.stim.csv``, ``folder data/external``, ``bold5000``; two experiments with
    different stimuli.* settings of their source ran on different stimuli."""
    source = str(params.get("stimuli.source", DEFAULTS["stimuli.source"]))

    def get(key: str) -> object:
        return params.get(f"stimuli.{key}", DEFAULTS.get(f"stimuli.{key}"))

    if source == "demo":
        return f"demo (n_per_class={get('demo.n_per_class')}, {get('demo.image_size')} px, seed {get('demo.seed')})"
    if source == "stimcsv":
        return f"stimcsv {get('folder')}/{get('table')}".rstrip("/")
    if source == "folder":
        return f"folder {get('folder')}"
    return source


def layer_order(experiments: list[Experiment]) -> list[str]:
    layers: list[str] = []
    for experiment in experiments:
        layers += [layer for layer in experiment.scores if layer not in layers]
    return layers
