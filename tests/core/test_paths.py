"""The one $DVC_ROOT reader: the real repository inside `dvc exp run --temp` and queued experiments."""

from __future__ import annotations

from dnnprobe.core.paths import dvc_root, repo_root
from dnnprobe.stimuli.bold5000 import download_folder


def test_dvc_root_is_the_variable_as_set_or_none(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "relative/repo")
    assert str(dvc_root()) == "relative/repo"  # as DVC set it; repo_root resolves it
    assert repo_root() == (tmp_path.cwd() / "relative" / "repo").resolve()
    monkeypatch.setenv("DVC_ROOT", "")
    assert dvc_root() is None
    monkeypatch.delenv("DVC_ROOT")
    assert dvc_root() is None


def test_outside_dvc_the_store_walks_up_but_a_download_stays_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert repo_root() == tmp_path
    assert download_folder("data/external/bold5000") == tmp_path.joinpath("data/external/bold5000").relative_to(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert download_folder("data/external/bold5000") == tmp_path / "data/external/bold5000"
    assert download_folder("/abs/bold5000").as_posix() == "/abs/bold5000"
