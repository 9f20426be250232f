"""Sharing and scale-out with the real tools (DVC remotes, MLflow servers and projects), on tiny data.

DVC remotes (a local folder, and SSH against a throwaway OpenSSH server on 127.0.0.1), a real
`mlflow server` over HTTP, the MLproject's entry points through `mlflow run`, and a queued sweep run
by two parallel DVC workers. The module runs the tiny pipeline once (`pipeline`) and its tests then
work on that repository in file order: remotes, server, queue, `mlflow run` (which leaves the
workspace modified, so it comes last). Fast in-process tests follow: how a probe run launched by
`mlflow run` is recorded, the MLproject's parameters, and the sweep figure on synthetic input.
"""

from __future__ import annotations

import csv
import filecmp
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from helpers import REPO
from helpers import copy_built_repo, dvc, env_without_tracking_uri, git, mlflow_runs

from dnnprobe.core.errors import DnnprobeError

BIN = Path(sys.executable).parent  # dnnprobe, dvc and mlflow of this environment
LAYERS = yaml.safe_load((REPO / "params.yaml").read_text())["extract"]["layers"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    if git(repo, "status", "--porcelain").strip():
        git(repo, "commit", "-qm", message)


def pulled_outputs(repo: Path) -> list[str]:
    """The large outputs a colleague pulls instead of recomputing, as repo-relative paths."""
    scores = sorted(p.relative_to(repo).as_posix() for p in (repo / "reports" / "probe").glob("*/*.npy"))
    return ["data/activations.act.h5", "data/gram.h5", "models/network.pt", *scores]


def assert_same_files(names: list[str], first: Path, second: Path) -> None:
    assert len(names) > 2 * len(LAYERS)
    for name in names:
        assert filecmp.cmp(first / name, second / name, shallow=False), name


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, built_tiny_repo) -> Path:
    """A repository copy on tiny data after `dvc repro`, with dvc.lock committed as a user would."""
    repo = copy_built_repo(built_tiny_repo, tmp_path_factory.mktemp("pipeline"))
    commit_all(repo, "pipeline outputs")
    return repo


# ---- DVC remotes ----------------------------------------------------------------------------


