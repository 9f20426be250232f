"""Issue 5: bad input, interruptions and reproducibility, with nothing lost and nothing wrong.

Bad input goes through the real command line (click's runner, in this process): exit status 1,
exactly one line on stderr naming the file, row, key or value, and nothing left where the output
would be. Interruptions, reproducibility and "which stages rerun" use real DVC in a temporary copy
of the repository on tiny data (tests/test_pipeline.py's helpers).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import (
    REPO, TINY, TINY_SETS, assert_nothing_written, assert_one_line_error, can_mount_tmpfs, changed_stages, cli,
    closed_port_url, copy_repo, dvc, dvc_status, env_without_tracking_uri, merge, rgb_image, set_param, stages_run,
    tiny_params,
)
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stimuli.table import StimulusTable

# ---- bad .stim.csv, through `dnnprobe stimuli` with stimuli.source=stimcsv ------------------

HEADER = "type=image\npath=imgs\ndata=stimID,label\n"


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("path=imgs\ndata=stimID,label\na.png,0\n", ["no 'type=' line"]),
        ("type=image\ndata=stimID,label\na.png,0\n", ["no 'path=' line"]),
        ("type=image\npath=imgs\nstimID,label\na.png,0\n", ["no 'data=' line"]),
        ("type=image\npath=imgs\ndata=label,condition\n0,x\n", ["line 3: the data= line has no 'stimID' column"]),
        (HEADER + "a.png,0\nb.png,1,extra\n", ["line 5: 3 fields, expected 2 (stimID,label)"]),
        (HEADER, ["the data section is empty"]),
        (HEADER + "a.png,0\nb.png,1\na.png,1\n", ["stimID 'a.png' appears twice (stimulus rows 1 and 3)"]),
        (HEADER + "a.png,0\nb.png,cat\n", ["column 'label', stimulus row 2 (b.png): 'cat' is not an integer"]),
        (HEADER + "../a.png,0\n", ["stimulus row 1: stimID '../a.png' points outside the path= folder"]),
        ("type=image\npath=nowhere\ndata=stimID,label\na.png,0\n", ["path=nowhere is not a folder"]),
        (HEADER + "".join(f"{i}.png,{i % 2}\n" for i in range(8)),
         ["7 of 8 images missing under", "imgs: 1.png, 2.png, 3.png, 4.png, 5.png, ..."]),
    ],
    ids=["no-type", "no-path", "no-data", "no-stimID", "field-count", "empty", "duplicate", "non-integer-label",
         "escapes-path", "path-missing", "missing-images"],
)
def test_bad_stimulus_table_is_one_line_and_writes_nothing(tmp_path, text, fragments):
    source = tmp_path / "in"
    for name in ("a.png", "b.png", "0.png"):
        rgb_image(source / "imgs" / name)
    (source / "user.stim.csv").write_text(text)
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=stimcsv", "--set", f"stimuli.folder={source}",
                 "--set", "stimuli.table=user.stim.csv", "--table", out / "s.stim.csv", "--images", out / "images")
    line = assert_one_line_error(result, "stimuli", *fragments)
    assert "user.stim.csv" in line  # the message names the file
    assert_nothing_written(out)


def test_whole_params_file_is_checked_before_any_work(tmp_path):
    """A bad probe setting is refused by the params stage (DVC runs it whenever params.yaml changes) and by
    every stage that reads the probe's settings, before it writes anything; the stimuli stage reads only its
    own section, so it neither checks nor depends on the probe's."""
    result = cli("params", "--set", "probe.C=-1")
    assert_one_line_error(result, "params", "params.yaml: probe.C must be > 0, got -1.0")
    out = tmp_path / "out"
    result = cli("check", "--set", "probe.C=-1", "--table", out / "s.stim.csv", "--out", out / "images.sha256")
    assert_one_line_error(result, "check", "params.yaml: probe.C must be > 0, got -1.0")
    assert_nothing_written(out)


# ---- images, through `dnnprobe extract` -------------------------------------------------------


def image_list(folder: Path, names: list[str]) -> Path:
    """imgs.sha256 for the images in folder/imgs, as the check stage writes it (bad images included)."""
    from dnnprobe.stimuli.table import image_checksums

    (folder / "imgs.sha256").write_text(image_checksums(folder / "imgs", names))
    return folder / "imgs.sha256"


