"""Rendering of the synthetic dataset's three kinds of image, each as PNG bytes drawn on a
:class:`~dml.data.synthetic.canvas.Canvas` from one random generator: what a photo, a sketch
and a scene show, and the order of their random draws (which the same seed's bytes depend on).

Photos: one object of a fine class in a given :class:`Pose`, with nuisances drawn per image:
hue/saturation/value jitter, background colour (dark or light, random hue) with a brightness
gradient, clutter (lines and blobs in any colour; one may cross the object), Gaussian pixel
noise. (Rotation, position and size come with the pose, drawn by the generator.)

Sketches: black jittered strokes on white, the outline only, in the pose of their photo with
a little extra jitter.

Scenes: 2-4 objects of 1-3 fine classes on one cluttered background, one per quadrant of a
2x2 grid (with jitter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dml.data.synthetic.canvas import Canvas, hsv
from dml.data.synthetic.catalogue import HUE_JITTER, FineClass
from dml.data.synthetic.shapes import SHAPES, place

#: The centres of a scene's four cells (fractions of the image size), one object per cell.
SCENE_CELLS = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]


@dataclass(frozen=True)
class Pose:
    """Where an object lies in its image."""

    angle: float  # radians
    radius: float  # fraction of the image size
    cx: float  # fraction of the image size
    cy: float


def _draw_object(canvas: Canvas, rng: np.random.Generator, image: Image.Image,
                 cls: FineClass, pose: Pose, colour: np.ndarray) -> None:
    big = canvas.big
    centre = (pose.cx * big, pose.cy * big)
    radius = pose.radius * big
    outline = max(2, int(round(big / 14))) if cls.pattern == "outline" else 0
    alpha = canvas.mask(SHAPES[cls.shape], cls.aspect, pose.angle, radius, centre,
                        outline_width=outline)
    surface = canvas.texture(rng, cls.pattern, colour, pose.angle, centre)
    image.paste(surface, (0, 0), alpha)


def _object_colour(rng: np.random.Generator, cls: FineClass) -> np.ndarray:
    hue = cls.hue_deg + rng.uniform(-HUE_JITTER, HUE_JITTER)
    return hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def render_photo(canvas: Canvas, rng: np.random.Generator, cls: FineClass, pose: Pose, *,
                 dark: bool, cluttered: bool) -> bytes:
    """PNG bytes of one object on a background with clutter and noise."""
    image = canvas.background(rng, dark)
    count = int(rng.integers(5, 10)) if cluttered else int(rng.integers(0, 3))
    on_top = cluttered and rng.random() < 0.5
    canvas.clutter(rng, image, count - int(on_top))
    _draw_object(canvas, rng, image, cls, pose, _object_colour(rng, cls))
    if on_top:
        canvas.clutter(rng, image, 1)
    return canvas.finish(rng, image, rng.uniform(2.0, 9.0))


def _jittered_stroke(points: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Closed outline resampled densely with smooth random perpendicular wobble."""
    closed = np.concatenate([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    total = t[-1]
    n = max(24, int(total / 1.5))
    s = np.linspace(0, total, n)
    dense = np.stack([np.interp(s, t, closed[:, 0]), np.interp(s, t, closed[:, 1])], 1)
    phase = s / total * 2 * np.pi
    wobble = np.zeros(n)
    for freq in (2, 3, 5):
        wobble += rng.normal(0, amplitude / freq) * np.sin(freq * phase + rng.uniform(0, 2 * np.pi))
    tangent = np.gradient(dense, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    return dense + normal * wobble[:, None] + rng.normal(0, amplitude * 0.15, dense.shape)


def render_sketch(canvas: Canvas, rng: np.random.Generator, cls: FineClass, pose: Pose) -> bytes:
    """PNG bytes (greyscale) of the object's outline as jittered black strokes on white."""
    big = canvas.big
    angle = pose.angle + np.deg2rad(rng.uniform(-8, 8))
    radius = pose.radius * big * rng.uniform(0.92, 1.08)
    centre = (pose.cx * big + rng.uniform(-1.5, 1.5), pose.cy * big + rng.uniform(-1.5, 1.5))
    image = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(image)
    width = max(2, int(round(big / 28)) + int(rng.integers(0, 2)))
    ink = int(rng.integers(0, 70))
    for points, _ in SHAPES[cls.shape]:
        placed = place(points, cls.aspect, angle, radius, centre)
        stroke = _jittered_stroke(placed, rng, amplitude=0.05 * radius)
        # Two strokes that meet with a small gap or overshoot, like a hand-drawn closed curve.
        cut = int(rng.integers(1, len(stroke) - 1))
        overshoot = int(rng.integers(-2, 4))
        first = stroke[: cut + max(overshoot, 0) + 1]
        second = np.concatenate([stroke[cut + max(-overshoot, 0):], stroke[:2]])
        for part in (first, second):
            if len(part) >= 2:
                draw.line([tuple(p) for p in part], fill=ink, width=width, joint="curve")
    return canvas.finish(rng, image, rng.uniform(0.0, 3.0))


def render_scene(canvas: Canvas, rng: np.random.Generator,
                 catalogue: list[FineClass]) -> tuple[bytes, np.ndarray]:
    """PNG bytes of 2-4 objects of 1-3 classes drawn from ``catalogue``, and each object's
    index in ``catalogue`` (every class chosen appears at least once)."""
    objects = int(rng.integers(2, 5))
    kinds = int(rng.integers(1, min(3, objects) + 1))
    chosen = rng.choice(len(catalogue), size=kinds, replace=False)
    assignment = np.concatenate([chosen, rng.choice(chosen, size=objects - kinds)])
    cells = rng.permutation(4)[:objects]
    image = canvas.background(rng, dark=bool(rng.random() < 0.5))
    canvas.clutter(rng, image, int(rng.integers(1, 5)))
    for label, cell in zip(assignment, cells):
        radius = rng.uniform(0.14, 0.2)
        pose = Pose(
            angle=float(rng.uniform(0, 2 * np.pi)),
            radius=float(radius),
            cx=float(SCENE_CELLS[cell][0] + rng.uniform(-0.04, 0.04)),
            cy=float(SCENE_CELLS[cell][1] + rng.uniform(-0.04, 0.04)),
        )
        cls = catalogue[int(label)]
        _draw_object(canvas, rng, image, cls, pose, _object_colour(rng, cls))
    return canvas.finish(rng, image, rng.uniform(2.0, 9.0)), assignment