def test_local_remote_push_then_pull_into_a_fresh_clone(pipeline, tmp_path):
    dvc(pipeline, "remote", "add", "--default", "--force", "shared", str(tmp_path / "remote"))
    commit_all(pipeline, "shared remote")
    assert "pushed" in dvc(pipeline, "push")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(pipeline), str(clone))
    assert not (clone / "data" / "activations.act.h5").exists()
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert "Running stage" not in dvc(clone, "repro")
    assert_same_files(pulled_outputs(pipeline), pipeline, clone)
    # .dvc/config sets cache.type hardlink,symlink: outputs are read-only links, not second copies.
    activations = (clone / "data" / "activations.act.h5").stat()
    assert activations.st_nlink == 2 and not activations.st_mode & 0o222


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1 that accepts one fresh key for the current user."""
    binary = shutil.which("sshd", path=os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin", os.environ["PATH"]]))
    if binary is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed (Debian: apt-get install openssh-server, as .ci/run does)")
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation folder; the service makes it
    port = free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    log = folder / "sshd.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen([binary, "-D", "-e", "-f", str(folder / "sshd_config")],
                                  stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"sshd exited: {log.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                    if connection.recv(64).startswith(b"SSH-"):
                        break
            except OSError:
                assert time.monotonic() < deadline, f"sshd did not answer on port {port}: {log.read_text()}"
                time.sleep(0.2)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        yield {"url": f"ssh://{user}@127.0.0.1:{port}", "keyfile": folder / "client_key", "log": log}
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_ssh_remote_push_then_pull_into_a_fresh_clone(pipeline, sshd, tmp_path):
    storage = tmp_path / "ssh-storage"
    dvc(pipeline, "remote", "add", "--force", "lab-ssh", f"{sshd['url']}{storage}")
    dvc(pipeline, "remote", "modify", "--local", "lab-ssh", "keyfile", str(sshd["keyfile"]))  # not committed
    commit_all(pipeline, "ssh remote")
    assert "pushed" in dvc(pipeline, "push", "-r", "lab-ssh")
    assert list((storage / "files" / "md5").rglob("*")), "nothing arrived in the SSH remote's folder"

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(pipeline), str(clone))
    dvc(clone, "remote", "modify", "--local", "lab-ssh", "keyfile", str(sshd["keyfile"]))  # each member's own key
    dvc(clone, "pull", "-r", "lab-ssh")
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert "Running stage" not in dvc(clone, "repro")
    assert_same_files(pulled_outputs(pipeline), pipeline, clone)
    assert sshd["log"].read_text().count("Accepted publickey") >= 2  # push and pull really went over SSH


# ---- a shared MLflow server -----------------------------------------------------------------


# `mlflow_server` is in conftest.py.


def test_probe_and_report_log_to_an_mlflow_server_over_http(pipeline, mlflow_server, tmp_path):
    url, server_artifacts = mlflow_server.url, mlflow_server.artifacts
    env = {**env_without_tracking_uri(), "MLFLOW_TRACKING_URI": url}
    out = tmp_path / "out"  # the pipeline's own outputs stay as DVC recorded them
    for command in (
        ["probe", "--out", out / "probe", "--metrics", out / "metrics.json", "--models", out / "probes"],
        ["report", "--probe", out / "probe", "--figures", out / "figures", "--plot", out / "plot.csv"],
    ):
        result = subprocess.run([str(BIN / "dnnprobe"), *map(str, command), "--quiet"], cwd=pipeline, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert "warning" not in result.stdout

    client = mlflow.tracking.MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("dnnprobe")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server stores artifacts
    [run] = client.search_runs([experiment.experiment_id], "tags.stage = 'probe'")
    summary_sha256 = hashlib.sha256((out / "probe" / "summary.json").read_bytes()).hexdigest()
    assert run.data.tags["dnnprobe.summary_sha256"] == summary_sha256
    assert run.info.status == "FINISHED" and run.data.params["pca"] == "4" and run.data.params["n_stimuli"] == "24"
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["conv3"] == pytest.approx(metrics["conv3"], abs=1e-6)
    layers = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.data.params["layer"] for r in layers) == sorted(LAYERS)

    assert "report/conv_vs_relu.png" in [a.path for a in client.list_artifacts(run.info.run_id, "report")]
    downloaded = client.download_artifacts(run.info.run_id, "report/conv_vs_relu.png", str(tmp_path))
    assert Path(downloaded).read_bytes() == (out / "figures" / "conv_vs_relu.png").read_bytes()
    assert list(server_artifacts.rglob("conv_vs_relu.png")), "the figure is not in the server's artifact store"
    assert run.info.run_id not in [r["run_uuid"] for r in mlflow_runs(pipeline / "mlflow.db")]


# ---- a queued sweep on two workers ------------------------------------------------------------


def wait_for_queue(repo: Path, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout} s:\n{status}"
        time.sleep(5)


def test_queued_sweep_on_two_workers_logs_each_experiment_once(pipeline):
    # Start without a store, so that both workers race to create it (tracking serialises that).
    for name in ("mlflow.db", "mlflow.db.lock"):
        (pipeline / name).unlink(missing_ok=True)
    shutil.rmtree(pipeline / "mlruns", ignore_errors=True)
    for pca in (2, 3):
        dvc(pipeline, "exp", "run", "--queue", "-n", f"sweep-pca{pca}", "-S", f"pca={pca}")
    dvc(pipeline, "queue", "start", "-j", "2")
    status = wait_for_queue(pipeline)
    assert len(re.findall(r"sweep-pca\d\s.*Success", status)) == 2, status

    runs = mlflow_runs(pipeline / "mlflow.db")
    parents = [r for r in runs if r["tags"].get("stage") == "probe"]
    assert {p["tags"].get("dvc_exp_name"): p["params"]["pca"] for p in parents} == {"sweep-pca2": "2", "sweep-pca3": "3"}
    assert all(p["status"] == "FINISHED" for p in parents)
    for parent in parents:
        children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parent["run_uuid"]]
        assert sorted(c["params"]["layer"] for c in children) == sorted(LAYERS)

    with sqlite3.connect(pipeline / "mlflow.db") as connection:
        experiments = dict(connection.execute("select name, artifact_location from experiments"))
        artifact_uris = [uri for (uri,) in connection.execute("select artifact_uri from runs")]
    # Nothing points into DVC's temporary copies (.dvc/tmp/exps), which are deleted afterwards.
    assert set(experiments) == {"Default", "dnnprobe"}
    store = (pipeline / "mlruns").as_uri()
    for location in [*experiments.values(), *artifact_uris]:
        assert location.startswith((store, str(pipeline / "mlruns"))), location
    assert not list((pipeline / ".dvc" / "tmp").rglob("mlflow.db")) and not list((pipeline / ".dvc" / "tmp").rglob("mlruns"))
    assert len(list((pipeline / "mlruns").rglob("report/conv_vs_relu.png"))) == 2

    # The sweep figure, from `dvc exp show --json`: the baseline (pca 4) and both experiments.
    result = subprocess.run([str(BIN / "dnnprobe"), "sweep"], cwd=pipeline, env=env_without_tracking_uri(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (pipeline / "reports" / "sweep" / "sweep_pca.png").stat().st_size > 10_000
    with open(pipeline / "reports" / "sweep" / "sweep_pca.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["experiment"], row["pca"]) for row in rows} >= {("sweep-pca2", "2"), ("sweep-pca3", "3")}
    assert sorted({row["pca"] for row in rows}) == ["2", "3", "4"] and len(rows) == 3 * len(LAYERS)
    shown = json.loads(dvc(pipeline, "exp", "show", "--json"))
    [sweep_pca2] = [rev for e in shown[1]["experiments"] for rev in e["revs"] if rev["name"] == "sweep-pca2"]
    conv1 = sweep_pca2["data"]["metrics"]["reports/metrics.json"]["data"]["conv1"]
    [row] = [row for row in rows if row["experiment"] == "sweep-pca2" and row["layer"] == "conv1"]
    assert float(row["mean"]) == pytest.approx(conv1, abs=1e-6)
    # the SEM comes from the experiment's own metrics_detail.json (in git, not a DVC metric)
    details = json.loads(git(pipeline, "show", f"{sweep_pca2['rev']}:reports/metrics_detail.json"))
    assert float(row["sem"]) == pytest.approx(details["sem"]["conv1"], abs=1e-6)
    assert float(row["chance"]) == pytest.approx(details["chance"]["label"], abs=1e-6) and row["attribute"] == "label"


# ---- MLproject ------------------------------------------------------------------------------


def test_mlflow_run_entry_points_log_into_the_dnnprobe_experiment(pipeline):
    def mlflow_run(*args: str) -> str:
        result = subprocess.run([str(BIN / "mlflow"), "run", ".", *args, "--env-manager", "local"], cwd=pipeline,
                                env=env_without_tracking_uri(), capture_output=True, text=True)
        assert result.returncode == 0, f"mlflow run {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    assert "Running stage" not in mlflow_run("-e", "main")  # dvc repro: everything is up to date
    before = {r["run_uuid"] for r in mlflow_runs(pipeline / "mlflow.db")}
    mlflow_run("-e", "probe", "-P", "pca=3", "-P", "cv=3")

    new = [r for r in mlflow_runs(pipeline / "mlflow.db") if r["run_uuid"] not in before]
    [probe] = [r for r in new if r["tags"].get("stage") == "probe"]
    [launcher] = [r for r in new if r["run_uuid"] == probe["tags"]["launching_run_id"]]
    assert probe["status"] == launcher["status"] == "FINISHED"
    assert launcher["tags"]["probe_run_id"] == probe["run_uuid"] and launcher["params"]["pca"] == "3"
    assert probe["params"]["pca"] == "3" and probe["params"]["cv"] == "3"
    assert sum(r["tags"].get("mlflow.parentRunId") == probe["run_uuid"] for r in new) == len(LAYERS)
    with sqlite3.connect(pipeline / "mlflow.db") as connection:
        experiment_of = dict(connection.execute("select run_uuid, experiment_id from runs"))
        [dnnprobe_id] = [i for (i,) in connection.execute("select experiment_id from experiments where name='dnnprobe'")]
    launched_by_dvc = [r["run_uuid"] for r in mlflow_runs(pipeline / "mlflow.db")
                       if r["tags"].get("stage") == "probe" and "launching_run_id" not in r["tags"]]
    assert experiment_of[probe["run_uuid"]] == dnnprobe_id and launched_by_dvc
    assert all(experiment_of[run] == dnnprobe_id for run in launched_by_dvc)  # the same experiment as DVC's runs


def test_mlproject_parameters_match_params_yaml_and_reach_the_commands(tmp_path):
    from mlflow.projects._project_spec import load_project

    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    assert set(entry_points) >= {"main", "experiment", "stimuli", "network", "extract", "gram", "probe", "report"}
    assert entry_points["main"]["command"] == "dvc repro"
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    checked = 0
    for name, entry_point in entry_points.items():
        # Every `--set key={param}` / `-S key={param}` names a params.yaml key whose value is the default.
        for key, parameter in re.findall(r"(?:--set|-S) ([\w.]+)=\{(\w+)\}", entry_point["command"]):
            value = defaults
            for part in key.split("."):
                value = value[part]
            default = entry_point["parameters"][parameter]["default"]
            assert str(default) == str(value) or float(default) == float(value), f"{name}: {parameter} vs {key}"
            checked += 1
    assert checked >= 20
    probe = load_project(str(REPO)).get_entry_point("probe")  # as `mlflow run` reads it
    command = probe.compute_command({"pca": "50", "C": "0.1"}, str(tmp_path))
    assert "--set pca=50" in command and "--set probe.C=0.1" in command and "--set cv=10" in command


# ---- how a probe run launched by `mlflow run` is recorded (in-process, fast) -----------------------


def open_probe_run(tmp_path, monkeypatch, launching_run_id: str) -> str:
    """runs.probe_run as the probe stage uses it, with $MLFLOW_RUN_ID set as `mlflow run` sets it."""
    from dnnprobe.track.runs import probe_run

    monkeypatch.chdir(tmp_path)  # a local store's artifacts go under the current repo: not this checkout
    monkeypatch.setenv("MLFLOW_RUN_ID", launching_run_id)
    with probe_run("dnnprobe", "alexnet-random-pca4-cv3", {"pca": 4, "cv": 3}, "accuracy") as run:
        for layer in ("conv1", "fc1"):
            run.log_layer(layer, [0.5, 0.75, 0.5], 0.583, 0.083)
    return run.run_id


def test_launching_run_in_another_experiment_is_cross_linked(tmp_path, monkeypatch):
    client = mlflow.tracking.MlflowClient()
    launcher = client.create_run(client.create_experiment("Default-like"))
    run_id = open_probe_run(tmp_path, monkeypatch, launcher.info.run_id)
    ours = client.get_run(run_id)
    assert client.get_experiment(ours.info.experiment_id).name == "dnnprobe" and ours.info.status == "FINISHED"
    assert ours.data.tags["launching_run_id"] == launcher.info.run_id and "mlflow.parentRunId" not in ours.data.tags
    assert ours.data.params == {"pca": "4", "cv": "3"} and ours.data.metrics["fc1"] == 0.583
    launched = client.get_run(launcher.info.run_id)
    assert launched.data.tags["probe_run_id"] == run_id and launched.data.params == {}
    assert launched.info.status == "RUNNING"  # `mlflow run` ends its own run, not us
    layers = client.search_runs([ours.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.data.params["layer"] for r in layers) == ["conv1", "fc1"]
    assert "MLFLOW_RUN_ID" not in os.environ  # consumed, so the layer runs did not resume the launcher


def test_launching_run_in_the_dnnprobe_experiment_becomes_the_parent(tmp_path, monkeypatch):
    from dnnprobe.track.store import ensure_experiment

    monkeypatch.chdir(tmp_path)
    client = mlflow.tracking.MlflowClient()
    launcher = client.create_run(ensure_experiment("dnnprobe"))
    run_id = open_probe_run(tmp_path, monkeypatch, launcher.info.run_id)
    ours = client.get_run(run_id)
    assert run_id != launcher.info.run_id and ours.info.experiment_id == launcher.info.experiment_id
    assert ours.data.tags["mlflow.parentRunId"] == launcher.info.run_id and ours.data.params["pca"] == "4"
    assert client.get_run(launcher.info.run_id).data.tags["probe_run_id"] == run_id
    layers = client.search_runs([ours.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(layers) == 2


def test_unknown_launching_run_fails_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(DnnprobeError, match="MLFLOW_RUN_ID=0123456789abcdef0123456789abcdef: no such run") as caught:
        open_probe_run(tmp_path, monkeypatch, "0123456789abcdef0123456789abcdef")
    assert "\n" not in str(caught.value)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


# ---- the sweep figure from `dvc exp show --json` (synthetic, fast) --------------------------------


def exp_entry(name, rev, pca, scores, C=1.0, nested=False):
    metrics = dict(scores)  # metrics.json: one mean per layer
    if nested:  # the metrics.json of earlier commits: mean, SEM and tests per layer
        metrics = {layer: {"accuracy_mean": mean, "accuracy_sem": 0.01} for layer, mean in scores.items()}
        metrics["conv_vs_relu"] = {"Conv1": {"t": 1.0}}
    return {"rev": rev, "name": name, "data": {
        "params": {"params.yaml": {"data": {"pca": pca, "probe": {"C": C, "scoring": "accuracy"},
                                            "model": {"arch": "alexnet", "weights": "random"},
                                            "stimuli": {"source": "demo"}}}},
        "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_sweep_figure_has_one_line_per_experiment(tmp_path):
    from dnnprobe.cli import main
    from dnnprobe.experiments.exp_show import experiments_from_exp_show, varying_params
    from dnnprobe.experiments.sweep import write_sweep
    from click.testing import CliRunner

    baseline = exp_entry("main", "a" * 40, 100, {"conv1": 0.6, "fc1": 0.8}, C=1, nested=True)  # 1 and 1.0: the same C
    workspace = {**exp_entry(None, "workspace", 100, {"conv1": 0.6, "fc1": 0.8}, nested=True), "experiments": None}
    queued = {"rev": "c" * 40, "name": "sweep-queued", "data": {"params": {}, "metrics": {}}}
    # a running experiment shows its baseline's metrics under its own name: stale numbers, skipped
    running = {**exp_entry("sweep-running", "d" * 40, 20, {"conv1": 0.6, "fc1": 0.8}), "executor": {"state": "running"}}
    baseline["experiments"] = [{"revs": [exp_entry("sweep-pca10", "b" * 40, 10, {"conv1": 0.55, "fc1": 0.7})]},
                               {"revs": [queued]}, {"revs": [running]}]
    exp_show = [workspace, baseline]
    experiments = experiments_from_exp_show(exp_show)
    assert [e.name for e in experiments] == ["main", "sweep-pca10"]  # workspace repeats main; queued, running skipped
    assert varying_params(experiments) == ["pca"] and list(experiments[1].scores) == ["conv1", "fc1"]

    png, table = write_sweep(experiments, "pca", tmp_path / "sweep" / "sweep_pca.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    # without the repository (a saved exp show) a flat metrics.json has no SEM; a nested one carries it
    # (the chance level of accuracy needs the class counts, which only metrics_detail.json records)
    assert table.read_text().splitlines()[:4] == [
        "experiment,pca,network,stimulus_set,attribute,decoder,scoring,layer,relative_depth,depth_from,mean,sem,chance",
        # AlexNet's conv1 is 1st of its layers and fc1 14th (conv1, conv1_relu, conv1_maxpool, conv2, ...); the
        # settings these entries leave out are today's defaults (network and stimulus set named in full)
        'sweep-pca10,10,"torchvision alexnet, weights=random, seed=0, tokens=all, preprocess=dnnbrain","demo (n_per_class=200, 256 px, seed 0)",label,logistic,accuracy,conv1,0.071429,network order,0.550000,nan,',
        'sweep-pca10,10,"torchvision alexnet, weights=random, seed=0, tokens=all, preprocess=dnnbrain","demo (n_per_class=200, 256 px, seed 0)",label,logistic,accuracy,fc1,1.000000,network order,0.700000,nan,',
        'main,100,"torchvision alexnet, weights=random, seed=0, tokens=all, preprocess=dnnbrain","demo (n_per_class=200, 256 px, seed 0)",label,logistic,accuracy,conv1,0.071429,network order,0.600000,0.010000,']
    with pytest.raises(DnnprobeError, match="--param probe.X: not a params.yaml key"):
        write_sweep(experiments, "probe.X", tmp_path / "x.png")
    with pytest.raises(DnnprobeError, match="no experiment has reports/metrics.json"):
        write_sweep([], "pca", tmp_path / "x.png")

    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps(exp_show))
    result = CliRunner().invoke(main, ["sweep", "--exp-show", str(saved), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and (tmp_path / "c.csv").is_file(), result.output
    result = CliRunner().invoke(main, ["sweep", "--exp-show", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "missing.json: not readable" in result.output


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    return lines[0]


def test_sweep_never_plots_a_failed_experiment_or_an_unread_key(tmp_path):
    """DVC shows a failed queued experiment with its baseline's metrics under its own params
    (treeverse/dvc#9787); a key dnnprobe does not read (`classifier: ridge` at the top level) is no setting."""
    from click.testing import CliRunner

    from dnnprobe.cli import main
    from dnnprobe.experiments.exp_show import experiments_from_exp_show, varying_params

    scores = {"conv1": 0.6, "fc1": 0.8}
    baseline = exp_entry("main", "a" * 40, 100, scores)
    failed = {**exp_entry("bad", "b" * 40, 500, scores), "error": {"msg": "Experiment run failed", "type": ""}}
    stray = exp_entry("stray", "c" * 40, 100, scores)
    stray["data"]["params"]["params.yaml"]["data"]["classifier"] = "ridge"
    good = exp_entry("pca10", "d" * 40, 10, {"conv1": 0.55, "fc1": 0.7})
    baseline["experiments"] = [{"revs": [failed]}, {"revs": [stray]}, {"revs": [good]}]
    skipped: list[str] = []
    experiments = experiments_from_exp_show([baseline], skipped=skipped)
    assert [e.name for e in experiments] == ["main", "pca10"] and skipped == ["bad"]  # stray: main's repeat
    assert varying_params(experiments) == ["pca"]

    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps([baseline]))
    result = CliRunner().invoke(main, ["sweep", "--exp-show", str(saved), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and "left out (not finished or failed, no metrics of their own): bad" in result.output
    assert "bad" not in (tmp_path / "s.csv").read_text() and "classifier" not in (tmp_path / "s.csv").read_text()


def test_sweep_input_and_options_it_cannot_use_fail_in_one_line(tmp_path):
    from click.testing import CliRunner

    from dnnprobe.cli import main

    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps({"workspace": {}}))  # a JSON object, not exp show's list of commits
    line = one_line_error(CliRunner().invoke(main, ["sweep", "--exp-show", str(saved)]))
    assert line == f"dnnprobe sweep: error: {saved}: not `dvc exp show --json` output (a JSON list of commits; this is an object)"
    baseline = exp_entry("main", "a" * 40, 100, {"conv1": 0.6})
    baseline["experiments"] = [{"revs": [exp_entry("pca10", "d" * 40, 10, {"conv1": 0.55})]}]
    saved.write_text(json.dumps([baseline]))
    line = one_line_error(CliRunner().invoke(main, ["sweep", "--exp-show", str(saved), "--param", "probe.C"]))
    assert line == ("dnnprobe sweep: error: --param probe.C: 1.0 in every experiment, so it cannot order them; "
                    "the settings that vary: pca")
