"""The embedded default dataset: small images of shapes that carry every annotation the five
methods need, drawn deterministically from a seed.

Class hierarchy (fine -> middle -> coarse). A *coarse family* (polygon, round, star, glyph)
holds *middle types* (one outline each: triangle, circle, star5, arrow, ...). A type holds
*fine classes* that differ by three class-level properties at once:

- the colour's hue range (red, yellow, green, blue; +-12 degrees of jitter),
- the fill pattern (solid, striped, outline-only, checkered; stripes and checks follow the
  object's rotation),
- the aspect ratio of the outline (1.0, 0.8, 0.62, 0.46).

For ``classes_per_type <= 4`` every fine class of a type has its own pattern and aspect, so
fine classes are separable from the outline alone (the sketch) and from the texture alone;
with more classes per type (up to 16) the hue/pattern pairs stay unique but aspects repeat.

Nuisances, drawn per image: rotation (small or anywhere), position, size, hue/saturation/
value jitter, background colour (dark or light, random hue) with a brightness gradient,
clutter (lines and blobs in any colour; one may cross the object), Gaussian pixel noise.
Shapes are drawn at twice the size and box-downsampled, so edges are antialiased.

Attributes (8, ``ATTRIBUTES``): class-level ``warm`` (red/yellow hue), ``filled`` (solid),
``striped``, ``elongated`` (aspect < 0.7); instance-level ``large``, ``rotated`` (more than
20 degrees from upright; invisible on round outlines, like real noisy attributes),
``cluttered``, ``dark_background``. Sketch rows have a null ``attributes`` entry: colour,
background and clutter do not exist in a sketch.

Sketches: black jittered strokes on white, the outline only, in the pose of their photo with
a little extra jitter; ``instance_id`` links a photo and its sketch.

Scenes: 2-4 objects of 1-3 fine classes on one cluttered background, one per quadrant of a
2x2 grid (with jitter); ``object_counts`` lists each class present and its count; scenes
carry no ``label`` column (they have no single class) and no attributes.

Determinism: every random draw comes from ``numpy.random.Generator``s built from
``SeedSequence([seed, stream])``; photos, sketches and scenes use separate streams, so asking
for sketches does not change the photos. PNG encoding is deterministic, so the same seed gives
byte-identical images.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageChops, ImageDraw

from dml.data.manifest import ManifestInfo, manifest_schema
from dml.errors import ConfigError

SOURCE = "synthetic"
SCALES = ["fine", "middle", "coarse"]
ATTRIBUTES = [
    "warm",
    "filled",
    "striped",
    "elongated",
    "large",
    "rotated",
    "cluttered",
    "dark_background",
]
FAMILIES: list[tuple[str, list[str]]] = [
    ("polygon", ["triangle", "square", "pentagon", "hexagon"]),
    ("round", ["circle", "semicircle", "ring", "crescent"]),
    ("star", ["star4", "star5", "star6", "star8"]),
    ("glyph", ["plus", "arrow", "tee", "ell"]),
]
HUES: list[tuple[str, float]] = [("red", 0.0), ("yellow", 52.0), ("green", 130.0), ("blue", 222.0)]
WARM_HUES = {"red", "yellow"}
PATTERNS = ["solid", "striped", "outline", "checkered"]
ASPECTS: list[tuple[str, float]] = [("ar100", 1.0), ("ar80", 0.8), ("ar62", 0.62), ("ar46", 0.46)]
HUE_JITTER = 12.0

# Separate random streams: changing one kind of output never shifts another.
_STREAM_OBJECTS, _STREAM_PHOTO, _STREAM_SKETCH, _STREAM_SCENES = 1, 2, 3, 4
_MAX_TYPES = len(FAMILIES[0][1])
_MAX_CLASSES_PER_TYPE = len(HUES) * len(PATTERNS)


# ----------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class FineClass:
    """The class-level properties of one fine class."""

    fine: int
    middle: int
    coarse: int
    family: str
    shape: str
    hue: str
    hue_deg: float
    pattern: str
    aspect_name: str
    aspect: float

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.hue}-{self.pattern}-{self.aspect_name}"

    def class_attributes(self) -> list[int]:
        return [
            int(self.hue in WARM_HUES),
            int(self.pattern == "solid"),
            int(self.pattern == "striped"),
            int(self.aspect < 0.7),
        ]


def class_catalogue(families: int, types_per_family: int, classes_per_type: int) -> list[FineClass]:
    """The fine classes in id order: id = (family * types_per_family + type) * classes + k.

    Within a type, class k has pattern ``(k + 3c) % 4`` and hue ``(k // 4 + k + c) % 4``
    (c: the shape's catalogue index), so (pattern, hue) pairs are unique for k < 16, and
    aspect ``(k + 2c + 1) % 4``, unique for k < 4.
    """
    out = []
    for f in range(families):
        family, shapes = FAMILIES[f]
        for t in range(types_per_family):
            c = f * _MAX_TYPES + t
            middle = f * types_per_family + t
            for k in range(classes_per_type):
                hue_name, hue_deg = HUES[(k // 4 + k + c) % 4]
                aspect_name, aspect = ASPECTS[(k + 2 * c + 1) % 4]
                out.append(
                    FineClass(
                        fine=middle * classes_per_type + k,
                        middle=middle,
                        coarse=f,
                        family=family,
                        shape=shapes[t],
                        hue=hue_name,
                        hue_deg=hue_deg,
                        pattern=PATTERNS[(k + 3 * c) % 4],
                        aspect_name=aspect_name,
                        aspect=aspect,
                    )
                )
    return out


# ----------------------------------------------------------------------------- geometry


def _circle(n: int = 40, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _regular(n: int) -> np.ndarray:
    a = -np.pi / 2 + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def _star(n: int, inner: float) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _crescent() -> np.ndarray:
    # Unit circle minus the circle of radius 0.8 centred at (0.5, 0); they meet at x = 0.61.
    outer = np.linspace(np.deg2rad(52.4), np.deg2rad(307.6), 28)
    inner = np.linspace(np.deg2rad(277.9), np.deg2rad(82.1), 20)
    a = np.stack([np.cos(outer), np.sin(outer)], 1)
    b = np.stack([0.5 + 0.8 * np.cos(inner), 0.8 * np.sin(inner)], 1)
    pts = np.concatenate([a, b])
    return pts + np.array([0.3, 0.0])


def _semicircle() -> np.ndarray:
    a = np.linspace(np.pi, 2 * np.pi, 24)
    return np.stack([np.cos(a), np.sin(a) + 0.42], 1)


def _poly(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


#: shape -> list of (outline points in about the unit disc, True to add / False to cut out)
SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "triangle": [(_regular(3) + [0, 0.2], True)],
    "square": [(_regular(4) * 1.05, True)],
    "pentagon": [(_regular(5), True)],
    "hexagon": [(_regular(6), True)],
    "circle": [(_circle(), True)],
    "semicircle": [(_semicircle(), True)],
    "ring": [(_circle(), True), (_circle(r=0.55), False)],
    "crescent": [(_crescent(), True)],
    "star4": [(_star(4, 0.38), True)],
    "star5": [(_star(5, 0.45), True)],
    "star6": [(_star(6, 0.5), True)],
    "star8": [(_star(8, 0.55), True)],
    "plus": [(_poly([(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                     (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)]), True)],
    "arrow": [(_poly([(-1, -.24), (.15, -.24), (.15, -.65), (1, 0), (.15, .65), (.15, .24),
                      (-1, .24)]), True)],
    "tee": [(_poly([(-.9, -.85), (.9, -.85), (.9, -.4), (.24, -.4), (.24, .95), (-.24, .95),
                    (-.24, -.4), (-.9, -.4)]), True)],
    "ell": [(_poly([(-.65, -.95), (-.2, -.95), (-.2, .5), (.75, .5), (.75, .95), (-.65, .95)]),
             True)],
}


def _place(points: np.ndarray, aspect: float, angle: float, radius: float,
           centre: tuple[float, float]) -> np.ndarray:
    """Scale y by ``aspect``, rotate by ``angle`` (radians), scale to ``radius`` px, move."""
    p = points * np.array([1.0, aspect])
    c, s = np.cos(angle), np.sin(angle)
    p = p @ np.array([[c, s], [-s, c]])
    return p * radius + np.asarray(centre)


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v), dtype=np.float32) * 255.0


# ----------------------------------------------------------------------------- rendering


class _Canvas:
    """Pixel grids for one image size, rendered at twice the size and box-downsampled."""

    def __init__(self, image_size: int) -> None:
        self.size = image_size
        self.big = 2 * image_size
        coords = np.arange(self.big, dtype=np.float32) + 0.5
        self.xs, self.ys = np.meshgrid(coords, coords)
        self.cx = self.xs / self.big - 0.5  # centred coordinates in [-0.5, 0.5]
        self.cy = self.ys / self.big - 0.5

    def background(self, rng: np.random.Generator, dark: bool) -> Image.Image:
        value = rng.uniform(0.05, 0.35) if dark else rng.uniform(0.6, 0.95)
        colour = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.5), value)
        direction = rng.uniform(0, 2 * np.pi)
        strength = rng.uniform(-0.35, 0.35)
        # A linear brightness ramp across the image, centred on 1.
        ramp = 1.0 + strength * (self.cx * np.cos(direction) + self.cy * np.sin(direction))
        pixels = np.clip(ramp[..., None] * colour, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    def clutter(self, rng: np.random.Generator, image: Image.Image, count: int) -> None:
        draw = ImageDraw.Draw(image)
        big = self.big
        for _ in range(count):
            colour = tuple(int(x) for x in _hsv(rng.uniform(0, 360), rng.uniform(0.2, 1.0),
                                                rng.uniform(0.15, 1.0)))
            if rng.random() < 0.5:
                x0, y0, x1, y1 = rng.uniform(0, big, 4)
                draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(2, 5)))
            else:
                cx, cy = rng.uniform(0, big, 2)
                rx, ry = rng.uniform(0.03, 0.09, 2) * big
                draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)

    def mask(self, parts: list[tuple[np.ndarray, bool]], aspect: float, angle: float,
             radius: float, centre: tuple[float, float], *, outline_width: int = 0) -> Image.Image:
        """Mask ("L") at the big size; with ``outline_width`` only a band along the outline,
        inside the shape (the 'outline' pattern)."""
        placed = [([tuple(p) for p in _place(points, aspect, angle, radius, centre)], add)
                  for points, add in parts]
        fill = Image.new("L", (self.big, self.big), 0)
        draw = ImageDraw.Draw(fill)
        for xy, add in placed:
            draw.polygon(xy, fill=255 if add else 0)
        if not outline_width:
            return fill
        band = Image.new("L", (self.big, self.big), 0)
        draw = ImageDraw.Draw(band)
        for xy, _ in placed:
            draw.line(xy + [xy[0]], fill=255, width=2 * outline_width, joint="curve")
        return ImageChops.multiply(fill, band)

    def texture(self, rng: np.random.Generator, pattern: str, colour: np.ndarray, angle: float,
                centre: tuple[float, float]) -> Image.Image:
        """The object's surface colours for ``pattern`` ("RGB", big size)."""
        shade = colour * rng.uniform(0.25, 0.45)
        if pattern in ("solid", "outline"):
            return Image.new("RGB", (self.big, self.big), tuple(int(x) for x in colour))
        c, s = np.cos(angle), np.sin(angle)
        u = (self.xs - centre[0]) * c + (self.ys - centre[1]) * s
        if pattern == "striped":
            on = np.floor(u / (self.big / 14.0)) % 2 == 0
        else:  # checkered
            v = (self.ys - centre[1]) * c - (self.xs - centre[0]) * s
            cell = self.big / 9.0
            on = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
        pixels = np.where(on[..., None], colour, shade).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    def finish(self, rng: np.random.Generator, image: Image.Image, noise: float) -> bytes:
        """Downsample by two (box filter), add Gaussian pixel noise, encode as PNG."""
        small = np.asarray(image.reduce(2), dtype=np.float32)
        if noise > 0:
            small = small + noise * rng.standard_normal(small.shape, dtype=np.float32)
        return encode_png(np.clip(np.rint(small), 0, 255).astype(np.uint8))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] or [H, W, 3] array (deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Pose:
    angle: float  # radians
    radius: float  # fraction of the image size
    cx: float  # fraction of the image size
    cy: float


def _draw_object(canvas: _Canvas, rng: np.random.Generator, image: Image.Image,
                 cls: FineClass, pose: _Pose, colour: np.ndarray) -> None:
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
    return _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def render_photo(canvas: _Canvas, rng: np.random.Generator, cls: FineClass, pose: _Pose, *,
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


def render_sketch(canvas: _Canvas, rng: np.random.Generator, cls: FineClass, pose: _Pose) -> bytes:
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
        placed = _place(points, cls.aspect, angle, radius, centre)
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


# ----------------------------------------------------------------------------- generation


def check_options(image_size: int, families: int, types_per_family: int, classes_per_type: int,
                  images_per_class: int, scenes: int, view: str,
                  domains: Sequence[str]) -> tuple[str, ...]:
    """Raise ConfigError naming ``datasets.<name>.options.<key>`` for a bad option; the domains tuple."""
    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(f"datasets.<name>.options.{key}: {message}")

    if not 16 <= image_size <= 128:
        raise bad("image_size", f"{image_size} is outside 16..128 (32..64 is the intended range)")
    if not 1 <= families <= len(FAMILIES):
        raise bad("families", f"{families} is outside 1..{len(FAMILIES)}")
    if not 1 <= types_per_family <= _MAX_TYPES:
        raise bad("types_per_family", f"{types_per_family} is outside 1..{_MAX_TYPES}")
    if not 1 <= classes_per_type <= _MAX_CLASSES_PER_TYPE:
        raise bad("classes_per_type", f"{classes_per_type} is outside 1..{_MAX_CLASSES_PER_TYPE}")
    if view not in ("objects", "scenes"):
        raise bad("view", f"{view!r} is not one of: objects, scenes")
    if isinstance(domains, str):
        domains = (domains,)
    domains = tuple(domains)
    unknown = [d for d in domains if d not in ("photo", "sketch")]
    if not domains or unknown or len(set(domains)) != len(domains):
        raise bad("domains", f"{list(domains)} must be a non-empty subset of: photo, sketch")
    if view == "objects" and images_per_class < 1:
        raise bad("images_per_class", f"{images_per_class} must be at least 1")
    if view == "scenes":
        if scenes < 1:
            raise bad("scenes", f"{scenes} must be at least 1")
        if domains != ("photo",):
            raise bad("domains", "scenes are rendered as photos only; use domains: [photo]")
    return domains


def generate(
    *,
    seed: int = 0,
    image_size: int = 32,
    families: int = 4,
    types_per_family: int = 3,
    classes_per_type: int = 4,
    images_per_class: int = 50,
    scenes: int = 600,
    view: str = "objects",
    domains: Sequence[str] = ("photo",),
) -> tuple[pa.Table, ManifestInfo]:
    """Draw the synthetic dataset: a manifest table (images as PNG bytes) and its info.

    ``view="objects"``: one object per image, ``images_per_class`` photos per fine class
    (rows ordered by class), plus one sketch per photo when ``domains`` includes "sketch"
    (photo rows first). Columns: image_id, image, domain, label, label_middle, label_coarse,
    attributes (null for sketches), instance_id.
    ``view="scenes"``: ``scenes`` photos of 2-4 objects. Columns: image_id, image, domain,
    object_counts.
    """
    domains = check_options(image_size, families, types_per_family, classes_per_type,
                            images_per_class, scenes, view, domains)
    catalogue = class_catalogue(families, types_per_family, classes_per_type)
    info = ManifestInfo(
        source=SOURCE,
        scales=list(SCALES),
        class_names={
            "fine": [c.name for c in catalogue],
            "middle": [FAMILIES[f][1][t] for f in range(families) for t in range(types_per_family)],
            "coarse": [FAMILIES[f][0] for f in range(families)],
        },
        attribute_names=list(ATTRIBUTES) if view == "objects" else [],
        options={
            "seed": seed,
            "image_size": image_size,
            "families": families,
            "types_per_family": types_per_family,
            "classes_per_type": classes_per_type,
            "images_per_class": images_per_class,
            "scenes": scenes,
            "view": view,
            "domains": list(domains),
        },
    )
    canvas = _Canvas(image_size)
    if view == "objects":
        columns = _objects(seed, canvas, catalogue, images_per_class, domains)
    else:
        columns = _scenes(seed, canvas, catalogue, scenes)
    schema = manifest_schema(list(columns))
    table = pa.table({k: pa.array(v, schema.field(k).type) for k, v in columns.items()},
                     schema=schema)
    return table, info


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _objects(seed: int, canvas: _Canvas, catalogue: list[FineClass], per_class: int,
             domains: tuple[str, ...]) -> dict[str, list]:
    n = len(catalogue) * per_class
    labels = np.repeat(np.arange(len(catalogue)), per_class)
    # Instance parameters, drawn at once so that they do not depend on the rendering draws.
    rng = _rng(seed, _STREAM_OBJECTS)
    rotated = rng.random(n) < 0.5
    angle = np.where(rotated, rng.uniform(20, 340, n), rng.uniform(-10, 10, n))
    radius = rng.uniform(0.26, 0.44, n)
    large = radius > 0.35
    room = np.maximum(0.03, 0.5 - 0.85 * radius)
    cx = 0.5 + rng.uniform(-1, 1, n) * room
    cy = 0.5 + rng.uniform(-1, 1, n) * room
    cluttered = rng.random(n) < 0.5
    dark = rng.random(n) < 0.5
    poses = [_Pose(float(np.deg2rad(a)), float(r), float(x), float(y))
             for a, r, x, y in zip(angle, radius, cx, cy)]

    columns: dict[str, list] = {k: [] for k in ("image_id", "image", "domain", "label",
                                                "label_middle", "label_coarse", "attributes",
                                                "instance_id")}

    def add(i: int, domain: str, png: bytes, attributes: list[int] | None) -> None:
        cls = catalogue[labels[i]]
        columns["image_id"].append(f"syn-{i:06d}-{domain}")
        columns["image"].append(png)
        columns["domain"].append(domain)
        columns["label"].append(cls.fine)
        columns["label_middle"].append(cls.middle)
        columns["label_coarse"].append(cls.coarse)
        columns["attributes"].append(attributes)
        columns["instance_id"].append(f"syn-{i:06d}")

    if "photo" in domains:
        photo_rng = _rng(seed, _STREAM_PHOTO)
        for i in range(n):
            cls = catalogue[labels[i]]
            png = render_photo(canvas, photo_rng, cls, poses[i], dark=bool(dark[i]),
                               cluttered=bool(cluttered[i]))
            attributes = cls.class_attributes() + [int(large[i]), int(rotated[i]),
                                                   int(cluttered[i]), int(dark[i])]
            add(i, "photo", png, attributes)
    if "sketch" in domains:
        sketch_rng = _rng(seed, _STREAM_SKETCH)
        for i in range(n):
            add(i, "sketch", render_sketch(canvas, sketch_rng, catalogue[labels[i]], poses[i]),
                None)
    return columns


def _scenes(seed: int, canvas: _Canvas, catalogue: list[FineClass], count: int) -> dict[str, list]:
    rng = _rng(seed, _STREAM_SCENES)
    columns: dict[str, list] = {"image_id": [], "image": [], "domain": [], "object_counts": []}
    cells = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
    for s in range(count):
        objects = int(rng.integers(2, 5))
        kinds = int(rng.integers(1, min(3, objects) + 1))
        chosen = rng.choice(len(catalogue), size=kinds, replace=False)
        assignment = np.concatenate([chosen, rng.choice(chosen, size=objects - kinds)])
        places = rng.permutation(4)[:objects]
        image = canvas.background(rng, dark=bool(rng.random() < 0.5))
        canvas.clutter(rng, image, int(rng.integers(1, 5)))
        for label, place in zip(assignment, places):
            radius = rng.uniform(0.14, 0.2)
            pose = _Pose(
                angle=float(rng.uniform(0, 2 * np.pi)),
                radius=float(radius),
                cx=float(cells[place][0] + rng.uniform(-0.04, 0.04)),
                cy=float(cells[place][1] + rng.uniform(-0.04, 0.04)),
            )
            cls = catalogue[int(label)]
            _draw_object(canvas, rng, image, cls, pose, _object_colour(rng, cls))
        png = canvas.finish(rng, image, rng.uniform(2.0, 9.0))
        labels, counts = np.unique(assignment, return_counts=True)
        columns["image_id"].append(f"syn-scene-{s:06d}")
        columns["image"].append(png)
        columns["domain"].append("photo")
        columns["object_counts"].append(
            [{"label": int(lab), "count": int(c)} for lab, c in zip(labels, counts)])
    return columns
