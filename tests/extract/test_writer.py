"""The .act.h5 writer: DNNBrain layout, streamed row blocks and chunk-layout batches, atomic on failure."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.writer import ActivationWriter


def test_written_file_is_readable_by_dnnbrain_rules(tmp_path):
    """DNNBrain's Activation.load: every root dataset is a layer, read as an (n_stim, ...) array."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((10, 24)).astype(np.float32)
    with ActivationWriter(tmp_path / "a.act.h5", 10, {"fc1": (24, 1, 1)}, rows_per_chunk=4) as writer:
        writer.write({"fc1": data[:4]})
        writer.write({"fc1": data[4:]})
    with h5py.File(tmp_path / "a.act.h5", "r") as f:
        loaded = {key: np.asarray(f[key]) for key in f.keys()}
    assert list(loaded) == ["fc1"]
    np.testing.assert_array_equal(loaded["fc1"][:, :, 0, 0], data)


def test_writer_failure_leaves_no_file(tmp_path):
    target = tmp_path / "a.act.h5"
    with pytest.raises(RuntimeError, match="only 4 of 10 rows"):
        with ActivationWriter(target, 10, {"fc1": (3, 1, 1)}) as writer:
            writer.write({"fc1": np.zeros((4, 3))})
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_gives_a_clear_error_and_no_file(tmp_path, monkeypatch):
    target = tmp_path / "a.act.h5"

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.raises(DnnprobeError, match="writing activations failed .*No space left on device"):
        with ActivationWriter(target, 10, {"fc1": (3, 1, 1)}, rows_per_chunk=2) as writer:
            monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
            for start in range(0, 10, 2):
                writer.write({"fc1": np.zeros((2, 3))})
    assert list(tmp_path.iterdir()) == []


# ---- batches handed over in chunk layout (the extractor's route) ------------------------------


def as_blocks(rows: np.ndarray, shape) -> np.ndarray:
    """(count, n_chn, n_row, n_col) rows in the writer's chunk layout, zero-padded."""
    n_blocks, per, channels = shape[:3]
    blocks = np.zeros(shape, dtype=rows.dtype)
    for block in range(n_blocks):
        part = rows[:, block * channels:(block + 1) * channels]
        blocks[block, :len(rows), :part.shape[1]] = part
    return blocks


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_blocks_in_chunk_layout_land_in_the_right_rows_and_channels(tmp_path, monkeypatch, compression):
    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 4 * 3 * 2 * 2 * 4)  # 3 channels per chunk: 7 = 3 + 3 + 1
    data = np.random.default_rng(5).standard_normal((10, 7, 2, 2)).astype(np.float32)
    released = []
    with ActivationWriter(tmp_path / "b.act.h5", 10, {"conv": (7, 2, 2)}, rows_per_chunk=4, compression=compression) as writer:
        shape = writer.block_shape("conv")
        assert shape == (3, 4, 3, 2, 2)
        for start in (0, 4, 8):  # the last batch has 2 rows
            rows = data[start:start + 4]
            writer.write_blocks({"conv": as_blocks(rows, shape)}, len(rows), release=lambda s=start: released.append(s))
    with h5py.File(tmp_path / "b.act.h5", "r") as f:
        np.testing.assert_array_equal(f["conv"][:], data)
    assert released == [0, 4, 8]


def test_blocks_that_do_not_fill_whole_chunks_are_refused(tmp_path):
    with ActivationWriter(tmp_path / "b.act.h5", 10, {"fc1": (3, 1, 1)}, rows_per_chunk=4) as writer:
        shape = writer.block_shape("fc1")
        with pytest.raises(ValueError, match="do not fill whole chunks of 4 rows"):
            writer.write_blocks({"fc1": np.zeros(shape, np.float32)}, 3)  # a short batch that is not the last
        with pytest.raises(ValueError, match=r"expected \(1, 4, 3, 1, 1\) float32, each block C-contiguous"):
            writer.write_blocks({"fc1": np.zeros(shape, np.float64)}, 4)
        for _ in range(2):
            writer.write_blocks({"fc1": np.ones(shape, np.float32)}, 4)
        writer.write_blocks({"fc1": np.ones(shape, np.float32)}, 2)
    with h5py.File(tmp_path / "b.act.h5", "r") as f:
        assert f["fc1"].shape == (10, 3, 1, 1) and (f["fc1"][:] == 1).all()


