"""Will the gram stage's work fit in memory? Estimated per layer before any work (layers are done one
at a time) and refused with one line instead of being killed by the operating system half way.

With side = min(n_stim, d), the matrix the gram stage stores for the layer, the peak is the float64
accumulator, 8 side^2, plus fixed room (:data:`dnnprobe.compute.memory.FIXED_BYTES`). It does not grow
with the layer's width beyond the stored matrix. With a CUDA ``probe.device`` the accumulator lives in
GPU memory, checked against what the GPU has free; the host then holds the finished matrix.
"""

from __future__ import annotations

from dnnprobe.compute import memory


def gram_stage_bytes(n_stim: int, n_units: int) -> int:
    """Peak bytes of the gram stage for one layer (host, or GPU with a CUDA device)."""
    side = min(n_stim, n_units)
    return 8 * side * side + memory.FIXED_BYTES


def check_gram_stage(n_stim: int, n_units: int, layer: str, ops) -> None:
    """Raise DnnprobeError (one line) if the gram stage cannot hold this layer's matrix (on a GPU, the
    host still receives the finished float64 matrix)."""
    side = min(n_stim, n_units)
    memory.check_layer(gram_stage_bytes(n_stim, n_units), layer, side, ops)
    if memory.device_available_bytes(ops) is not None:
        memory.refuse_layer(gram_stage_bytes(n_stim, n_units), memory.available_bytes(), "host", layer, side,
                            f"leave {layer} out of extract.layers, or use a machine with more memory")
