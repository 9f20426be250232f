"""Which experiments a cluster sweep runs: DVC's queue and grids, as `dvc exp run -S` overrides."""

from __future__ import annotations

import pytest
import yaml

from helpers import copy_repo, dvc, git, one_line_error


def test_slurm_queued_experiments_become_their_overrides_on_their_baseline(tmp_path):
    from dnnprobe.experiments.cluster_plan import queued_experiments

    repo = copy_repo(tmp_path / "repo")
    dvc(repo, "exp", "run", "--queue", "-n", "wide", "-S", "pca=8", "-S", "probe.C=0.5")
    dvc(repo, "exp", "run", "--queue", "-n", "lda", "-S", "probe.classifier=lda")
    head = git(repo, "rev-parse", "HEAD").strip()
    planned = queued_experiments(repo)
    assert [(p.name, p.rev, p.sets, p.queued) for p in planned] == [
        ("wide", head, ["pca=8", "probe.C=0.5"], True), ("lda", head, ["probe.classifier=lda"], True)]


def test_slurm_grid_is_every_combination_named_after_its_values(tmp_path):
    from dnnprobe.experiments.cluster_plan import grid

    repo = copy_repo(tmp_path / "repo")
    planned = grid(repo, ("pca=4,8", "cv=3", "extract.layers=[conv1,fc1],[fc2]"))
    assert [p.name for p in planned] == ["pca4-layers_conv1_fc1", "pca4-layers_fc2", "pca8-layers_conv1_fc1",
                                         "pca8-layers_fc2"]
    assert planned[1].sets == ["pca=4", "cv=3", "extract.layers=[fc2]"]
    one_line_error(lambda: grid(repo, ("pca",)), "expected key=value")


@pytest.mark.parametrize("value", [8, 0.5, 1.0e-3, True, None, "lda", "two words", "true", [1, 2], ["a b", "c"]])
def test_slurm_overrides_read_back_as_the_same_value(value):
    from dnnprobe.experiments.cluster_plan import hydra_value, overrides

    base = {"probe": {"C": 1.0, "x": "y"}}
    sets = overrides(base, {"probe": {"C": value, "x": "y"}})
    assert sets == [f"probe.C={hydra_value(value)}"]
    # Hydra's grammar is a superset of YAML flow scalars for these: a quoted string stays a string.
    assert yaml.safe_load(hydra_value(value).replace("1e-03", "1.0e-03")) == value or isinstance(value, float)


def test_slurm_a_name_that_exists_already_is_refused(tmp_path):
    from dnnprobe.experiments.cluster_plan import Planned, check_names

    repo = copy_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/pca8", head)
    one_line_error(lambda: check_names(repo, [Planned("pca8", head, ["pca=8"])]), "'pca8' already exists")
    one_line_error(lambda: check_names(repo, [Planned("x", head, []), Planned("x", head, [])]), "given twice")
    one_line_error(lambda: check_names(repo, []), "nothing to submit")


def test_slurm_queued_experiment_that_changes_more_than_params_is_refused(tmp_path):
    from dnnprobe.experiments.cluster_plan import queued_experiments

    repo = copy_repo(tmp_path / "repo")
    (repo / "dvc.yaml").write_text((repo / "dvc.yaml").read_text() + "\n# edited before queueing\n")
    dvc(repo, "exp", "run", "--queue", "-n", "edited", "-S", "pca=8")
    # Its job would run the baseline's dvc.yaml with pca=8 only: refused, naming it and the file.
    one_line_error(lambda: queued_experiments(repo), r"^queued experiment edited also changes dvc.yaml \(not only "
                                                     r"params.yaml\): a cluster job runs its baseline commit")


def test_slurm_grid_key_given_twice_is_refused_and_dvcs_file_prefix_is_accepted(tmp_path):
    from dnnprobe.experiments.cluster_plan import grid

    repo = copy_repo(tmp_path / "repo")
    one_line_error(lambda: grid(repo, ("pca=4", "pca=8")), r"^-S pca given twice \(pca=4, pca=8\): use -S pca=4,8 "
                                                            "for a grid")
    one_line_error(lambda: grid(repo, ("pca=4", "params.yaml:pca=8")), "pca given twice")
    planned = grid(repo, ("params.yaml:pca=4,8",))
    assert [(p.name, p.sets) for p in planned] == [("pca4", ["pca=4"]), ("pca8", ["pca=8"])]
