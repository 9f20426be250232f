"""The researcher's own network (model.source: local) end to end with real DVC and MLflow: docs/models.md's
CORnet-Z-like example through every stage, the records naming its file and function, and DVC watching that
file only."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import h5py
import pytest
import yaml

from helpers import REPO, TINY, changed_stages, copy_repo, dvc, git, merge, mlflow_runs, stages_run
from dnnprobe.core.hashing import file_sha256

ARCH = "models/external/cornet_z.py:cornet_z"
LAYERS = ["V1", "V2", "V4", "IT", "decoder"]


def docs_example() -> str:
    section = (REPO / "docs" / "models.md").read_text().split("## Your own network", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def docs_params() -> dict:
    """The params.yaml lines the docs' section shows."""
    section = (REPO / "docs" / "models.md").read_text().split("## Your own network", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    params = merge(copy.deepcopy(TINY), docs_params())
    path = copy_repo(tmp_path_factory.mktemp("own"), params)
    (path / "models" / "external" / "cornet_z.py").write_text(docs_example())
    git(path, "add", "-A")
    git(path, "commit", "-qm", "my network")
    assert stages_run(dvc(path, "repro")) == {"params", "stimuli", "check", "network", "extract", "gram", "probe",
                                              "report", "similarity"}
    return path


def test_every_stage_runs_and_every_record_names_the_file_and_function(repo):
    code = repo / "models" / "external" / "cornet_z.py"
    assert list(json.loads((repo / "reports" / "metrics.json").read_text())) == LAYERS
    assert (repo / "reports" / "figures" / "conv_vs_relu.png").stat().st_size > 1000
    assert any((repo / "reports" / "similarity").iterdir())
    expected = {"code_file": "models/external/cornet_z.py", "code_sha256": file_sha256(code), "function": "cornet_z"}
    sidecar = json.loads((repo / "models" / "network.pt.json").read_text())
    assert sidecar["arch"] == ARCH and sidecar["extra"] == {"source": "local", **expected}
    with h5py.File(repo / "data" / "activations.act.h5", "r") as handle:
        assert set(handle) == set(LAYERS)
        assert {key: handle.attrs[f"network_{key}"] for key in expected} == expected
    parent = next(r for r in mlflow_runs(repo / "mlflow.db") if "mlflow.parentRunId" not in r["tags"])
    assert {key: parent["params"][f"network_{key}"] for key in expected} == expected
    assert parent["params"]["model.arch"] == ARCH


def test_editing_the_file_reruns_network_and_extract_and_another_file_reruns_nothing(repo):
    (repo / "models" / "external" / "README.md").write_text("notes on my models\n")
    (repo / "models" / "external" / "cornet_s.py").write_text("# another network, not the one probed\n")
    assert changed_stages(repo) == set()
    code = repo / "models" / "external" / "cornet_z.py"
    code.write_text(code.read_text() + "\n# a comment: the same network, a new file\n")
    assert changed_stages(repo) == {"network"}
    # The network stage's sidecar holds the file's sha256, so extraction reruns after it (the rest would
    # follow in a full `dvc repro`; stopping at extract keeps the test short).
    assert stages_run(dvc(repo, "repro", "extract")) == {"network", "extract"}
    sidecar = json.loads((repo / "models" / "network.pt.json").read_text())
    assert sidecar["extra"]["code_sha256"] == file_sha256(code)