def extract_cli(images: Path, network: Path, out: Path):
    return cli("extract", "--set", "extract.layers=[fc2]", "--set", "extract.batch_size=2",
               "--images", images, "--network", network, "--out", out)


@pytest.mark.parametrize("defect", ["truncated", "zero-byte", "decompression-bomb"])
def test_bad_image_names_its_row_and_leaves_no_activations(tmp_path, tiny_network, monkeypatch, defect):
    names = ["a.png", "b.png", "c.png", "d.png"]
    for i, name in enumerate(names):
        rgb_image(tmp_path / "imgs" / name, value=40 * i)
    bad = tmp_path / "imgs" / "c.png"
    if defect == "truncated":
        bad.write_bytes(bad.read_bytes()[:60])
        expected = "cannot read image"
    elif defect == "zero-byte":
        bad.write_bytes(b"")
        expected = "cannot read image (empty file)"
    else:
        rgb_image(bad, size=200)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # PIL's limit, scaled down
        expected = "image too large to decode safely"
    images = image_list(tmp_path, names)
    out = tmp_path / "acts"
    result = extract_cli(images, tiny_network, out / "a.act.h5")
    assert_one_line_error(result, "extract", "imgs.sha256, stimulus row 3:", "c.png", expected)
    assert_nothing_written(out)


def test_greyscale_rgba_palette_cmyk_and_16_bit_images_are_converted(tmp_path, tiny_network):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((30, 40), 77, np.uint8), "L").save(folder / "grey.png")
    Image.new("RGBA", (40, 30), (10, 20, 30, 100)).save(folder / "rgba.png")
    Image.new("RGB", (40, 30), (200, 10, 10)).convert("P").save(folder / "palette.png")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)).save(folder / "deep.png")
    names = ["grey.png", "rgba.png", "palette.png", "cmyk.jpg", "deep.png"]
    images = image_list(tmp_path, names)
    result = extract_cli(images, tiny_network, tmp_path / "a.act.h5")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "a.act.h5", "r") as f:
        fc2 = f["fc2"][()]
    assert fc2.shape == (5, 4096, 1, 1) and np.isfinite(fc2).all()


# ---- labels and probe parameters, through `dnnprobe probe` --------------------------------------


def probe_cli(tmp_path: Path, table: Path, gram: Path, activations: Path, *sets: str, env: dict | None = None):
    out = tmp_path / "out"
    args = []
    for setting in sets:
        args += ["--set", setting]
    return cli("probe", *args, "--table", table, "--gram", gram, "--activations", activations,
               "--out", out / "probe", "--metrics", out / "metrics.json", "--models", out / "probes", env=env)


def table_with_labels(tiny_stimuli: Path, folder: Path, labels: list[str]) -> Path:
    """The tiny demo table with other labels (same stimuli, so the tiny Gram still fits)."""
    table = StimulusTable.read(tiny_stimuli)
    table.columns["label"] = labels
    table.header["path"] = str(table.image_folder.resolve())
    path = folder / "labels.stim.csv"
    table.write(path)
    return path


def no_mlflow_store(tmp_path: Path) -> bool:
    """The test's MLflow store (conftest: tmp_path/mlflow.db) was never even created: no run was started."""
    return not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "labels, sets, fragments",
    [
        (["0"] * 24, [], ["labels.stim.csv: column 'label' has a single class (0); nothing to decode"]),
        (["0"] * 22 + ["1"] * 2, [], ["labels.stim.csv: column 'label': class 1 has 2 stimuli, fewer than cv=3 folds"]),
        (None, ["probe.label=animacy"], ["labels.stim.csv: no column 'animacy' (columns: stimID, label, condition)"]),
        (["0"] * 4 + ["cat"] + ["1"] * 19, [],
         ["column 'label' is not an integer class label (stimulus row 5,", ": 'cat')"]),
        (None, ["pca=20"], ["pca=20 is larger than the smallest training fold (16 stimuli)"]),
        (None, ["cv=25"], ["cv=25 is larger than the number of stimuli (24)"]),
        (None, ["cv=1"], ["params.yaml: cv must be >= 2, got 1"]),
        (None, ["probe.classifier=forest"], ["probe.classifier must be one of logistic"]),
        (None, ["probe.C=-1"], ["params.yaml: probe.C must be > 0, got -1.0"]),
    ],
    ids=["single-class", "class-below-cv", "no-label-column", "non-integer-label", "pca-above-fold",
         "cv-above-n", "cv-below-2", "unknown-classifier", "negative-C"],
)
def test_bad_labels_and_parameters_stop_the_probe_before_any_run(
        tmp_path, tiny_stimuli, tiny_gram, tiny_activations, labels, sets, fragments):
    default = [str(v) for v in StimulusTable.read(tiny_stimuli).integer_labels()]
    table = table_with_labels(tiny_stimuli, tmp_path, labels or default)
    result = probe_cli(tmp_path, table, tiny_gram, tiny_activations, *sets)
    assert_one_line_error(result, "probe", *fragments)
    assert_nothing_written(tmp_path / "out")
    assert no_mlflow_store(tmp_path)


