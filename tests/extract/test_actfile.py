"""The .act.h5 reader: DNNBrain-written files, layout validation, damaged and linked files, locks."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from helpers import one_line_error

from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file


def write_dnnbrain_style(path, layers):
    """An activation file as DNNBrain writes it: root datasets, gzip, float32, no attributes."""
    with h5py.File(path, "w") as f:
        for name, array in layers.items():
            f.create_dataset(name, data=array.astype(np.float32), compression="gzip")


def test_reads_a_dnnbrain_written_file_and_computes_its_gram(tmp_path):
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((9, 4, 3, 3))
    fc = rng.standard_normal((9, 7, 1, 1))
    write_dnnbrain_style(tmp_path / "d.act.h5", {"conv5": conv, "fc1": fc})
    with ActivationFile(tmp_path / "d.act.h5") as acts:
        assert sorted(acts.layers) == ["conv5", "fc1"] and acts.n_stim == 9
        np.testing.assert_allclose(acts.read_layer("conv5"), conv.reshape(9, -1).astype(np.float32))
    write_gram_file(tmp_path / "d.act.h5", tmp_path / "g.h5", progress=False)
    with GramFile(tmp_path / "g.h5") as grams:
        x = conv.reshape(9, -1).astype(np.float32).astype(np.float64)
        x -= x.mean(axis=0)  # the Gram of the activations centred over all stimuli (dnnprobe.gram.writer)
        np.testing.assert_allclose(grams.gram("conv5"), x @ x.T, rtol=1e-5, atol=1e-5)
        assert grams.n_units("fc1") == 7


def test_gram_of_a_float16_file_uses_the_stored_values(tmp_path, monkeypatch):
    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 8 * 9 * 2 * 2)  # several blocks
    data = np.random.default_rng(4).standard_normal((20, 12 * 3 * 3)).astype(np.float16)
    with ActivationWriter(tmp_path / "h.act.h5", 20, {"conv": (12, 3, 3)}, dtype="float16", rows_per_chunk=8) as writer:
        writer.write({"conv": data})
    write_gram_file(tmp_path / "h.act.h5", tmp_path / "g.h5", progress=False)
    x = data.astype(np.float64)
    x -= x.mean(axis=0)  # centred over all stimuli, as the gram stage stores it
    with GramFile(tmp_path / "g.h5") as grams:
        np.testing.assert_allclose(grams.gram("conv"), x @ x.T, rtol=1e-5, atol=1e-4)


def test_column_blocks_cover_every_unit_once_with_a_small_budget(tmp_path, monkeypatch):
    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 8 * 25 * 4 * 2)  # two channels per chunk
    data = np.random.default_rng(2).standard_normal((30, 16 * 5 * 5)).astype(np.float32)
    with ActivationWriter(tmp_path / "a.act.h5", 30, {"conv": (16, 5, 5)}, rows_per_chunk=8) as writer:
        writer.write({"conv": data})
    with ActivationFile(tmp_path / "a.act.h5") as acts:
        assert acts.dataset("conv").chunks == (8, 2, 5, 5)
        blocks = list(acts.column_blocks("conv", max_bytes=30 * 25 * 4 * 5))
        assert [b.shape[1] for b in blocks] == [100] * 4  # whole chunk columns: 4 channels a block
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), data)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: f.create_dataset("x", data=np.zeros((3, 4))), "DNNBrain layout is \\(n_stim, n_chn, n_row, n_col\\)"),
        (lambda f: f.create_group("g"), "is a group"),
        (lambda f: f.create_dataset("x", data=np.zeros((3, 1, 1, 1), dtype=np.int32)), "expected floating point"),
        (lambda f: (f.create_dataset("a", data=np.zeros((3, 1, 1, 1))), f.create_dataset("b", data=np.zeros((4, 1, 1, 1)))), "different numbers of rows"),
        (lambda f: None, "no layer datasets"),
    ],
)
def test_files_not_in_dnnbrain_layout_are_refused(tmp_path, make, message):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        make(f)
    with pytest.raises(DnnprobeError, match=message):
        ActivationFile(tmp_path / "bad.h5")


def test_not_hdf5_missing_layer_and_row_count(tmp_path):
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DnnprobeError, match="not an HDF5 file"):
        ActivationFile(tmp_path / "text.h5")
    with pytest.raises(DnnprobeError, match="activation file not found"):
        ActivationFile(tmp_path / "none.h5")
    write_dnnbrain_style(tmp_path / "d.h5", {"fc1": np.zeros((5, 2, 1, 1))})
    with ActivationFile(tmp_path / "d.h5") as acts:
        with pytest.raises(DnnprobeError, match="no layer 'fc2'"):
            acts.dataset("fc2")
        with pytest.raises(DnnprobeError, match="5 rows, but t.stim.csv lists 6 stimuli"):
            acts.check_rows(6, "t.stim.csv")


def test_non_finite_values_are_reported_with_their_row(tmp_path):
    data = np.ones((6, 3, 1, 1))
    data[4, 1] = np.nan
    write_dnnbrain_style(tmp_path / "d.h5", {"fc1": data})
    with ActivationFile(tmp_path / "d.h5") as acts, pytest.raises(DnnprobeError, match="non-finite values .*row 5, unit 1"):
        acts.read_layer("fc1")


# ---- files whose layers are not plain datasets stored in the file, and damaged files -----------


def external_link(path):
    with h5py.File(path.with_name("other.h5"), "w") as other:
        other.create_dataset("fc1", data=np.ones((3, 2, 1, 1), dtype=np.float32))
    with h5py.File(path, "w") as f:
        f["fc1"] = h5py.ExternalLink("other.h5", "/fc1")


def soft_link(path, target_exists: bool):
    with h5py.File(path, "w") as f:
        if target_exists:
            f.create_dataset("x", data=np.ones((3, 2, 1, 1), dtype=np.float32))
        f["fc1"] = h5py.SoftLink("/x")


def virtual_dataset(path):
    """A virtual layer mapped onto a file that does not exist: h5py would read it as fill values."""
    layout = h5py.VirtualLayout(shape=(3, 2, 1, 1), dtype=np.float32)
    layout[:] = h5py.VirtualSource("missing.h5", "fc1", shape=(3, 2, 1, 1))
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("fc1", layout, fillvalue=0)


def external_raw_storage(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("fc1", shape=(3, 2, 1, 1), dtype=np.float32, external=[("raw.bin", 0, h5py.h5f.UNLIMITED)])


@pytest.mark.parametrize(
    "make, message",
    [
        (external_link, "a.act.h5: layer fc1 is an external link to other.h5:/fc1; "
                        "DNNBrain layout stores each layer's data in the file itself"),
        (lambda p: soft_link(p, target_exists=False), "a.act.h5: layer fc1 is a link to /x, which does not exist"),
        (lambda p: soft_link(p, target_exists=True), "a.act.h5: layer fc1 is a link to /x; "
                                                     "DNNBrain layout stores each layer as a dataset of its own"),
        (virtual_dataset, "a.act.h5: layer fc1 is a virtual dataset \\(data kept in other files: missing.h5\\); "
                          "DNNBrain layout stores each layer's data in the file itself"),
        (external_raw_storage, "a.act.h5: layer fc1 keeps its data in external raw files \\(raw.bin\\); "
                               "DNNBrain layout stores each layer's data in the file itself"),
    ],
    ids=["external-link", "dangling-soft-link", "soft-link", "virtual-dataset", "external-raw-storage"],
)
def test_layers_whose_data_live_outside_the_file_are_refused(tmp_path, make, message):
    """DVC hashes the file's bytes: data reached through a link or a virtual mapping escape the hash."""
    make(tmp_path / "a.act.h5")
    one_line_error(lambda: ActivationFile(tmp_path / "a.act.h5"), f"^{re.escape(str(tmp_path))}/{message}$")


