"""The check stage: what the table and params.yaml reveal fails in seconds, before extraction."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import assert_nothing_written, assert_one_line_error, cli, rgb_image
from dnnprobe.core.hashing import file_sha256
from dnnprobe.stimuli.table import ImageList, StimulusTable


def own_copy(tiny_stimuli: Path, folder: Path, labels: list[str] | None = None) -> Path:
    """The tiny demo table and its images in `folder` (data/stimuli.stim.csv, data/images), with other labels."""
    shutil.copytree(tiny_stimuli.parent / "images", folder / "images")
    table = StimulusTable.read(tiny_stimuli)
    if labels is not None:
        table.columns["label"] = labels
    table.write(folder / "stimuli.stim.csv")
    return folder / "stimuli.stim.csv"


BALANCED = ["0", "1"] * 12


def assert_check_fails(table, sets, fragments):
    """The check stage with `sets` on `table` fails in one line holding `fragments` and writes no image list."""
    out = table.parent / "images.sha256"
    result = cli("check", *[arg for s in sets for arg in ("--set", s)], "--table", table, "--out", out)
    assert_one_line_error(result, "check", *fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    "labels, sets, fragments",
    [
        (["0"] * 24, [], ["stimuli.stim.csv: column 'label' has a single class (0); nothing to decode"]),
        (["0"] * 22 + ["1"] * 2, [], ["column 'label': class 1 has 2 stimuli, fewer than cv=3 folds"]),
        (BALANCED, ["probe.label=animacy"], ["stimuli.stim.csv: no column 'animacy' (columns: stimID, label, condition)"]),
        (BALANCED, ["pca=20"], ["pca=20 is larger than the smallest training fold (16 stimuli): set pca <= 16 "
                                "(at cv=3 a training fold holds 16 of the 24 stimuli; more folds or more stimuli hold more)"]),
        (["0", "1"] * 11 + ["1", "99999999999999999999"], [],
         ["column 'label', stimulus row 24", "'99999999999999999999' is too large for a class label"]),
        (["0.0", "1.0"] * 11 + ["1.0", "0.5"], [],  # 0.0 is class 0 (DNNBrain's reading); 0.5 is no class
         ["stimuli.stim.csv: column 'label' is not an integer class label (stimulus row 24,", ": '0.5')"]),
        (BALANCED, ["extract.layers=[conv1, fc6 (relu)]"],
         ["params.yaml: extract.layers: layer name 'fc6 (relu)' cannot be logged to MLflow"]),
        (BALANCED, ["extract.layers=[" + "a" * 201 + "]"], ["at most 200 characters"]),
    ],
    ids=["single-class", "class-below-cv", "no-label-column", "pca-above-fold", "label-overflows-int64", "label-not-whole",
         "layer-name-mlflow-rejects", "layer-name-too-long"],
)
def test_what_the_table_and_params_reveal_fails_at_the_check_stage(tmp_path, tiny_stimuli, labels, sets, fragments):
    assert_check_fails(own_copy(tiny_stimuli, tmp_path / "data", labels), sets, fragments)


def test_image_list_follows_the_table_and_ignores_the_labels(tmp_path, tiny_stimuli):
    table = own_copy(tiny_stimuli, tmp_path / "a")
    relabelled = own_copy(tiny_stimuli, tmp_path / "b", labels=["1", "0"] * 12)
    for path in (table, relabelled):
        assert cli("check", "--table", path, "--out", path.parent / "images.sha256").exit_code == 0
    first, second = (ImageList.read(p.parent / "images.sha256") for p in (table, relabelled))
    assert first.stim_ids == StimulusTable.read(table).stim_ids
    assert (tmp_path / "a" / "images.sha256").read_bytes() == (tmp_path / "b" / "images.sha256").read_bytes()
    # the list's own sha256 is the stimulus set's identity, recorded in the table by the stimuli stage
    assert first.sha256 == StimulusTable.read(table).header["images_sha256"]
    assert first.checksums[0] == file_sha256(tmp_path / "a" / "images" / first.stim_ids[0])


def test_images_that_are_not_the_tables_are_refused(tmp_path, tiny_stimuli):
    table = own_copy(tiny_stimuli, tmp_path / "data")
    stim_id = StimulusTable.read(table).stim_ids[3]
    rgb_image(tmp_path / "data" / "images" / stim_id, value=7, size=64)  # another image under the same name
    result = cli("check", "--table", table, "--out", tmp_path / "data" / "images.sha256")
    assert_one_line_error(result, "check", "stimuli.stim.csv: the images in", "are not the ones this table was written "
                          "with (images_sha256 differs); rerun the stimuli stage")
    assert_nothing_written(tmp_path / "data" / "images.sha256")


def test_a_class_too_small_for_the_folds_is_named_by_its_condition(tmp_path, tiny_stimuli):
    """A class is named as the table names it (`condition`: the class folder of a folder source)."""
    table_path = own_copy(tiny_stimuli, tmp_path / "data")
    table = StimulusTable.read(table_path)
    table.columns["label"] = ["0"] * 22 + ["1"] * 2
    table.columns["condition"] = ["dog"] * 22 + ["cat"] * 2
    table.write(table_path)
    result = cli("check", "--table", table_path, "--out", tmp_path / "data" / "images.sha256")
    assert_one_line_error(result, "check", "column 'label': class 1 (cat) has 2 stimuli, fewer than cv=3 folds "
                          "(set cv <= 2, or add stimuli to that class)")


def _with_images(tiny_stimuli: Path, folder: Path, replace: dict) -> Path:
    """The tiny demo set with some images replaced (row -> a function writing the new file), its table no
    longer pinning the images' sha256."""
    table_path = own_copy(tiny_stimuli, folder)
    table = StimulusTable.read(table_path)
    for row, write in replace.items():
        write(table.image_paths()[row - 1])
    del table.header["images_sha256"]
    table.write(table_path)
    return table_path