def test_unknown_arch_writes_no_network(tmp_path):
    result = cli("network", "--set", "model.arch=alexnett", "--out", tmp_path / "models" / "network.pt")
    assert_one_line_error(result, "network", "model.arch: unknown network 'alexnett'; torchvision", "alexnet, ")
    assert_nothing_written(tmp_path / "models")


def test_unknown_layer_writes_no_activations(tmp_path, tiny_image_list, tiny_network):
    result = cli("extract", "--set", "extract.layers=[conv1,conv9]", "--images", tiny_image_list,
                 "--network", tiny_network, "--out", tmp_path / "acts" / "a.act.h5")
    assert_one_line_error(result, "extract", "extract.layers: unknown layer 'conv9' for alexnet; valid names: conv1")
    assert_nothing_written(tmp_path / "acts")


# ---- activation files, through `dnnprobe gram` and `dnnprobe probe` -----------------------------


def write_act(path: Path, layers: dict[str, np.ndarray]) -> Path:
    """An activation file as DNNBrain writes it: one float32 dataset per layer at the root."""
    with h5py.File(path, "w") as f:
        for name, array in layers.items():
            f.create_dataset(name, data=array)
    return path


def units(n: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width, 1, 1)).astype(np.float32)


def with_nan(array: np.ndarray, value: float) -> np.ndarray:
    array = array.copy()
    array[4, 1] = value
    return array


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda p: write_act(p, {"fc1": with_nan(units(6, 3), np.nan)}),
         ["layer fc1 has non-finite values (first at stimulus row 5, unit 1)"]),
        (lambda p: write_act(p, {"fc1": with_nan(units(6, 3), np.inf)}),
         ["layer fc1 has non-finite values (first at stimulus row 5, unit 1)"]),
        (lambda p: write_act(p, {"fc1": units(6, 3)[:, :, 0, 0]}),
         ["layer fc1 has shape (6, 3); DNNBrain layout is (n_stim, n_chn, n_row, n_col)"]),
        (lambda p: h5py.File(p, "w").create_group("conv1").file.close(),
         ["/conv1 is a group; DNNBrain layout has one dataset per layer at the root"]),
        (lambda p: p.write_text("not HDF5"), ["not an HDF5 file"]),
    ],
    ids=["nan", "inf", "2-d", "group", "not-hdf5"],
)
def test_bad_activation_file_stops_the_gram_stage(tmp_path, make, fragments):
    make(tmp_path / "bad.act.h5")
    result = cli("gram", "--activations", tmp_path / "bad.act.h5", "--out", tmp_path / "out" / "gram.h5")
    assert_one_line_error(result, "gram", "bad.act.h5: ", *fragments)
    assert_nothing_written(tmp_path / "out")


def gram_of(tmp_path: Path, name: str, layers: dict[str, np.ndarray]) -> Path:
    from dnnprobe.gram.writer import write_gram_file

    write_act(tmp_path / f"{name}.act.h5", layers)
    write_gram_file(tmp_path / f"{name}.act.h5", tmp_path / f"{name}.gram.h5", progress=False)
    return tmp_path / f"{name}.gram.h5"


