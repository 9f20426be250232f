"""Source ``local``: the researcher's own network, a Python file in models/external/ and the function that
builds it (docs/models.md's CORnet-Z-like example): built, named, preprocessed, recorded; bad input in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers import REPO, assert_nothing_written, assert_one_line_error, cli
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.network.build import build_from_source, load_network, save_network
from dnnprobe.network.registry import get_source

ARCH = "models/external/cornet_z.py:cornet_z"


def docs_example() -> str:
    """The complete example of docs/models.md's section on your own network (its Python block)."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("## Your own network", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def own_repo(tmp_path, monkeypatch) -> Path:
    """A folder with models/external/cornet_z.py (the docs' example), as the working directory."""
    (tmp_path / "models" / "external").mkdir(parents=True)
    (tmp_path / "models" / "external" / "cornet_z.py").write_text(docs_example())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def local_sets(arch: str = ARCH, file: str = "models/external/cornet_z.py", **more: object) -> list[str]:
    sets = {"model.source": "local", "model.arch": arch, "model.file": file, "extract.layers": "[]", **more}
    return [part for key, value in sets.items() for part in ("--set", f"{key}={value}")]


def test_the_docs_example_builds_seeded_with_its_blocks_as_layers(own_repo):
    source = get_source("local")
    model = source.build(ARCH, 3)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert list(source.friendly_layers(model, ARCH)) == source.default_layers(model, ARCH) == ["V1", "V2", "V4", "IT", "decoder"]
    again, other = source.build(ARCH, 3).state_dict(), source.build(ARCH, 4).state_dict()
    state = model.state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not all(torch.equal(state[k], other[k]) for k in state)
    prep = source.preprocessing(model, ARCH)
    assert (prep.resize, prep.crop, prep.interpolation) == ((224, 224), None, "bilinear")
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)


def test_stated_preprocessing_shorter_side_and_bad_numbers(own_repo):
    source = get_source("local")
    path = own_repo / "models" / "external" / "cornet_z.py"
    text = docs_example()
    path.write_text(text.replace('"resize": "squash"', '"resize": "shorter_side", "shorter_side": 256, "interpolation": "bicubic"'))
    prep = source.preprocessing(None, ARCH)
    assert (prep.resize, prep.crop, prep.interpolation) == ((256,), (224, 224), "bicubic")
    path.write_text(text.replace('"resize": "squash"', '"resize": "stretch"'))
    with pytest.raises(DnnprobeError, match=r"cornet_z.py: PREPROCESS resize 'stretch' is not one of squash, shorter_side"):
        source.preprocessing(None, ARCH)
    path.write_text(text.replace("PREPROCESS = ", "_UNUSED = "))
    with pytest.raises(DnnprobeError, match=r"cornet_z.py states no PREPROCESS dict .* or use extract.preprocess=dnnbrain"):
        source.preprocessing(None, ARCH)


def test_the_sidecar_names_the_file_its_sha256_and_the_function_and_extract_checks_the_file(own_repo):
    model, name, provenance = build_from_source("local", ARCH, "random", 0)
    code = own_repo / "models" / "external" / "cornet_z.py"
    assert provenance == {"source": "local", "code_file": "models/external/cornet_z.py",
                          "code_sha256": file_sha256(code), "function": "cornet_z"}
    info = save_network(model, own_repo / "out" / "network.pt", ARCH, "random", 0, name, provenance)
    sidecar = json.loads((own_repo / "out" / "network.pt.json").read_text())
    assert sidecar["extra"]["code_sha256"] == file_sha256(code) and sidecar["arch"] == ARCH
    assert info.as_attrs()["network_function"] == "cornet_z"
    load_network(own_repo / "out" / "network.pt", ARCH, "local")
    code.write_text(code.read_text() + "\n# edited after the network stage\n")
    with pytest.raises(DnnprobeError, match=r"models/external/cornet_z.py: changed \(or gone\) since the network stage"):
        load_network(own_repo / "out" / "network.pt", ARCH, "local")