def _float_tiff(path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)).save(path, format="TIFF")


def test_an_image_extraction_could_not_decode_fails_at_the_check_stage_naming_its_row(tmp_path, tiny_stimuli):
    """Bit depth and pixel format are checked once per stimulus set, here, with extraction's own words."""
    table = _with_images(tiny_stimuli, tmp_path / "data", {6: _float_tiff})
    result = cli("check", "--table", table, "--out", tmp_path / "data" / "images.sha256")
    image = StimulusTable.read(table).image_paths()[5]
    assert_one_line_error(result, "check", f"stimuli.stim.csv, stimulus row 6: {image}: float pixels (values from -1 "
                          "to 1); only 0..1 or 0..255 can be read as an image: save it with 8 or 16 bits per channel")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["images", "stimuli.stim.csv"]  # no list, no notes


def test_the_check_stage_records_and_prints_each_images_notes_once_for_extraction(tmp_path, tiny_stimuli):
    from PIL import Image

    from helpers import corrupt_jpeg
    from dnnprobe.stimuli.images import read_image_notes

    def animated(path: Path) -> None:
        frames = [Image.new("RGB", (16, 16), (value, value, value)) for value in (10, 200, 90)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])

    table = _with_images(tiny_stimuli, tmp_path / "data", {3: corrupt_jpeg, 9: animated})
    out = tmp_path / "data" / "images.sha256"
    result = cli("check", "--table", table, "--out", out)
    assert result.exit_code == 0, result.output
    images = ImageList.read(out)
    bad, moving = images.image_paths()[2], images.image_paths()[8]
    expected = [f"{bad}: Corrupt JPEG data: 2507 extraneous bytes before marker 0xd9; decoded as PIL decodes it",
                f"{moving}: 3 frames (animated or multi-page); the first is used"]
    assert result.stderr.splitlines()[:-1] == expected  # then 'dnnprobe check: done in ... s'
    assert read_image_notes(out, images.sha256, images.stim_ids) == expected
    assert (tmp_path / "data" / "images.notes.json").is_file()


def table_with_groups(tiny_stimuli: Path, folder: Path, labels: list[str], groups: list[str]) -> Path:
    """The tiny demo table with other labels and a ``concept`` column of groups."""
    table_path = own_copy(tiny_stimuli, folder, labels)
    table = StimulusTable.read(table_path)
    table.columns["concept"] = groups
    table.write(table_path)
    return table_path