def test_a_folder_is_not_an_activation_file(tmp_path):
    (tmp_path / "a.act.h5").mkdir()
    one_line_error(lambda: ActivationFile(tmp_path / "a.act.h5"), "a.act.h5: is a folder, not an activation file$")


def test_a_layer_without_rows_is_refused(tmp_path):
    write_dnnbrain_style(tmp_path / "a.act.h5", {"fc1": np.zeros((0, 4, 1, 1))})
    one_line_error(lambda: ActivationFile(tmp_path / "a.act.h5"), "a.act.h5: layer fc1 has 0 rows \\(no stimuli\\)$")


def damage_first_chunk(path, layer: str) -> None:
    """Overwrite bytes in the middle of a layer's first stored (compressed) chunk, as a bad disk would."""
    with h5py.File(path, "r") as f:
        chunk = f[layer].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(b"\xff" * 16)


def test_a_damaged_compressed_chunk_is_one_line_naming_the_layer(tmp_path):
    data = np.random.default_rng(5).standard_normal((50, 40, 1, 1))
    write_dnnbrain_style(tmp_path / "a.act.h5", {"fc1": data})
    damage_first_chunk(tmp_path / "a.act.h5", "fc1")
    with ActivationFile(tmp_path / "a.act.h5") as acts:
        one_line_error(lambda: acts.read_layer("fc1"),
                       "a.act.h5: layer fc1 cannot be read \\(.+\\); the file is damaged: rerun the extract stage$")