def test_disk_full_while_writing_blocks_releases_the_buffers_and_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "a.act.h5"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    released = []
    monkeypatch.setattr("dnnprobe.extract.writer.os.pwrite", full)
    with pytest.raises(DnnprobeError, match="writing activations failed .*No space left on device"):
        with ActivationWriter(target, 10, {"fc1": (3, 1, 1)}, rows_per_chunk=2) as writer:
            blocks = {"fc1": np.zeros(writer.block_shape("fc1"), np.float32)}
            for _ in range(5):
                writer.write_blocks(blocks, 2, release=lambda: released.append(1))
    assert released  # a producer recycling buffers is never left waiting for them
    assert list(tmp_path.iterdir()) == []


def _layer_shapes(path) -> dict[str, tuple[int, int, int]]:
    with h5py.File(path, "r") as f:
        return {name: f[name].shape[1:] for name in f.attrs["layer_order"]}


def test_the_size_estimate_bounds_the_tiny_alexnet_file(tiny_activations):
    """AlexNet's 14 tutorial layers, 24 stimuli, batches of 8: the file (padded chunks and HDF5's metadata)."""
    from dnnprobe.extract.writer import stored_bytes

    real = tiny_activations.stat().st_size
    estimate = stored_bytes(24, _layer_shapes(tiny_activations), "float32", 8)
    assert real <= estimate <= real * 1.02, (estimate, real)


@pytest.mark.parametrize(
    "n_stim, shapes, rows, dtype",
    [
        (24, {"conv1": (64, 55, 55), "fc": (4096, 1, 1), "head": (3, 1, 1)}, 8, "float32"),  # 64 channels in chunks of 43
        (30, {"conv": (96, 27, 27), "narrow": (7, 3, 3)}, 7, "float16"),  # edge chunks in rows and channels
        (200, {f"l{i}": (5, 1, 1) for i in range(20)}, 8, "float32"),  # metadata-heavy: 20 layers, 25 chunks each
        # 8,192 aligned chunks of exactly 4 KiB, 2,048 of 16 KiB: a B-tree node between two chunks costs a 4 KiB slot
        # (72 B per chunk, the unaligned layout's figure, fell 2 kB short of the first file)
        (8192, {"fc": (1024, 1, 1)}, 1, "float32"),
        (2048, {"fc": (4096, 1, 1)}, 1, "float32"),
    ],
    ids=["alexnet-conv1-pads", "rows-and-channels-pad", "many-small-layers", "aligned-4k-chunks", "aligned-16k-chunks"],
)
def test_the_size_estimate_counts_padded_chunks_and_metadata(tmp_path, monkeypatch, n_stim, shapes, rows, dtype):
    """HDF5 stores edge chunks whole: the estimate is the file's size from above, within 2 %, and it is what the
    free-space refusal compares (a disk holding only the activations' own bytes is refused)."""
    import math
    import shutil

    from dnnprobe.extract.writer import stored_bytes

    path = tmp_path / "a.act.h5"
    with ActivationWriter(path, n_stim, shapes, dtype=dtype, rows_per_chunk=rows,
                          layer_attrs={layer: {"module": "features.0"} for layer in shapes},
                          file_attrs={"preprocessing": "resize 224x224 bilinear, mean 0.485 0.456 0.406"}) as writer:
        for start in range(0, n_stim, rows):
            count = min(rows, n_stim - start)
            writer.write({layer: np.ones((count, *shape), dtype) for layer, shape in shapes.items()})
    real, estimate = path.stat().st_size, stored_bytes(n_stim, shapes, dtype, rows)
    assert real <= estimate <= real * 1.02 + 16384, (estimate, real)

    data = n_stim * sum(math.prod(shape) for shape in shapes.values()) * np.dtype(dtype).itemsize
    assert data < real  # the activations alone would not fit
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=data))
    with pytest.raises(DnnprobeError, match=f"needs {estimate / 1e6:,.0f} MB but its disk has {data / 1e6:,.0f} MB free"):
        with ActivationWriter(tmp_path / "b.act.h5", n_stim, shapes, dtype=dtype, rows_per_chunk=rows):
            pass
    assert not (tmp_path / "b.act.h5").exists()


# ---- chunks written at their places in the file (O_DIRECT where the disk allows it) -----------


