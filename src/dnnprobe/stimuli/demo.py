"""The built-in offline stimulus set: curvy versus boxy objects in cluttered scenes.

It exists to exercise every stage without a network connection; it is a pipeline check, not a
scientific finding. Each image holds one large target near the centre whose outline and texture are
either boxy (rectangles filled with sharp-edged stripes or checks) or curvy (a smooth blob filled
with soft rings or waves), at a random scale, rotation, phase and colour, over a smooth random
background, with small flat distractors of *both* kinds, occluding bars, blur and pixel noise.
Colours, sizes, contrast and clutter come from the same distributions for both classes, so no
single pixel statistic gives the class away: with the default random-weight AlexNet, conv1 decodes
at chance and the mid layers at about 0.7 (400 images, PCA 100, 10 folds), rather than every layer
scoring 1.0.

Everything is drawn from one seeded generator per image, so the set is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dnnprobe.stimuli.table import StimulusTable, table_from_classes

CLASSES = ("boxy", "curvy")
SUPERSAMPLE = 2  # draw at twice the size and downsample: smooth, anti-aliased edges


def _blob(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A smooth closed outline: a circle whose radius wobbles with a few low harmonics."""
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    r = np.ones_like(theta)
    for harmonic in range(2, 6):
        r += rng.uniform(0.0, 0.22 / harmonic ** 0.5) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    return np.stack([radius * r * np.cos(theta), radius * r * np.sin(theta)], axis=1)


def _boxes(rng: np.random.Generator, radius: float) -> list[np.ndarray]:
    """One to three overlapping rectangles sharing one orientation (straight edges, right angles)."""
    shapes = []
    for _ in range(rng.integers(1, 4)):
        half_w = radius * rng.uniform(0.35, 1.0)
        half_h = radius * rng.uniform(0.35, 1.0)
        centre = rng.uniform(-0.35, 0.35, size=2) * radius
        corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
        shapes.append(corners + centre)
    return shapes


def _outlines(kind: str, rng: np.random.Generator, radius: float) -> list[np.ndarray]:
    return [_blob(rng, radius)] if kind == "curvy" else _boxes(rng, radius)


def _place(points: np.ndarray, angle: float, centre: np.ndarray) -> list[tuple[float, float]]:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [tuple(p) for p in (points @ rotation.T + centre) * SUPERSAMPLE]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(30, 226, size=3))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    coarse = rng.integers(80, 176, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size * SUPERSAMPLE,) * 2, Image.BICUBIC)


def _draw_object(
    draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, radius: float, centre: np.ndarray
) -> None:
    angle = rng.uniform(0, np.pi)
    fill = _colour(rng)
    edge = _colour(rng) if rng.random() < 0.5 else None
    for outline in _outlines(kind, rng, radius):
        draw.polygon(_place(outline, angle, centre), fill=fill, outline=edge, width=2 * SUPERSAMPLE)


def _texture(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    """Two-colour pattern: straight stripes or checks (boxy) versus rings or wavy stripes (curvy)."""
    side = size  # drawn at the final size, enlarged to the supersampled canvas below
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = rng.uniform(0.04, 0.09) * side
    if kind == "boxy":
        if rng.random() < 0.5:
            phase = (u / period) % 1.0
        else:
            phase = ((np.floor(u / period) + np.floor(v / period)) % 2) * 0.5 + 0.25
    else:
        if rng.random() < 0.5:
            cx, cy = rng.uniform(0.3, 0.7, size=2) * side
            phase = (np.hypot(xx - cx, yy - cy) / period) % 1.0
        else:
            wave = rng.uniform(0.5, 1.0) * period * np.sin(v / (rng.uniform(1.0, 2.5) * period))
            phase = ((u + wave) / period) % 1.0
    # Boxy patterns switch colour at sharp edges; curvy ones blend smoothly (a sinusoid).
    weight = (phase < 0.5).astype(np.float32) if kind == "boxy" else 0.5 + 0.5 * np.cos(2 * np.pi * phase)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    pattern = Image.fromarray((weight[..., None] * a + (1 - weight[..., None]) * b + 0.5).astype(np.uint8))
    return pattern.resize((size * SUPERSAMPLE,) * 2, Image.BILINEAR)


def _draw_target(image: Image.Image, kind: str, rng: np.random.Generator, radius: float, centre: np.ndarray) -> None:
    mask = Image.new("L", image.size, 0)
    angle = rng.uniform(0, np.pi)
    for outline in _outlines(kind, rng, radius):
        ImageDraw.Draw(mask).polygon(_place(outline, angle, centre), fill=255)
    image.paste(_texture(kind, rng, image.size[0] // SUPERSAMPLE), (0, 0), mask)


def demo_image(kind: str, seed: int, size: int = 256) -> Image.Image:
    """One stimulus: a `kind` target ('curvy' or 'boxy') in a cluttered scene."""
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    # Distractors of both kinds, independent of the class, before and after the target.
    n_distractors = int(rng.integers(2, 7))
    in_front = int(rng.integers(0, 3))
    target_radius = size * rng.uniform(0.28, 0.40)
    target_centre = rng.uniform(0.4, 0.6, size=2) * size

    def distractor() -> None:
        _draw_object(draw, CLASSES[rng.integers(2)], rng, size * rng.uniform(0.04, 0.09),
                     rng.uniform(0.05, 0.95, size=2) * size)

    for _ in range(n_distractors - in_front):
        distractor()
    _draw_target(image, kind, rng, target_radius, target_centre)
    for _ in range(in_front):
        distractor()
    # Occluding bars cut across the target in both classes alike.
    for _ in range(int(rng.integers(0, 3))):
        y = rng.uniform(0.2, 0.8) * size * SUPERSAMPLE
        thickness = rng.uniform(0.02, 0.05) * size * SUPERSAMPLE
        slope = rng.uniform(-0.3, 0.3) * size * SUPERSAMPLE
        draw.line([(0, y), (size * SUPERSAMPLE, y + slope)], fill=_colour(rng), width=int(thickness))
    image = image.resize((size, size), Image.LANCZOS)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(4.0, 18.0), size=pixels.shape)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def write_demo_set(image_folder: Path, n_per_class: int, image_size: int, seed: int) -> StimulusTable:
    """Write ``2 * n_per_class`` PNGs into `image_folder`; return their table (``path=`` unset).

    Classes alternate row by row so any prefix of the table is balanced. Image i is drawn from
    seed (seed, i), so changing ``n_per_class`` keeps the images that both sets share.
    """
    stim_ids, conditions = [], []
    for index in range(2 * n_per_class):
        kind = CLASSES[index % 2]
        stim_id = f"{kind}/{index:05d}.png"
        target = image_folder / stim_id
        target.parent.mkdir(parents=True, exist_ok=True)
        image_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        demo_image(kind, image_seed, image_size).save(target, format="PNG")
        stim_ids.append(stim_id)
        conditions.append(kind)
    title = f"demo curvy vs boxy (seed {seed})"
    return table_from_classes(stim_ids, conditions, image_folder="", title=title)
