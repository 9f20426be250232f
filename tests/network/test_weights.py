"""Weights files: a file torch.save cannot have written is named as such in one line; a pickle that
would run code is refused."""

from __future__ import annotations

import pickle

import pytest

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.weights import load_state_dict_file, load_weights_file


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello\n", "it starts with 'hello', not a torch.save archive"),
        (b"", "empty file"),
        (b"\n<!DOCTYPE html>\n<html><head><title>Sign in</title>", "it starts with '<!DOCTYPE html>', not a torch.save archive"),
        (b'{"conv1.weight": [0.1, 0.2, 0.3, 0.4]}', """it starts with '{"conv1.weight": [0.1, 0...', not a torch.save archive"""),
        (b"\x89PNG\r\n\x1a\nrest", "it starts with b'\\x89PNG\\r\\n\\x1a\\n', not a torch.save archive"),
        (len(b'{"w":{}}').to_bytes(8, "little") + b'{"w":{}}', "a safetensors file, not a torch.save archive; "
         "give it the .safetensors suffix"),
    ],
)
def test_a_file_torch_save_cannot_have_written_is_named_as_such(tmp_path, content, reason):
    path = tmp_path / "mine.pt"
    path.write_bytes(content)
    with pytest.raises(DnnprobeError) as caught:
        load_state_dict_file(path)
    assert str(caught.value) == f"{path}: not a PyTorch weights file ({reason})"


def test_a_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": Payload()}, protocol=2))
    with pytest.raises(DnnprobeError, match="not a loadable state_dict"):
        load_weights_file(path)