@pytest.mark.parametrize(
    "gram_layers, act_layers, fragments",
    [
        ({"fc1": units(20, 8)}, {"fc1": units(20, 8)}, ["small.gram.h5: 20 stimuli, but", "lists 24"]),
        ({"fc1": units(24, 8)}, {"fc1": units(20, 8)}, ["acts.act.h5: 20 rows, but", "lists 24 stimuli"]),
        ({"fc1": units(24, 8), "fc2": units(24, 8)}, {"fc1": units(24, 8)},
         ["acts.act.h5: no layer 'fc2', which", "small.gram.h5 has; rerun the gram stage"]),
        ({"narrow": units(24, 3)}, {"narrow": units(24, 3)}, ["pca=4 is larger than layer narrow's 3 units"]),
    ],
    ids=["gram-rows", "activation-rows", "missing-layer", "pca-above-width"],
)
def test_activations_that_do_not_fit_the_table_stop_the_probe(tmp_path, tiny_stimuli, gram_layers, act_layers, fragments):
    gram = gram_of(tmp_path, "small", gram_layers)
    acts = write_act(tmp_path / "acts.act.h5", act_layers)
    result = probe_cli(tmp_path, tiny_stimuli, gram, acts)
    assert_one_line_error(result, "probe", *fragments)
    assert_nothing_written(tmp_path / "out")
    assert no_mlflow_store(tmp_path)


def test_a_file_that_is_not_a_gram_file_is_named(tmp_path, tiny_stimuli, tiny_activations):
    result = probe_cli(tmp_path, tiny_stimuli, tiny_activations, tiny_activations)
    assert_one_line_error(result, "probe", "not a Gram file written by the gram stage")
    assert_nothing_written(tmp_path / "out")


# ---- faults: disk full, MLflow -----------------------------------------------------------------