def test_a_file_another_process_holds_open_for_writing_is_named_as_locked(tmp_path):
    """A notebook holding the file with h5py.File(path, "a"): HDF5 refuses to open it (its file lock),
    which h5py reports as "unable to lock file"; that was called "not an HDF5 file"."""
    import subprocess
    import sys

    path = tmp_path / "a.act.h5"
    with h5py.File(path, "w") as f:
        f["fc1"] = np.ones((4, 3, 1, 1), dtype=np.float32)
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, sys; f = h5py.File({str(path)!r}, 'a'); "
                               "print('open', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        message = one_line_error(lambda: ActivationFile(path), "open for writing in another process")
        assert "HDF5_USE_FILE_LOCKING=FALSE" in message and "not an HDF5 file" not in message
        one_line_error(lambda: GramFile(path), "open for writing in another process")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# ---- chunks read straight from their bytes (ChunkReader), HDF5 where that does not apply ----------


def _reference(path, layer):
    """The layer as HDF5 itself reads it, float32 (n_stim, n_units)."""
    with h5py.File(path, "r") as f:
        return np.asarray(f[layer][()], dtype=np.float32).reshape(f[layer].shape[0], -1)


def _every_read(path, layer, monkeypatch):
    """The layer through column_blocks (fresh and reused buffers, small blocks), row_blocks and read_rows."""
    monkeypatch.setattr("dnnprobe.extract.actfile.ChunkReader.MAX_IOVECS", 6)  # several preadv calls per chunk
    with ActivationFile(path) as acts:
        n = acts.n_stim
        per_unit = acts.n_units(layer) // acts.dataset(layer).shape[1]
        reads = {
            "columns": np.concatenate(list(acts.column_blocks(layer, max_bytes=n * 4 * per_unit * 2)), axis=1),
            "columns reused": np.concatenate([b.copy() for b in acts.column_blocks(layer, max_bytes=n * 4 * per_unit * 2,
                                                                                  reuse_buffers=True)], axis=1),
            "rows": np.concatenate([b for _, b in acts.row_blocks(layer, max_bytes=4 * acts.n_units(layer) * 5)]),
            "some rows": acts.read_rows(layer, np.array([1, 2, 5, n - 3, n - 1]), max_bytes=4 * acts.n_units(layer) * 5),
        }
        used = acts._chunk_reader(layer) is not None
    return reads, used


