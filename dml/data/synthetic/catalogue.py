"""The synthetic dataset's class catalogue: the three scales, the attributes, and which fine
class has which outline, hue, pattern and aspect. Pure data, no drawing: the renderers, the
generator and the manifest's class names all read it from here.

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

Attributes (8, ``ATTRIBUTES``): class-level ``warm`` (red/yellow hue), ``filled`` (solid),
``striped``, ``elongated`` (aspect < 0.7); instance-level ``large``, ``rotated`` (more than
20 degrees from upright; invisible on round outlines, like real noisy attributes),
``cluttered``, ``dark_background``. Sketch rows have a null ``attributes`` entry: colour,
background and clutter do not exist in a sketch.
"""

from __future__ import annotations

from dataclasses import dataclass

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

MAX_TYPES = len(FAMILIES[0][1])
MAX_CLASSES_PER_TYPE = len(HUES) * len(PATTERNS)


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
            c = f * MAX_TYPES + t
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
