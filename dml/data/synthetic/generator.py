"""The synthetic dataset as a manifest: ``generate`` checks the options, draws every image's
instance parameters, renders the photos, sketches or scenes and returns the table (images as
PNG bytes) with its :class:`~dml.data.manifest.ManifestInfo`.

Determinism: every random draw comes from ``numpy.random.Generator``s built from
``SeedSequence([seed, stream])``; photos, sketches and scenes use separate streams, so asking
for sketches does not change the photos. PNG encoding is deterministic, so the same seed gives
byte-identical images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from dml.data.manifest import ManifestInfo, manifest_schema
from dml.data.synthetic.canvas import Canvas
from dml.data.synthetic.catalogue import (
    ATTRIBUTES, FAMILIES, MAX_CLASSES_PER_TYPE, MAX_TYPES, SCALES, FineClass, class_catalogue,
)
from dml.data.synthetic.render import Pose, render_photo, render_scene, render_sketch
from dml.errors import ConfigError

#: The source's name (``datasets.<name>.source`` in params.yaml, ``source`` in the manifest).
SOURCE = "synthetic"

# Separate random streams: changing one kind of output never shifts another.
_STREAM_OBJECTS, _STREAM_PHOTO, _STREAM_SKETCH, _STREAM_SCENES = 1, 2, 3, 4


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
    if not 1 <= types_per_family <= MAX_TYPES:
        raise bad("types_per_family", f"{types_per_family} is outside 1..{MAX_TYPES}")
    if not 1 <= classes_per_type <= MAX_CLASSES_PER_TYPE:
        raise bad("classes_per_type", f"{classes_per_type} is outside 1..{MAX_CLASSES_PER_TYPE}")
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
    attributes (null for sketches), instance_id; ``instance_id`` links a photo and its sketch.
    ``view="scenes"``: ``scenes`` photos of 2-4 objects. Columns: image_id, image, domain,
    object_counts (each class present and its count); scenes carry no ``label`` column (they
    have no single class) and no attributes.
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
    canvas = Canvas(image_size)
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


def _objects(seed: int, canvas: Canvas, catalogue: list[FineClass], per_class: int,
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
    poses = [Pose(float(np.deg2rad(a)), float(r), float(x), float(y))
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


def _scenes(seed: int, canvas: Canvas, catalogue: list[FineClass], count: int) -> dict[str, list]:
    rng = _rng(seed, _STREAM_SCENES)
    columns: dict[str, list] = {"image_id": [], "image": [], "domain": [], "object_counts": []}
    for s in range(count):
        png, assignment = render_scene(canvas, rng, catalogue)
        labels, counts = np.unique(assignment, return_counts=True)
        columns["image_id"].append(f"syn-scene-{s:06d}")
        columns["image"].append(png)
        columns["domain"].append("photo")
        columns["object_counts"].append(
            [{"label": int(lab), "count": int(c)} for lab, c in zip(labels, counts)])
    return columns