def _write_in_blocks(path, data, rows, aligned, direct_io=True):
    """data (n, n_chn, n_row, n_col) through write_blocks, from aligned_blocks buffers (the extractor's) or plain arrays."""
    import torch

    from dnnprobe.extract.buffers import aligned_blocks

    with ActivationWriter(path, len(data), {"conv": data.shape[1:]}, rows_per_chunk=rows, direct_io=direct_io) as writer:
        shape = writer.block_shape("conv")
        for start in range(0, len(data), rows):
            part = data[start:start + rows]
            blocks = as_blocks(np.pad(part, ((0, rows - len(part)), (0, 0), (0, 0), (0, 0))), shape)
            if aligned:
                buffer = aligned_blocks(shape, torch.float32).numpy()
                buffer[...] = blocks
                blocks = buffer
            writer.write_blocks({"conv": blocks}, len(part))
        return writer._chunk_writer is not None and writer._chunk_writer.direct is not None


@pytest.fixture
def wide_layer():
    """Chunks of 8 rows x 7 channels x 5 x 5 float32 = 5,600 bytes: above ALIGNMENT, not a multiple of it."""
    return np.random.default_rng(7).standard_normal((20, 9, 5, 5)).astype(np.float32)


def test_chunks_are_aligned_and_the_file_is_the_same_by_every_route(tmp_path, monkeypatch, wide_layer):
    """Aligned buffers on a disk with O_DIRECT, plain arrays (page cache), direct_io off (extraction on a GPU), a
    file system without O_DIRECT: the same values and the same bytes; every chunk of ALIGNMENT bytes or more
    starts at a multiple of it."""
    from dnnprobe.extract.writer import ALIGNMENT

    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 8 * 7 * 25 * 4)
    direct = _write_in_blocks(tmp_path / "direct.act.h5", wide_layer, 8, aligned=True)
    _write_in_blocks(tmp_path / "plain.act.h5", wide_layer, 8, aligned=False)
    assert not _write_in_blocks(tmp_path / "cached.act.h5", wide_layer, 8, aligned=True, direct_io=False)
    monkeypatch.delattr("os.O_DIRECT")
    _write_in_blocks(tmp_path / "no_direct.act.h5", wide_layer, 8, aligned=True)
    monkeypatch.delattr("os.pwrite")  # Windows: HDF5 writes each chunk at its place
    _write_in_blocks(tmp_path / "no_pwrite.act.h5", wide_layer, 8, aligned=True)

    with h5py.File(tmp_path / "direct.act.h5", "r") as f:
        np.testing.assert_array_equal(f["conv"][:], wide_layer)
        assert f["conv"].chunks == (8, 7, 5, 5)
        places = []
        f["conv"].id.chunk_iter(lambda info: places.append(info.byte_offset))
        assert len(places) == 6 and all(place % ALIGNMENT == 0 for place in places)
    first = (tmp_path / "direct.act.h5").read_bytes()
    for other in ("plain", "cached", "no_direct", "no_pwrite"):
        assert (tmp_path / f"{other}.act.h5").read_bytes() == first, other
    if not direct:
        pytest.skip(f"{tmp_path} has no O_DIRECT: only the page-cache route ran")


def test_a_disk_that_refuses_o_direct_writes_falls_back_to_the_page_cache(tmp_path, monkeypatch, wide_layer):
    """EINVAL from an O_DIRECT write (a disk with blocks larger than ALIGNMENT) is not an error: that chunk and
    the rest go through the page cache, the file holds every value, and no descriptor is left open."""
    import os

    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 8 * 7 * 25 * 4)
    real_pwrite, refused = os.pwrite, []

    def pwrite(fd, data, offset):
        if fcntl_flags(fd) & getattr(os, "O_DIRECT", 0):
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr("dnnprobe.extract.writer.os.pwrite", pwrite)
    before = _open_descriptors()
    _write_in_blocks(tmp_path / "a.act.h5", wide_layer, 8, aligned=True)
    assert _open_descriptors() == before  # the refused O_DIRECT descriptor is closed too
    with h5py.File(tmp_path / "a.act.h5", "r") as f:
        np.testing.assert_array_equal(f["conv"][:], wide_layer)
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    assert len(refused) <= 1  # tried once (none where the file system has no O_DIRECT), then never again


def fcntl_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _open_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
