"""Temporary (not committed): run the probe stage on several configs and dump every output + MLflow run."""
import json, os, shutil
from pathlib import Path

import mlflow
import pytest

from helpers import tiny_params

OUT = Path(os.environ["BYTES_OUT"])

CONFIGS = {
    "default": {},
    "models_perm_auto": {"probe.save_models": "true", "probe.permutations": "5", "probe.C": "auto"},
    "several": {"probe.label": "[label, odd, 'size:ridge_regression']", "probe.save_models": "true", "probe.permutations": "3"},
    "groups_shuffle": {"probe.label": "label", "probe.shuffle": "true"},
}


def table_with_columns(tiny_stimuli, folder, **columns):
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


@pytest.mark.parametrize("config", list(CONFIGS))
def test_dump(config, tiny_stimuli, tiny_gram, tiny_activations, tmp_path, capsys):
    from dnnprobe.stages.probe import probe
    table = table_with_columns(tiny_stimuli, tmp_path, odd=lambda i, label: i % 2, size=lambda i, label: (i * 7) % 5 + 0.5)
    dest = OUT / config
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    params = tiny_params(**CONFIGS[config])
    probe(params, table, tiny_gram, tiny_activations, dest / "probe", dest / "metrics.json", dest / "models", progress=False)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    dump = []
    for r in runs:
        params_ = {k: v for k, v in r.data.params.items() if "sha256" not in k and "path" not in k}
        tags = {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.source") and k not in ("mlflow.user",)}
        hist = {}
        client = mlflow.MlflowClient()
        for key in sorted(r.data.metrics):
            hist[key] = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
        dump.append({"name": r.info.run_name, "status": r.info.status, "params": params_, "metrics": r.data.metrics,
                     "tags": sorted(tags), "history": hist})
    (dest / "mlflow.json").write_text(json.dumps(dump, indent=1, sort_keys=True, default=str))
    (dest / "stderr.txt").write_text(capsys.readouterr().err)
