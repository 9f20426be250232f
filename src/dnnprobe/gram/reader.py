"""Read the Gram file the gram stage writes (:mod:`dnnprobe.gram.writer`, whose docstring gives the
layout): per layer an n x n Gram matrix or d x d moments, read by row slices so memory stays bounded.
The probe and the similarity stage read it; neither needs the writer.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.actfile import io_reason, open_checked, refuse_data_outside_the_file
from dnnprobe.gram.moments import LayerMoments

GRAM_FORMAT = 2  # the newest format this reader reads, and the one the writer writes


class _CheckedRows:
    """A stored matrix read by row slices (``rows[lo:hi]``), h5py's read errors as one line."""

    def __init__(self, dataset: h5py.Dataset, path: Path, layer: str) -> None:
        self._dataset, self._path, self._layer = dataset, path, layer
        self.shape, self.dtype = dataset.shape, dataset.dtype

    def __getitem__(self, index) -> np.ndarray:
        try:
            return self._dataset[index]
        except (OSError, RuntimeError) as exc:  # h5py's read errors
            raise DnnprobeError(f"{self._path}: layer {self._layer} cannot be read ({io_reason(exc)}); "
                                "the file is damaged: rerun the gram stage") from exc


class GramFile:
    """Read the matrices written by :func:`dnnprobe.gram.writer.write_gram_file` (format 2), and format 1
    Gram files.

    ``layers`` (in the order written), ``n_stim``, ``attrs`` (the root attributes: provenance).
    Per layer: :meth:`route`, :meth:`n_units`, :meth:`gram` / :meth:`gram_rows` (route ``gram``),
    :meth:`moments` (route ``covariance``). Raises DnnprobeError (one line) for a missing path, a
    folder, a file that is not a Gram file or is of a newer format, or one whose matrices are kept
    outside it (links, virtual datasets: DVC could not see them).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_checked(self.path, "a Gram file", "Gram file not found (run the gram stage: dvc repro gram)",
                                  self._check_layout)
        self.n_stim = int(self._file.attrs["n_stim"])
        self.layers = self._layer_names(self._file)
        self.attrs = dict(self._file.attrs)

    @staticmethod
    def _layer_names(file: h5py.File) -> list[str]:
        return [str(layer) for layer in file.attrs["layers" if "gram_format" in file.attrs else "layer_order"]]

    def _check_layout(self, file: h5py.File) -> None:
        version = int(file.attrs.get("gram_format", 1))
        if version > GRAM_FORMAT:
            raise DnnprobeError(f"{self.path}: Gram file format {version}, newer than this dnnprobe reads "
                                f"({GRAM_FORMAT}); update dnnprobe or rerun the gram stage")
        listing = "layers" if version == 2 else "layer_order"
        if "n_stim" not in file.attrs or listing not in file.attrs:
            raise DnnprobeError(f"{self.path}: not a Gram file written by the gram stage (no n_stim/{listing} attributes)")
        refuse_data_outside_the_file(file, self.path)
        for layer in self._layer_names(file):
            item = file.get(layer)
            if version == 1 and not isinstance(item, h5py.Dataset) or \
                    version == 2 and not (isinstance(item, h5py.Group) and isinstance(item.get("matrix"), h5py.Dataset)):
                raise DnnprobeError(f"{self.path}: no matrix for layer {layer}, which its {listing} lists; rerun the gram stage")
            if version == 2:
                refuse_data_outside_the_file(item, Path(f"{self.path}:/{layer}"))

    @property
    def activations_sha256(self) -> str:
        """sha256 (hex) of the activation file the matrices were computed from; "" for Gram files
        written before the gram stage recorded it."""
        return str(self.attrs.get("activations_sha256", ""))

    def __enter__(self) -> "GramFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def _member(self, layer: str):
        if layer not in self.layers:
            raise DnnprobeError(f"{self.path}: no layer {layer!r} (layers: {', '.join(self.layers)})")
        return self._file[layer]

    def route(self, layer: str) -> str:
        """``gram`` (an n x n Gram matrix) or ``covariance`` (d x d moments about a shift)."""
        member = self._member(layer)
        return str(member.attrs["route"]) if isinstance(member, h5py.Group) else "gram"

    def n_units(self, layer: str) -> int:
        return int(self._member(layer).attrs["n_units"])

    def _matrix(self, layer: str) -> h5py.Dataset:
        member = self._member(layer)
        return member["matrix"] if isinstance(member, h5py.Group) else member

    def matrix_dtype(self, layer: str) -> np.dtype:
        return self._matrix(layer).dtype

    def gram_rows(self, layer: str) -> _CheckedRows:
        """The layer's (n_stim, n_stim) Gram matrix, to be read in row slices (bounded memory)."""
        if self.route(layer) != "gram":
            raise DnnprobeError(f"{self.path}: layer {layer} holds d x d moments (route covariance), not a Gram matrix")
        return _CheckedRows(self._matrix(layer), self.path, layer)

    def gram(self, layer: str) -> np.ndarray:
        """The layer's (n_stim, n_stim) Gram matrix K = X X^T, float64 (for small files and tests)."""
        return np.asarray(self.gram_rows(layer)[()], dtype=np.float64)

    def moments(self, layer: str) -> LayerMoments:
        """The covariance route's :class:`dnnprobe.gram.moments.LayerMoments` (the matrix read in row slices)."""
        if self.route(layer) != "covariance":
            raise DnnprobeError(f"{self.path}: layer {layer} holds a Gram matrix (route gram), not d x d moments")
        group = self._member(layer)
        try:
            sums, shift = group["column_sums"][()], group["shift"][()]
        except (OSError, RuntimeError, KeyError) as exc:
            raise DnnprobeError(f"{self.path}: layer {layer} has no readable column_sums/shift "
                                f"({io_reason(exc)}); rerun the gram stage") from exc
        return LayerMoments(_CheckedRows(group["matrix"], self.path, layer), sums, shift, self.n_stim)
