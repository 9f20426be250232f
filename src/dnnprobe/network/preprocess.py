"""Preprocessing as numbers: how an image becomes a network's input (``extract.preprocess``).

- ``dnnbrain`` (the default, the tutorial's): DNNBrain's AlexNet test transform, squash to 224 x 224
  (no crop, the aspect ratio changes), ImageNet mean and std, for every network.
- ``model``: the network's own eval transform, as its library defines it (timm's data config,
  OpenCLIP's preprocess config, the Hugging Face image processor, torchvision's ``weights.transforms()``):
  resize the shorter side, centre-crop, the library's interpolation, mean and std.

Both are a :class:`Preprocess` (plain numbers), so extraction keeps one fast route for any network:
the decoding workers resize and crop with PIL and ship uint8 pixels; the main process divides by 255
and normalises per batch (:func:`dnnprobe.extract.forward.to_model_input`). Each library's own transform
does the same PIL resize and crop, so the inputs agree (tested per source).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """An eval transform as numbers.

    ``resize``: (height, width) squashes the image to exactly that size; (size,) scales it so that its
    shorter side is `size` pixels (torchvision's ``Resize(int)``). ``crop``: (height, width) of the
    centre crop after resizing, or None. ``interpolation``: a torchvision ``InterpolationMode`` name.
    ``mean``/``std``: per RGB channel, applied to pixels scaled to [0, 1]. ``crop_offset``: how the centre
    crop's top-left corner is rounded when the margin is odd, ``round`` (torchvision's ``CenterCrop``:
    round half to even, what timm and OpenCLIP use) or ``floor`` (transformers' image processors); the two
    differ by one pixel for some sizes. ``origin``: where the numbers
    came from, when a source says (``transformers 5.23.0 defaults for model_type dinov2
    (BitImageProcessorPil)``); recorded as ``network_preprocess_from``, not part of the numbers (two
    transforms with equal numbers are equal).
    """

    resize: tuple[int, ...]
    crop: tuple[int, int] | None
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_offset: str = "round"
    origin: str = field(default="", compare=False)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network's input."""
        if self.crop is not None:
            return tuple(self.crop)
        if len(self.resize) != 2:
            raise ValueError("a shorter-side resize without a crop has no fixed input size")
        return tuple(self.resize)

    def describe(self) -> str:
        """One line for the activation file and MLflow (DNNBrain's transform keeps its historic wording)."""
        if self == DNNBRAIN:
            return "RGB, Resize((224, 224)), ToTensor, Normalize(ImageNet)"
        numbers = {key: value for key, value in asdict(self).items() if key != "origin"}
        if self.crop_offset == "round":  # the default: the record of timm and OpenCLIP transforms keeps its bytes
            del numbers["crop_offset"]
        return json.dumps(numbers, separators=(",", ":"))


DNNBRAIN = Preprocess(resize=(224, 224), crop=None, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def shorter_side_then_crop(resize: int, crop: tuple[int, int] | int, interpolation: str, mean, std) -> Preprocess:
    crop = (crop, crop) if isinstance(crop, int) else tuple(int(c) for c in crop)
    return Preprocess(resize=(int(resize),), crop=crop, interpolation=interpolation.lower(),
                      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def pil_transform(prep: Preprocess):
    """The torchvision transform of the PIL steps (resize, crop): uint8 in, uint8 out."""
    from torchvision import transforms

    mode = transforms.InterpolationMode(prep.interpolation)
    size = prep.resize if len(prep.resize) == 2 else prep.resize[0]
    steps = [transforms.Resize(size, interpolation=mode)]
    if prep.crop is not None:
        steps.append(transforms.CenterCrop(prep.crop) if prep.crop_offset == "round" else FloorCenterCrop(prep.crop))
    return transforms.Compose(steps)


class FloorCenterCrop:
    """A centre crop of (height, width) from a PIL image whose top-left corner is the margin // 2, as
    transformers' ``center_crop`` places it (torchvision's ``CenterCrop`` rounds half to even instead).
    A class, not a lambda: the decoding workers receive it pickled."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image):
        height, width = self.size
        if height > image.height or width > image.width:
            raise ValueError(f"centre crop {height}x{width} is larger than the resized image {image.height}x{image.width}")
        top, left = (image.height - height) // 2, (image.width - width) // 2
        return image.crop((left, top, left + width, top + height))