PAIRS = [f"g{i // 2}" for i in range(24)]  # 12 groups of two stimuli, each of one class (labels 0, 1, 0, 1 ... by pair)
PAIRED = [str((i // 2) % 2) for i in range(24)]


@pytest.mark.parametrize(
    "labels, groups, sets, fragments",
    [
        # probe.C: auto (or a list) splits each training fold into 5 inner folds: checked as the outer folds are
        (["0"] * 18 + ["1"] * 6, None, ["probe.C=auto"],
         ["column 'label': class 1 has 4 stimuli in training fold 1 (cv=3), fewer than the 5 inner folds of probe.C's "
          "search (auto or a list): set probe.C to a number, or add stimuli to that class"]),
        (BALANCED, None, ["probe.C=[0.1, 1]", "cv=2", "pca=10"],
         ["pca=10 is larger than the smallest inner training fold (9 stimuli, in the 5 inner folds"]),
        (BALANCED, None, ["probe.C=auto", "pca=14"],
         ["pca=14 is larger than the smallest inner training fold (12 stimuli, in the 5 inner folds of probe.C's "
          "search (auto or a list)): set pca <= 12, or probe.C to a number"]),
        (["0"] * 18 + ["1"] * 6, PAIRS, ["probe.groups=concept", "probe.C=auto"],
         ["class 1 has 4 stimuli in training fold 1 (cv=3), fewer than the 5 inner folds"]),
        # grouped folds: a class smaller than cv is refused as without groups
        (["0"] * 22 + ["1"] * 2, [f"g{i}" for i in range(24)], ["probe.groups=concept"],
         ["column 'label': class 1 has 2 stimuli, fewer than cv=3 folds (set cv <= 2, or add stimuli to that class)"]),
        (["0"] * 2 + ["1"] * 2 + ["2"] * 20, [f"g{i}" for i in range(24)], ["probe.groups=concept", "pca=2"],
         ["column 'label': class 0 has 2 stimuli, fewer than cv=3 folds"]),
        # a missing group would make every such stimulus one group
        (PAIRED, PAIRS[:3] + [""] + PAIRS[4:9] + ["nan"] + PAIRS[10:20] + ["NA"] + PAIRS[21:],
         ["probe.groups=concept"],
         ["stimuli.stim.csv: probe.groups column 'concept' has no group at stimulus rows 4 (", ": ''), 10 (",
          ": 'nan'), 21 (", ": 'NA'): give every stimulus its group"]),
    ],
    ids=["auto-class-below-inner-cv", "list-pca-above-inner-fold", "auto-pca-above-inner-fold", "grouped-auto-class",
         "grouped-class-below-cv", "grouped-small-classes", "missing-groups"],
)
def test_what_the_folds_cannot_hold_fails_at_the_check_stage(tmp_path, tiny_stimuli, labels, groups, sets, fragments):
    """The probe's inner folds and grouped folds, checked before any work: one line saying what to set."""
    table = (own_copy(tiny_stimuli, tmp_path / "data", labels) if groups is None
             else table_with_groups(tiny_stimuli, tmp_path / "data", labels, groups))
    settings = [arg for s in sets for arg in ("--set", s)]
    result = cli("check", *settings, "--table", table, "--out", tmp_path / "data" / "images.sha256")
    assert_one_line_error(result, "check", *fragments)
    assert not (tmp_path / "data" / "images.sha256").exists()


def test_folds_that_hold_the_search_pass_the_check(tmp_path, tiny_stimuli):
    """probe.C: auto with classes large enough for the inner folds, grouped, passes (and pca at the limit)."""
    table = table_with_groups(tiny_stimuli, tmp_path / "data", PAIRED, PAIRS)
    for sets in (["probe.C=auto", "pca=12"], ["probe.C=auto", "probe.groups=concept"]):
        settings = [arg for s in sets for arg in ("--set", s)]
        result = cli("check", *settings, "--table", table, "--out", tmp_path / "data" / "images.sha256")
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "sets, fragments",
    [
        # a tiny timm ViT, pretrained weights named but not cached: the check reads no weights, only the modules
        (["model.source=timm", "model.arch=vit_tiny_patch16_224", "model.weights=default", "extract.layers=[block1, blok4]"],
         ["extract.layers: unknown layer 'blok4' for vit_tiny_patch16_224; valid names: patch_embed, block1, block2,",
          "block12, norm, head (or any module path, e.g. patch_embed.proj); extract.layers: [] records timm's default layers"]),
        (["extract.layers=[conv1, conv9]"], ["extract.layers: unknown layer 'conv9' for alexnet; valid names: conv1, "]),
    ],
    ids=["timm-vit-typo", "alexnet-typo"],
)
def test_a_layer_name_the_network_lacks_fails_at_the_check_stage(tmp_path, tiny_stimuli, sets, fragments):
    """Checked on the architecture alone, before the network stage loads weights and extraction starts."""
    assert_check_fails(own_copy(tiny_stimuli, tmp_path / "data"), sets, fragments)


def test_layer_names_the_network_has_pass_the_check(tmp_path, tiny_stimuli):
    table = own_copy(tiny_stimuli, tmp_path / "data")
    for sets in (["model.source=timm", "model.arch=vit_tiny_patch16_224", "extract.layers=[block1, blocks.0.attn, head]"],
                 ["extract.layers=[conv1, features.1, classifier.6]"]):
        settings = [arg for s in sets for arg in ("--set", s)]
        result = cli("check", *settings, "--table", table, "--out", tmp_path / "data" / "images.sha256")
        assert result.exit_code == 0, result.output
