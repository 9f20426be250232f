"""The ``stimuli`` section of params.yaml: where the stimulus set comes from (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dnnprobe.core.params import check, checked, one_of

STIMULUS_SOURCES = ("demo", "stimcsv", "folder", "bold5000")
DEFAULT_USER_FOLDER = "data/external"  # where a user's own stimuli go unless stimuli.folder says otherwise


@dataclass(frozen=True)
class DemoParams:
    n_per_class: int = checked(200, check(lambda v: v >= 2, "must be >= 2"))
    image_size: int = checked(256, check(lambda v: v >= 32, "must be >= 32"))
    seed: int = checked(0, check(lambda v: v >= 0, "must be >= 0"))


@dataclass(frozen=True)
class Bold5000Params:
    images_url: str = "https://osf.io/hy5m7/download"
    images_sha256: str = ""
    images_size: int = 0
    table_url: str = "https://osf.io/7c8th/download"
    table_sha256: str = ""
    table_size: int = 0
    download_dir: str = "data/downloads"
    expected_stimuli: int = 4916
    expected_class_sizes: tuple[int, ...] = (2369, 2547)


@dataclass(frozen=True)
class StimuliParams:
    SECTION: ClassVar[str] = "stimuli"
    source: str = checked("demo", one_of(STIMULUS_SOURCES))
    demo: DemoParams = field(default_factory=DemoParams)
    # The user's own stimuli (sources stimcsv and folder) are read from `folder` only: dvc.yaml lists
    # ${stimuli.folder} as a dependency of the stimuli stage, so DVC sees any change to it.
    folder: str = checked(DEFAULT_USER_FOLDER, check(lambda v: v.strip() != "", "must name a folder"))
    table: str = ""  # source stimcsv: the .stim.csv, relative to `folder`; its path= folder must be inside `folder`
    bold5000: Bold5000Params = field(default_factory=Bold5000Params)