@pytest.mark.parametrize("dtype", ["float32", "float16", ">f4"])
@pytest.mark.parametrize("layout", ["writer", "h5py default", "unaligned"])
def test_chunks_read_from_their_bytes_equal_hdf5s_reading(tmp_path, monkeypatch, layout, dtype):
    """Edge chunks in rows (19 stimuli, chunks of 4) and channels (7 channels, chunks of 3), any chunk order
    and alignment, float16 and big-endian files: every reader gives HDF5's values, bit for bit."""
    data = np.random.default_rng(3).standard_normal((19, 7, 2, 3)).astype(np.float32)
    path = tmp_path / "a.act.h5"
    if layout == "writer" and dtype != ">f4":
        monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 4 * 3 * 6 * np.dtype(dtype).itemsize)
        with ActivationWriter(path, 19, {"conv": (7, 2, 3)}, dtype=dtype, rows_per_chunk=4) as writer:
            for start in range(0, 19, 4):
                writer.write({"conv": data[start:start + 4]})
    else:
        with h5py.File(path, "w", **({"alignment_threshold": 1, "alignment_interval": 512} if layout == "unaligned" else {})) as f:
            dataset = f.create_dataset("conv", shape=data.shape, dtype=dtype, chunks=(4, 3, 2, 3))
            for start in reversed(range(0, 19, 4)):  # chunks stored in another order than their rows
                dataset[start:start + 4] = data[start:start + 4]
    expected = _reference(path, "conv")
    reads, used = _every_read(path, "conv", monkeypatch)
    assert used
    for name, values in reads.items():
        wanted = expected[[1, 2, 5, 16, 18]] if name == "some rows" else expected
        np.testing.assert_array_equal(values, wanted, err_msg=name)
        assert values.dtype == np.float32


def _beyond_the_extent(f, data):
    """Rows 8.. never written (fill value 0), and a chunk of those rows written outside the extent instead (a
    spatial dimension that may grow): it must not stand in for the missing one."""
    dataset = f.create_dataset("fc", shape=data.shape, maxshape=(None, 5, None, 1), dtype="f4", chunks=(4, 5, 1, 1))
    dataset[:8] = data[:8]
    dataset.id.write_direct_chunk((8, 0, 1, 0), np.full((4, 5, 1, 1), 2, "f4").tobytes())
    data[8:] = 0


def _unnormalised_float(f, data):
    """32-bit floats whose mantissa is stored without the implied leading bit: HDF5 converts them, numpy cannot."""
    kind = h5py.h5t.IEEE_F32LE.copy()
    kind.set_norm(h5py.h5t.NORM_NONE)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((4, 5, 1, 1))
    h5py.h5d.create(f.id, b"fc", kind, h5py.h5s.create_simple(data.shape), dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, data)


@pytest.mark.parametrize("make", ["gzip", "contiguous", "unwritten chunks", "no preadv", "chunk beyond the extent",
                                  "unnormalised float"])
def test_layers_chunks_cannot_be_read_from_are_read_by_hdf5(tmp_path, monkeypatch, make):
    """Compressed, contiguous or partly unwritten layers, a chunk stored outside the dataset's extent, float
    types whose bytes are not numpy's, and systems without preadv (Windows): HDF5 reads them."""
    data = np.random.default_rng(4).standard_normal((10, 5, 1, 1)).astype(np.float32)
    path = tmp_path / "a.act.h5"
    with h5py.File(path, "w") as f:
        if make == "no preadv":
            f.create_dataset("fc", data=data, chunks=(4, 5, 1, 1))
            monkeypatch.delattr("os.preadv")
        elif make == "gzip":
            f.create_dataset("fc", data=data, chunks=(4, 5, 1, 1), compression="gzip")
        elif make == "contiguous":
            f.create_dataset("fc", data=data)
        elif make == "chunk beyond the extent":
            _beyond_the_extent(f, data)
        elif make == "unnormalised float":
            _unnormalised_float(f, data)
        else:  # rows 8.. never written: HDF5 reads its fill value (0) there
            f.create_dataset("fc", shape=data.shape, dtype="f4", chunks=(4, 5, 1, 1))[:8] = data[:8]
            data[8:] = 0
    reads, used = _every_read(path, "fc", monkeypatch)
    assert not used
    np.testing.assert_array_equal(reads["columns"], _reference(path, "fc"))
    if make != "unnormalised float":  # HDF5's conversion of that type rounds the last bits
        np.testing.assert_array_equal(reads["columns"], data.reshape(10, -1))