def test_disk_too_small_for_the_activations_is_refused_before_extraction(tmp_path, tiny_image_list, tiny_network, monkeypatch):
    monkeypatch.setattr("dnnprobe.compute.disk.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    result = cli("extract", "--images", tiny_image_list, "--network", tiny_network, "--out", tmp_path / "acts" / "a.act.h5")
    assert_one_line_error(result, "extract", "a.act.h5: needs 131 MB but its disk has 1 MB free")
    assert_nothing_written(tmp_path / "acts")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs (unshare -r -m)")
def test_disk_full_while_writing_activations_on_a_real_small_disk(tmp_path, tiny_image_list, tiny_network):
    """A 20 MB tmpfs; compressed output (size unknown in advance) fills it half way through."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    command = [sys.executable, "-m", "dnnprobe.cli", "extract", "--params", str(REPO / "params.yaml"), "--quiet",
               *[arg for s in TINY_SETS for arg in ("--set", s)], "--set", "extract.compression=lzf",
               "--images", str(tiny_image_list), "--network", str(tiny_network), "--out", str(mount / "a.act.h5")]
    script = (f"mount -t tmpfs -o size=20m tmpfs {mount} && {subprocess.list2cmdline(command)}; "
              f"echo exit=$?; ls -A {mount}")  # the mount lives as long as this shell: list it from inside
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stderr.strip().splitlines() == [
        f"dnnprobe extract: error: {mount / 'a.act.h5'}: writing activations failed (No space left on device)"]
    assert result.stdout.strip().splitlines() == ["exit=1"]  # and the disk is empty: no partial file


def test_probe_failing_at_its_last_step_leaves_no_outputs_and_a_failed_run(tmp_path, tiny_stimuli, tiny_gram,
                                                                            tiny_activations, monkeypatch):
    """Scores are computed, then saving the refit models fails: none of the outputs may appear."""
    from dnnprobe.stages.probe import probe

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dnnprobe.probe.refit.save_refit_models", disk_full)
    with pytest.raises(DnnprobeError, match=r"out/probes: writing failed \(No space left on device\)"):
        probe(tiny_params(**{"probe.save_models": "true"}), tiny_stimuli, tiny_gram, tiny_activations,
              tmp_path / "out" / "probe", tmp_path / "out" / "metrics.json", tmp_path / "out" / "probes",
              progress=False)
    assert_nothing_written(tmp_path / "out")
    parents = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
               if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FAILED"]


def test_unreachable_tracking_server_through_the_command_line(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    started = time.perf_counter()
    result = probe_cli(tmp_path, tiny_stimuli, tiny_gram, tiny_activations,
                       env={"MLFLOW_TRACKING_URI": closed_port_url()})
    assert time.perf_counter() - started < 30
    assert_one_line_error(result, "probe", "MLFLOW_TRACKING_URI=http://127.0.0.1:", "tracking server not reachable")
    assert_nothing_written(tmp_path / "out")


# ---- security -----------------------------------------------------------------------------------

SOURCES = sorted((REPO / "src" / "dnnprobe").rglob("*.py"))


def test_nothing_loads_pickles():
    """torch.load only with weights_only=True, np.load only with allow_pickle=False, no pickle/joblib."""
    for path in SOURCES:
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path.name}: {call}"
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{path.name}: {call}"
        assert not re.search(r"^\s*(import|from)\s+(pickle|joblib|dill|cloudpickle)\b", text, re.M), path.name
        assert "load_state_dict_from_url(" not in text or "weights_only=True" in text, path.name


def test_no_server_binds_beyond_localhost():
    """What the project starts (code, tests, benchmarks, CI, Makefile, MLproject) listens on 127.0.0.1 only;
    the README's and docs/' commands too, except the team-server recipe, where exposing the server is the point."""
    tests = [p for p in sorted((REPO / "tests").rglob("*.py")) if p.name != Path(__file__).name]  # not this file
    files = SOURCES + tests + [REPO / "Makefile", *sorted((REPO / "benchmarks").glob("*.py")),
                               *sorted((REPO / ".ci").glob("*")), REPO / "MLproject", REPO / "README.md",
                               *sorted((REPO / "docs").glob("*.md"))]
    local = ("127.0.0.1", "localhost")
    checked = 0
    for path in filter(Path.is_file, files):
        for line in path.read_text().splitlines():
            hosts = re.findall(r"""--host[ =]['"]?([^\s'",]+)|['"]--host['"],\s*['"]([^'"]*)['"]""", line)
            hosts = [a or b for a, b in hosts]
            hosts += re.findall(r"""(?:HTTPServer|bind)\(\(\s*['"]([^'"]*)['"]""", line)
            hosts += re.findall(r"ListenAddress\s+([\w.:]+)", line)
            if path.suffix == ".md" and re.search(r"\bmlflow server\b", line):
                continue  # "One MLflow server for the team": the user asks for an exposed server
            for host in hosts:
                checked += 1
                assert host in local, f"{path.name}: {line.strip()}"
            assert "0.0.0.0" not in line and "host=''" not in line and 'host=""' not in line, f"{path.name}: {line}"
    assert checked >= 3  # the checks saw the servers the tests start (HTTP, sshd, mlflow server)


# ---- reproducibility, interruptions and dependencies: real DVC on tiny data -----------------------

# Batches of 2 (12 batches for 24 images) give extraction time to be interrupted half way; one image
# worker, as the default, so that Ctrl-C also reaches a DataLoader worker. Six of the 14 layers keep
# the repeated pipeline runs short (tests/test_pipeline.py runs all 14).
SLOW_TINY = merge(json.loads(json.dumps(TINY)), {"extract": {
    "batch_size": 2, "num_workers": 1, "layers": ["conv1", "conv1_relu", "conv5", "conv5_relu", "fc2", "fc2_relu"]}})
STAGES = ["params", "stimuli", "check", "network", "extract", "gram", "probe", "report", "similarity"]
ACTIVATIONS = "data/activations.act.h5"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every output file (no output names an MLflow run: the report finds it by the summary's hash)."""
    files = [p for folder in ("data", "models", "reports") for p in (repo / folder).rglob("*") if p.is_file()]
    return {p.relative_to(repo).as_posix(): sha256(p) for p in files if p.name != ".gitignore"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The tiny pipeline run once with DVC; Python's import log says which modules each stage ran."""
    repo = copy_repo(tmp_path_factory.mktemp("reliability"), SLOW_TINY)
    env = env_without_tracking_uri()
    env["PYTHONPROFILEIMPORTTIME"] = "1"  # every module a process imports, on stderr
    env["PYTHONUNBUFFERED"] = "1"
    # One stream, so that each stage's imports follow its "Running stage" line.
    result = subprocess.run(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log = result.stdout
    assert result.returncode == 0, log[-3000:]
    assert stages_run(log) == set(STAGES)
    return {"repo": repo, "log": log, "hashes": output_hashes(repo)}


def declared_code(deps: list[str]) -> set[str]:
    """The source files a stage's deps cover (a folder dep covers every .py file in it), with ``${model.source}``
    read from params.yaml as DVC interpolates it."""
    from dnnprobe.stages.params import load_params

    source = load_params(REPO / "params.yaml").model.source
    files = set()
    for dep in deps:
        dep = dep.replace("${model.source}", source)
        path = REPO / dep
        if dep.startswith("src/"):
            files |= {f.relative_to(REPO).as_posix() for f in path.rglob("*.py")} if path.is_dir() else {dep}
    return files


STAGE_PYTHON = "PYTHONPATH=src python"  # how dvc.yaml starts every stage


def test_a_stage_runs_the_code_of_the_checkout_it_runs_in(tmp_path):
    """A queued or --temp experiment runs in a copy of the repository: its stages must import the copy's
    src/ (the code its dvc.lock records), not the tree the virtual environment's editable install
    points to. Run here as DVC runs a stage: a shell, in the copy, with the stages' prefix."""
    copy = copy_repo(tmp_path, TINY)
    result = subprocess.run(f"{STAGE_PYTHON} -c 'import dnnprobe.stages.gram as m; print(m.__file__)'", shell=True,
                            cwd=copy, env=env_without_tracking_uri(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == (copy / "src/dnnprobe/stages/gram.py").resolve()


# Declared code that this test's params (the demo source, torchvision) do not reach: stimuli.source=bold5000
# runs the first two; the check stage builds model.source's architecture, and timm, open_clip, hf read weights.py.
RUN_FOR_OTHER_PARAMS = {"src/dnnprobe/stimuli/bold5000.py", "src/dnnprobe/stimuli/download.py",
                        "src/dnnprobe/network/weights.py"}


def test_each_stage_runs_exactly_the_code_it_declares(pipeline):
    """Every dnnprobe module a stage imports is a declared dependency, and every declared one is imported;
    no stage runs the `dnnprobe` command module (it only routes people to the stages)."""
    parts = re.split(r"Running stage '(\w+)'", pipeline["log"])
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, log in zip(parts[1::2], parts[2::2]):
        modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(dnnprobe(?:\.\w+)*)\s*$", log, re.M))
        # the stage module itself runs as __main__ (python -m), so the import log does not name it
        assert stages[name]["cmd"].startswith(f"{STAGE_PYTHON} -m dnnprobe.stages.{name} "), name
        assert "dnnprobe.cli" not in modules, name
        files = {f"src/dnnprobe/stages/{name}.py"}
        for module in modules:
            path = "src/" + module.replace(".", "/")
            files.add(path + "/__init__.py" if (REPO / path).is_dir() else path + ".py")
        declared = declared_code(stages[name]["deps"])
        assert not files - declared, f"stage {name} runs {sorted(files - declared)} but dvc.yaml does not list them"
        unused = {f for f in declared - files if not f.startswith("src/dnnprobe/core/")} - RUN_FOR_OTHER_PARAMS
        assert not unused, f"stage {name} lists {sorted(unused)} in dvc.yaml but does not run them"


# The code that reads a stage's params: its stage module, and the functions it hands `params` to.
PARAM_READERS = {stage: [f"dnnprobe.stages.{stage}"] for stage in STAGES}
PARAM_READERS["probe"] += ["dnnprobe.probe.decoders:ProbeSettings.from_params", "dnnprobe.probe.summary:run_summary",
                           "dnnprobe.probe.refit:save_probe_models"]
for _stage in ("check", "probe"):
    PARAM_READERS[_stage] += ["dnnprobe.probe.targets:decoded_targets", "dnnprobe.probe.targets:group_column"]


def test_every_parameter_a_stage_reads_is_declared():
    import importlib

    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, readers in PARAM_READERS.items():
        keys = declared[stage].get("params", [])
        sources = []
        for reader in readers:
            module, _, attributes = reader.partition(":")
            target = importlib.import_module(module)
            for attribute in filter(None, attributes.split(".")):
                target = getattr(target, attribute)
            sources.append(inspect.getsource(target))
        read = set(re.findall(r"(?<![.\w])params\.(?!yaml\b|flat\b)([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", "\n".join(sources)))
        undeclared = {k for k in read if not any(k == p or k.startswith(p + ".") for p in keys)}
        assert not undeclared, f"stage {stage} reads {sorted(undeclared)}, not listed under its params in dvc.yaml"
    from dnnprobe.stages.probe import PARAMS  # what the probe logs to MLflow: all of what it reads

    assert sorted(PARAMS) == sorted(declared["probe"]["params"])


def forget_cached_activations(repo: Path) -> None:
    """Delete DVC's cached copy of the activations, so that the next repro must recompute them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["extract"]["outs"] if o["path"] == ACTIVATIONS)
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if cached.exists():
        cached.unlink()


def interrupt_extraction(repo: Path, signum: int, log_path: Path) -> tuple[int, str, float]:
    """Start `dvc repro` of extract; once its progress bar passes a quarter, signal the whole process
    group (what Ctrl-C or `kill -9 -<pgid>` does). Returns DVC's exit status, its output and the
    fraction of batches done when the signal came.

    Tiny extractions take well under a second, so the group is first stopped (SIGSTOP), checked to
    be mid-write, signalled, then continued: the signal lands before the output could be renamed."""
    data = repo / "data"
    with open(log_path, "w") as log:
        # A terminal's Ctrl-C: SIGINT at its default disposition even when pytest itself runs in the
        # background of a non-interactive shell (which ignores SIGINT, and children inherit that).
        process = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "extract"], cwd=repo,
                                   env=env_without_tracking_uri(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        fraction, deadline = 0.0, time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            done = re.findall(r"extract:\s+(\d+)%", log_path.read_text())
            fraction = int(done[-1]) / 100 if done else 0.0
            if 0.25 <= fraction < 1.0 and list(data.glob(".dnnprobe-tmp-*-activations.act.h5")):
                break
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGSTOP)
        assert process.poll() is None, "extraction ended before it could be interrupted:\n" + log_path.read_text()
        assert list(data.glob(".dnnprobe-tmp-*-activations.act.h5")), "extraction is not writing"
        assert not (data / "activations.act.h5").exists()
        os.killpg(process.pid, signum)
        os.killpg(process.pid, signal.SIGCONT)
        status = process.wait(timeout=120)
    return status, log_path.read_text(), fraction


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_extraction_leaves_nothing_cached_and_resumes_to_the_same_bytes(pipeline, tmp_path, signum):
    repo, reference = pipeline["repo"], pipeline["hashes"][ACTIVATIONS]
    status, log, fraction = interrupt_extraction(repo, signum, tmp_path / "dvc.log")
    assert status != 0 and 0.25 <= fraction < 1.0, log

    # Nothing where DVC would cache it; a SIGKILL leaves only the temporary, which git and DVC ignore.
    assert not (repo / ACTIVATIONS).exists()
    temps = [p.name for p in (repo / "data").glob(".dnnprobe-tmp-*")]
    if signum == signal.SIGINT:
        assert temps == [] and "Aborted!" in log
    else:
        assert len(temps) == 1 and status == -signal.SIGKILL
        ignored = subprocess.run(["git", "check-ignore", "-q", f"data/{temps[0]}"], cwd=repo)
        assert ignored.returncode == 0, "git would offer to commit the half-written temporary"
    changed, warnings = dvc_status(repo)
    assert ".dnnprobe-tmp" not in json.dumps(changed) + warnings
    assert changed["extract"] == [{"changed outs": {ACTIVATIONS: "deleted"}}]
    if signum == signal.SIGKILL:  # DVC notices that the killed run held its lock, and releases it
        assert "had been killed. Auto removed it from the lock file" in warnings
        # DVC may restore the killed stage from its run cache instead of running it: then any other
        # stage that starts removes the dead run's temporary (and its lock file).
        assert stages_run(dvc(repo, "repro", "--force", "--single-item", "report")) == {"report"}
        assert [p.name for p in (repo / "data").glob(".dnnprobe-*")] == []

    # The next repro really recomputes (no cached copy to check out), removes the temporary, and gives
    # the same bytes as the uninterrupted run: so gram and everything after it need not rerun.
    forget_cached_activations(repo)
    log = dvc(repo, "repro")
    assert stages_run(log) == {"extract"}, log
    assert sha256(repo / ACTIVATIONS) == reference
    assert list((repo / "data").glob(".dnnprobe-tmp-*")) == []
    assert changed_stages(repo) == set()


def test_forced_rerun_of_the_whole_pipeline_is_bit_identical(pipeline):
    """Same params and inputs: byte-identical activations, Gram, fold scores, metrics and figures."""
    repo = pipeline["repo"]
    log = dvc(repo, "repro", "--force")
    assert stages_run(log) == set(STAGES)
    again = output_hashes(repo)
    assert again.keys() == pipeline["hashes"].keys()
    assert {path for path in again if again[path] != pipeline["hashes"][path]} == set()
    assert ACTIVATIONS in again and "reports/probe/conv1/score.npy" in again
    assert np.load(repo / "reports/probe/fc2/score.npy").shape == (3,)


@contextlib.contextmanager
def applied(repo: Path, change: tuple):
    """A param set to a value, or a comment appended to a source file, for the block; then undone."""
    target = repo / ("params.yaml" if change[0] == "param" else change[1])
    original = target.read_bytes()
    try:
        if change[0] == "param":
            set_param(repo, change[1], change[2])
        else:
            target.write_bytes(original + b"\n# touched\n")
        yield
    finally:
        target.write_bytes(original)


@pytest.mark.parametrize(
    "change, expected",
    [
        # Any edit of params.yaml runs the params stage too (it checks the whole file, in seconds).
        (("param", "stimuli.demo.seed", 1), {"params", "stimuli"}),
        (("param", "model.seed", 1), {"params", "network", "probe"}),  # probe names its run after the network
        (("param", "extract.compression", "gzip"), {"params", "extract"}),
        (("param", "probe.C", 0.5), {"params", "check", "probe"}),  # check: C auto needs enough per inner fold
        (("param", "pca", 3), {"params", "check", "probe"}),  # checked before extraction, which it never reruns
        (("param", "probe.label", "condition"), {"params", "check", "probe"}),
        (("param", "tracking.experiment", "other"), {"params", "probe", "report"}),  # the report attaches figures to the probe's run
        (("param", "report.confusion_layer", "conv1"), {"params", "report"}),
        # the gram stage has no params; the probe only reads the Gram file; similarity computes narrow layers' Grams with it
        (("code", "src/dnnprobe/gram/writer.py"), {"gram", "similarity"}),
        (("code", "src/dnnprobe/network/layers.py"), {"check", "extract"}),  # layer naming: check and extraction resolve names
        (("code", "src/dnnprobe/probe/pairing.py"), {"probe", "report"}),  # the figure edits no check, extract or similarity
        (("code", "src/dnnprobe/track/keys.py"), {"check", "probe"}),
        (("code", "src/dnnprobe/report/figure.py"), {"report"}),  # a figure change reruns the report only
        (("code", "src/dnnprobe/core/params.py"), set(STAGES)),
        (("code", "src/dnnprobe/cli.py"), set()),  # the command for people: no stage runs it
        *[(("code", f"src/dnnprobe/stages/{stage}.py"), {stage}) for stage in STAGES],
    ],
    ids=lambda c: "-".join(map(str, c[1:])) if isinstance(c, tuple) else None,
)
def test_a_change_marks_exactly_the_stages_that_use_it(pipeline, change, expected):
    repo = pipeline["repo"]
    with applied(repo, change):
        assert changed_stages(repo) == expected
    assert changed_stages(repo) == set()


@pytest.mark.parametrize(
    "change, expected",
    [
        # outputs come out identical, so nothing downstream reruns
        (("param", "stimuli.bold5000.expected_stimuli", 24), {"params", "stimuli"}),
        (("code", "src/dnnprobe/stimuli/demo.py"), {"stimuli"}),
        (("param", "report.confusion_layer", "conv1"), {"params", "report"}),
    ],
    ids=["stimuli-param", "demo-code", "report-param"],
)
def test_dvc_repro_reruns_exactly_those_stages(pipeline, change, expected):
    repo = pipeline["repo"]
    with applied(repo, change):
        assert stages_run(dvc(repo, "repro")) == expected
    dvc(repo, "repro")  # back to the committed state (DVC restores it from its run cache)
    assert changed_stages(repo) == set()
    assert output_hashes(repo)[ACTIVATIONS] == pipeline["hashes"][ACTIVATIONS]