def test_a_weights_file_is_loaded_and_its_sha256_recorded(own_repo):
    folder = own_repo / "models" / "external" / "cornet_z"
    folder.mkdir()
    (own_repo / "models" / "external" / "cornet_z.py").rename(folder / "cornet_z.py")
    arch = "models/external/cornet_z/cornet_z.py:cornet_z"
    trained = get_source("local").build(arch, 7)
    torch.save(trained.state_dict(), folder / "trained.pt")
    out = own_repo / "out"
    result = cli("network", *local_sets(arch, "models/external/cornet_z", **{"model.weights": "models/external/cornet_z/trained.pt"}),
                 "--out", out / "network.pt")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "network.pt.json").read_text())
    assert sidecar["source_name"] == "trained.pt" and sidecar["extra"]["file_sha256"] == file_sha256(folder / "trained.pt")
    loaded, _ = load_network(out / "network.pt", arch, "local")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())


BAD = {
    "missing file": (dict(arch="models/external/cornet_s.py:cornet_s", file="models/external"),
                     "model.arch: models/external/cornet_s.py: no such file"),
    "missing function": (dict(arch="models/external/cornet_z.py:cornet_s"),
                         "model.arch: models/external/cornet_z.py has no function 'cornet_s'; its functions: block, cornet_z"),
    "not a module": (dict(arch="models/external/cornet_z.py:not_a_module"),
                     "model.arch: models/external/cornet_z.py:not_a_module() returned OrderedDict, not a torch.nn.Module"),
    "function fails": (dict(arch="models/external/cornet_z.py:block"),
                       "model.arch: models/external/cornet_z.py:block() failed (TypeError: block() missing 2 required"),
    "file fails": (dict(arch="models/external/broken.py:net", file="models/external"),
                   "models/external/broken.py: running the file failed (ModuleNotFoundError: No module named 'cornet_layers' at line 1)"),
    "file does not parse": (dict(arch="models/external/typo.py:net", file="models/external"),
                            "models/external/typo.py: running the file failed (SyntaxError: invalid syntax at line 2)"),
    "outside models/external": (dict(arch="mine/cornet_z.py:cornet_z", file="models/external"),
                                "model.arch: mine/cornet_z.py is outside models/external/; the network's code must be in"),
    "a link out of models/external": (dict(arch="models/external/link.py:cornet_z", file="models/external"),
                                      "model.arch: models/external/link.py (a link to "),
    "not watched": (dict(arch="models/external/cornet_z.py:cornet_z", file="models/external/other.py"),
                    "model.arch's file models/external/cornet_z.py is outside model.file models/external/other.py"),
    "weights not watched": (dict(**{"model.weights": "models/external/w.pt"}),
                            "model.weights models/external/w.pt is outside model.file models/external/cornet_z.py, the one file"),
    "model.file outside": (dict(file="mine"), "params.yaml: model.file mine is outside models/external/"),
    "model.file missing": (dict(file="models/external/cornet_s.py"), "params.yaml: model.file models/external/cornet_s.py does not exist"),
    "no function named": (dict(arch="models/external/cornet_z.py"), "model.arch: 'models/external/cornet_z.py' is not <python file>:<function>"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_work(own_repo, case):
    external = own_repo / "models" / "external"
    with (external / "cornet_z.py").open("a") as handle:
        handle.write("\n\ndef not_a_module():\n    return cornet_z().state_dict()\n")
    (external / "broken.py").write_text("from cornet_layers import V1\n")
    (external / "other.py").write_text("")
    (external / "typo.py").write_text("import torch\ndef net(:\n    pass\n")
    (own_repo / "mine").mkdir()
    (own_repo / "mine" / "cornet_z.py").write_text(docs_example())
    (external / "link.py").symlink_to(own_repo / "mine" / "cornet_z.py")
    torch.save(get_source("local").build(ARCH, 0).state_dict(), external / "w.pt")
    settings, message = BAD[case]
    result = cli("network", *local_sets(**settings), "--out", own_repo / "out" / "network.pt")
    assert_one_line_error(result, "network", message)
    assert_nothing_written(own_repo / "out")


def test_dnnprobe_layers_lists_the_blocks_and_module_paths(own_repo):
    result = cli("layers", *local_sets(), "--set", "extract.preprocess=model")
    assert result.exit_code == 0, result.output
    for line in ("V1", "V2", "V4", "IT", "decoder", "V1.conv", "decoder.linear"):
        assert re.search(rf"^\s*\*?\s*{re.escape(line)}\s", result.output, re.M), (line, result.output)
