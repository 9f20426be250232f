"""Files that do not come from each other are refused, inside DVC or not, in one line naming both; and
every hash logged to MLflow is of a file as it was read."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import mlflow
import pytest

from helpers import assert_nothing_written, assert_one_line_error, cli, latest_probe_run, rgb_image, tiny_params
from dnnprobe.stages.stimuli import make_stimuli
from dnnprobe.stages.probe import probe
from dnnprobe.core.hashing import file_sha256
from dnnprobe.stimuli.table import StimulusTable


def probe_cli(out: Path, table: Path, gram: Path, activations: Path, *sets: str):
    args = [arg for s in sets for arg in ("--set", s)]
    return cli("probe", *args, "--table", table, "--gram", gram, "--activations", activations,
               "--out", out / "probe", "--metrics", out / "metrics.json", "--models", out / "probes")


def copy_with(activations: Path, target: Path, attrs: dict | None = None, change_value: bool = False) -> Path:
    shutil.copyfile(activations, target)
    with h5py.File(target, "r+") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        if change_value:
            f["fc2"][0, 0, 0, 0] += 1.0
    return target


def test_a_table_of_other_stimuli_is_refused(tmp_path, tiny_gram, tiny_activations):
    """Demo seed 1: the same 24 file names and labels, other images. Its Gram rows are not these stimuli."""
    other = tmp_path / "other" / "stimuli.stim.csv"
    make_stimuli(tiny_params(**{"stimuli.demo.seed": 1}), other, other.parent / "images")
    result = probe_cli(tmp_path / "out", other, tiny_gram, tiny_activations)
    assert_one_line_error(result, "probe", f"{tiny_gram} was computed from other images, or the same images in another order, than {other} lists "
                                           "(images_sha256")
    assert_nothing_written(tmp_path / "out")
    assert not (tmp_path / "mlflow.db").exists()


def test_activations_the_gram_was_not_computed_from_are_refused(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    other = copy_with(tiny_activations, tmp_path / "other.act.h5", attrs={"images_sha256": "0" * 64})
    result = probe_cli(tmp_path / "out", tiny_stimuli, tiny_gram, other)
    assert_one_line_error(result, "probe", f"{tiny_gram} was not computed from {other} (images_sha256 differs)")
    assert_nothing_written(tmp_path / "out")


def test_changed_activation_bytes_are_caught_when_the_probe_reads_them(tmp_path, tiny_stimuli, tiny_gram,
                                                                         tiny_activations):
    changed = copy_with(tiny_activations, tmp_path / "changed.act.h5", change_value=True)
    result = probe_cli(tmp_path / "out", tiny_stimuli, tiny_gram, changed, "probe.save_models=true")
    assert_one_line_error(result, "probe", f"{tiny_gram} was not computed from {changed} (the file's sha256 differs")
    assert_nothing_written(tmp_path / "out")


def test_mlflow_records_the_hashes_of_the_files_read(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    from dnnprobe.gram.writer import write_gram_file

    def logged(activations: Path, gram: Path, out: Path) -> dict:
        probe(tiny_params(), tiny_stimuli, gram, activations, out / "probe", out / "metrics.json",
              out / "probes", progress=False)
        return latest_probe_run().data.params

    params = logged(tiny_activations, tiny_gram, tmp_path / "a")
    assert params["activations_sha256"] == file_sha256(tiny_activations)
    assert params["gram_sha256"] == file_sha256(tiny_gram)
    assert params["stimuli_sha256"] == file_sha256(tiny_stimuli)
    assert params["images_sha256"] == StimulusTable.read(tiny_stimuli).header["images_sha256"]

    # Activations regenerated outside DVC (one value differs): the run records the new file's hash.
    regenerated = copy_with(tiny_activations, tmp_path / "regenerated.act.h5", change_value=True)
    write_gram_file(regenerated, tmp_path / "regenerated.gram.h5", progress=False)
    params = logged(regenerated, tmp_path / "regenerated.gram.h5", tmp_path / "b")
    assert params["activations_sha256"] == file_sha256(regenerated) != file_sha256(tiny_activations)


def test_the_report_attaches_figures_to_the_run_of_exactly_its_results(tmp_path, tiny_stimuli, tiny_gram,
                                                                      tiny_activations):
    """Two probe runs with different results: a report goes to the run that wrote its summary.json."""
    runs = {}
    for name, pca in (("a", 4), ("b", 3)):
        out = tmp_path / name
        probe(tiny_params(pca=pca), tiny_stimuli, tiny_gram, tiny_activations, out / "probe", out / "metrics.json",
              out / "probes", progress=False)
        runs[name] = latest_probe_run().info.run_id
    result = cli("report", "--probe", tmp_path / "a" / "probe", "--figures", tmp_path / "fig", "--plot",
                 tmp_path / "plot.csv")
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient()
    assert "report/conv_vs_relu.png" in [a.path for a in client.list_artifacts(runs["a"], "report")]
    assert client.list_artifacts(runs["b"], "report") == []


@pytest.mark.parametrize("text, fragment", [
    ('{"layers": {', "not a probe summary (Expecting"),
    ("[1, 2]", "not a probe summary (no 'layers' and 'layer_order')"),
    ("\udcff", "not a probe summary"),
])
def test_a_corrupt_summary_is_one_line(tmp_path, text, fragment):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "summary.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    result = cli("report", "--probe", tmp_path / "probe", "--figures", tmp_path / "fig", "--plot", tmp_path / "plot.csv")
    assert_one_line_error(result, "report", "summary.json: ", fragment)
    assert not (tmp_path / "fig").exists()


def test_extraction_refuses_an_image_that_is_not_the_listed_one(tmp_path, tiny_stimuli, tiny_image_list, tiny_network):
    shutil.copytree(tiny_stimuli.parent / "images", tmp_path / "images")
    shutil.copyfile(tiny_image_list, tmp_path / "images.sha256")
    stim_id = (tmp_path / "images.sha256").read_text().splitlines()[5].split("  ", 1)[1]
    rgb_image(tmp_path / "images" / stim_id, value=3, size=64)
    result = cli("extract", "--set", "extract.layers=[fc2]", "--images", tmp_path / "images.sha256",
                 "--network", tiny_network, "--out", tmp_path / "acts" / "a.act.h5")
    assert_one_line_error(result, "extract", "images.sha256, stimulus row 6:", f"{stim_id}: its bytes differ from "
                                             "those the image list recorded")
    assert_nothing_written(tmp_path / "acts")


def test_a_reordered_table_is_refused_even_with_its_header(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    """Rows shuffled after the stimuli stage wrote the table: the header's images_sha256 still matches,
    the images in table order do not (the probe hashes them)."""
    lines = tiny_stimuli.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("data=")) + 1
    rows = lines[start:]
    shuffled = tiny_stimuli.parent / "shuffled.stim.csv"
    shuffled.write_text("".join(lines[:start] + rows[1::2] + rows[0::2]))
    result = probe_cli(tmp_path / "out", shuffled, tiny_gram, tiny_activations)
    assert_one_line_error(result, "probe", "or the same images in another order, than", "shuffled.stim.csv")
    assert_nothing_written(tmp_path / "out")