def test_files_opened_by_another_hdf5_driver_are_read_by_hdf5(tmp_path):
    """HDF5_DRIVER=core (the file in memory) has no file descriptor to read chunks from: HDF5 reads."""
    import os
    import subprocess
    import sys

    data = np.random.default_rng(6).standard_normal((10, 5, 1, 1)).astype(np.float32)
    with h5py.File(tmp_path / "a.act.h5", "w") as f:
        f.create_dataset("fc", data=data, chunks=(4, 5, 1, 1))
    code = ("import sys, numpy as np; from dnnprobe.extract.actfile import ActivationFile\n"
            f"acts = ActivationFile({str(tmp_path / 'a.act.h5')!r})\n"
            "assert acts._file.driver == 'core' and acts._chunk_reader('fc') is None\n"
            "np.save(sys.stdout.buffer, acts.read_layer('fc'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, "HDF5_DRIVER": "core"})
    assert result.returncode == 0, result.stderr.decode()
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(result.stdout)), data.reshape(10, -1))


def test_a_file_cut_short_while_read_is_one_line_naming_the_layer(tmp_path):
    """HDF5 refuses to open a truncated file; one that shrinks while it is read (another process rewriting it)
    gives short reads of its chunks: named, never zeros taken for activations."""
    data = np.ones((64, 300, 1, 1), np.float32)
    with ActivationWriter(tmp_path / "a.act.h5", 64, {"fc": (300, 1, 1)}, rows_per_chunk=16) as writer:
        writer.write({"fc": data})
    with h5py.File(tmp_path / "a.act.h5", "r") as f:
        places = []
        f["fc"].id.chunk_iter(lambda info: places.append(info.byte_offset))
    with ActivationFile(tmp_path / "a.act.h5") as acts:
        assert acts._chunk_reader("fc") is not None
        with open(tmp_path / "a.act.h5", "r+b") as f:
            f.truncate(max(places) + 100)
        one_line_error(lambda: acts.read_layer("fc"),
                       "a.act.h5: layer fc cannot be read \\(.*short read.*\\); the file is damaged: rerun the extract stage$")


def test_chunk_places_without_chunk_iter_come_from_get_chunk_info(tmp_path):
    """h5py before 3.8 (or an HDF5 before 1.12.3) has no chunk_iter: the places are asked chunk by chunk."""
    from dnnprobe.extract.actfile import chunk_places

    with h5py.File(tmp_path / "a.act.h5", "w") as f:
        dataset = f.create_dataset("fc", data=np.ones((10, 5, 1, 1), np.float32), chunks=(4, 5, 1, 1))

        class OlderID:  # the dataset's HDF5 handle without chunk_iter
            def __getattr__(self, name):
                if name == "chunk_iter":
                    raise AttributeError(name)
                return getattr(dataset.id, name)

        class OlderDataset:
            id = OlderID()

            def __getattr__(self, name):
                return getattr(dataset, name)

        places = chunk_places(OlderDataset())
        assert places == chunk_places(dataset) and sorted(places) == [(0, 0, 0, 0), (4, 0, 0, 0), (8, 0, 0, 0)]


def test_short_reads_are_read_again(tmp_path, monkeypatch):
    """preadv may return fewer bytes than asked (Linux: at most about 2 GiB a call; network file systems less):
    the rest is read again, the values are whole."""
    import os

    data = np.random.default_rng(8).standard_normal((19, 7, 2, 3)).astype(np.float32)
    with h5py.File(tmp_path / "a.act.h5", "w") as f:
        f.create_dataset("conv", data=data, chunks=(4, 3, 2, 3))
    real_preadv, calls = os.preadv, []

    def stingy(fd, buffers, offset):
        calls.append(offset)
        first = memoryview(buffers[0]).cast("B")
        return real_preadv(fd, [first[:max(1, first.nbytes // 3)]], offset)  # a third of the first buffer only

    monkeypatch.setattr("dnnprobe.extract.actfile.os.preadv", stingy)
    with ActivationFile(tmp_path / "a.act.h5") as acts:
        assert acts._chunk_reader("conv") is not None
        np.testing.assert_array_equal(acts.read_layer("conv"), data.reshape(19, -1))
    assert len(calls) > 3 * 15  # every chunk took several calls
