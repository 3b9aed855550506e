"""The ``tuxpaint`` set: sketch-like retrieval between drawings (domain ``sketch``) and photo
cut-outs (domain ``photo``) of the same category, from the Tux Paint stamps (Debian
``tuxpaint-stamps-default``), drawings added from the Open Clip Art Library
(``openclipart-png``).

Decisions a reader of the results needs:

- The categories are the Tux Paint folders of ``MAPPED`` (13), chosen by eye as folders whose
  stamps are photos: many other folders hold drawn stamps only (clothes, hats, road signs,
  flags, chess pieces, letters), so "not in a ``cartoon`` folder" does not make a photo.
- A category's photos are the PNG stamps anywhere under its folder except in ``cartoon``
  folders (its drawings), ``toys`` and ``plastic`` folders (a teddy bear, a plastic flower:
  not the subject) and ``*_mirror.png`` files (Tux Paint's mirrored copy of another stamp).
  Its drawings are the PNG stamps of the ``cartoon`` folders under it (the package has few:
  6 of these categories have any, 3 reach 4: ``clipart=None`` keeps those) plus at most
  ``max_drawings`` clip-art drawings drawn (seeded) from the clip-art folders ``MAPPED`` names
  for it (the library's own filing, not checked one by one: ``recreation/music`` holds
  records and notes beside instruments).
- Left out: SVG stamps (no SVG renderer is used; a stamp with both an SVG and a PNG keeps its
  PNG), the sound, text and ``.dat`` side files, the drawings of ``cartoon/tux`` (a mascot
  with no photo category), symbolic links, images over ``MAX_PIXELS`` or undecodable, and
  exact duplicates (identical pixels after downscaling, the first one read kept: categories
  sorted, photos before drawings). A category is a class when it keeps at least
  ``min_photos`` photos and ``min_drawings`` drawings.
- The tree is ``images/<category>/<file>.png`` (``<category>``: the last part of the Tux Paint
  folder, ``birds``) with ``images/annotations.csv`` (``path``, ``domain``); the split is the
  category-level protocol of sketch-based retrieval (``held_out_queries``: a few drawings per
  class held out as queries, every photo a shared gallery).
"""

from __future__ import annotations

import copy
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from PIL import Image

from . import openclipart
from .common import (BuiltSet, Deduplicator, built_folder, safe_name, save_png, unique_png_name,
                     write_csv)

PACKAGE = "tuxpaint-stamps-default"
DEFAULT_SOURCE = Path("/usr/share/tuxpaint/stamps")
SET_NAME = "tuxpaint"
#: Tux Paint category folder -> clip-art folders (under openclipart's root) of its drawings.
MAPPED: dict[str, list[str]] = {
    "animals/birds": ["animals/birds", "animals/birds/penguin"],
    "animals/fish": ["animals/fish"],
    "animals/insects": ["animals/bugs"],
    "animals/mammals": ["animals/mammals", "animals/mammals/bears", "animals/mammals/big_cats",
                        "animals/mammals/dogs", "animals/mammals/horses",
                        "animals/mammals/housecats"],
    "food/fruit": ["food/fruit"],
    "food/vegetables": ["food/vegetables"],
    "hobbies/music": ["recreation/music"],
    "household/tools": ["tools"],
    "plants/flowers": ["plants/flowers"],
    "plants/trees": ["plants/trees/evergreen"],
    "space": ["geography/astronomy", "science/astronomy"],
    "sports": ["recreation/sports"],
    "vehicles": ["transportation/vehicles", "transportation/vehicles/hummers"],
}
DRAWING_FOLDER = "cartoon"
LEFT_OUT_FOLDERS = ("toys", "plastic")
MIRROR_SUFFIX = "_mirror.png"
NUM_FOLDS = 3
#: ``quick=True`` caps: photos and clip-art drawings per category.
QUICK_PHOTOS, QUICK_DRAWINGS = 12, 8

Images = list[tuple[Path, Image.Image]]
Named = list[tuple[str, Image.Image]]


def stamp_files(category: Path, counts: Counter[str]) -> tuple[list[Path], list[Path]]:
    """(photo files, drawing files) under ``category``, sorted (module doc); adds the symbolic
    links, mirrors and SVG-only stamps left out to ``counts``."""
    photos: list[Path] = []
    drawings: list[Path] = []
    for folder, dirs, _ in os.walk(category):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in LEFT_OUT_FOLDERS)
        files, links = openclipart.png_files(Path(folder))
        counts["symlinks_skipped"] += links
        counts["svg_skipped"] += _svg_only(Path(folder))
        counts["mirrors_skipped"] += sum(f.name.endswith(MIRROR_SUFFIX) for f in files)
        files = [f for f in files if not f.name.endswith(MIRROR_SUFFIX)]
        is_drawing = DRAWING_FOLDER in Path(folder).relative_to(category).parts
        (drawings if is_drawing else photos).extend(files)
    return sorted(photos), sorted(drawings)


def _svg_only(folder: Path) -> int:
    """The SVG stamps of ``folder`` that have no PNG beside them."""
    names = os.listdir(folder)
    pngs = {n[:-4].lower() for n in names if n.lower().endswith(".png")}
    return sum(n.lower().endswith(".svg") and n[:-4].lower() not in pngs for n in names)


def _shuffled(paths: list[Path], seed: str) -> list[Path]:
    """``paths`` in a seeded order (reading stops once enough are kept)."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    return order


def clipart_files(clipart: Path, folders: list[str], counts: Counter[str]) -> list[Path]:
    """The PNG files of the clip-art ``folders`` (each one's own files), symbolic links left
    out; a missing folder is an error."""
    files: list[Path] = []
    for rel in folders:
        folder = clipart / rel
        if not folder.is_dir():
            raise ValueError(f"{folder}: clip-art folder named by MAPPED is missing")
        found, links = openclipart.png_files(folder)
        counts["symlinks_skipped"] += links
        files += found
    return files


def _named(images: Images, root: Path, prefix: str = "") -> Named:
    """``images`` sorted, each named by its path under ``root`` (``prefix`` before it)."""
    named = [(prefix + "_".join(path.relative_to(root).with_suffix("").parts), image)
             for path, image in images]
    return sorted(named, key=lambda item: item[0])


def read_category(source: Path, category: str, clipart: Path | None, dedup: Deduplicator,
                  counts: Counter[str], *, max_photos: int | None,
                  max_drawings: int) -> tuple[Named, Named, int]:
    """(photos, drawings, clip-art drawings among them) of one category: images named by their
    path under the category folder (clip art: ``clipart_`` and its path in the library)."""
    folder = source / category
    photo_files, drawing_files = stamp_files(folder, counts)
    if max_photos is not None:
        photo_files = _shuffled(photo_files, f"{category}/photos")
    photos, read = openclipart.read_images(photo_files, dedup, limit=max_photos)
    counts.update(read)
    drawings, read = openclipart.read_images(drawing_files, dedup)
    counts.update(read)
    extra: Images = []
    if clipart is not None and max_drawings > 0:
        files = clipart_files(clipart, MAPPED[category], counts)
        extra, read = openclipart.read_images(_shuffled(files, f"{category}/clipart"), dedup,
                                              limit=max_drawings)
        counts.update(read)
    drawn = _named(drawings, folder) + (_named(extra, clipart, "clipart_") if clipart else [])
    return _named(photos, folder), drawn, len(extra)


def file_name(domain: str, stem: str, used: set[str]) -> str:
    """``<domain>-<stem, safe>.png``, made unique among ``used``."""
    return unique_png_name(f"{domain}-{safe_name(stem)}", used)


def _resolve_clipart(clipart: Path | Literal["auto"] | None) -> Path | None:
    if clipart == "auto":
        return openclipart.DEFAULT_SOURCE if openclipart.DEFAULT_SOURCE.is_dir() else None
    if clipart is not None and not Path(clipart).is_dir():
        raise ValueError(f"{clipart}: clip-art folder not found (install "
                         f"{openclipart.PACKAGE} or pass clipart=None)")
    return None if clipart is None else Path(clipart)


def _categories(source: Path) -> Iterator[str]:
    """The ``MAPPED`` categories present under ``source``, sorted."""
    for category in sorted(MAPPED):
        if (source / category).is_dir():
            yield category


def queries_per_class(smallest: int) -> int:
    """Held-out drawings per class: half the smallest class's drawings, leaving it at least
    ``NUM_FOLDS`` to train on where it has that many."""
    return max(1, min(smallest // 2, smallest - NUM_FOLDS))


def build(source: Path, out: Path, *, quick: bool = False,
          clipart: Path | Literal["auto"] | None = "auto", max_drawings: int | None = None,
          max_photos: int | None = None, min_photos: int = 4,
          min_drawings: int = 4) -> list[BuiltSet]:
    """Builds ``out/tuxpaint`` from the stamps at ``source`` (module doc). ``clipart``: the
    openclipart-png root (``"auto"``: its default place when installed; None: the package's
    own drawings only); ``max_drawings``: clip-art drawings per category (default 20, quick
    ``QUICK_DRAWINGS``); ``max_photos``: photos per category (default all, quick
    ``QUICK_PHOTOS``)."""
    source, out = Path(source), Path(out)
    if max_drawings is None:
        max_drawings = QUICK_DRAWINGS if quick else 20
    if quick and max_photos is None:
        max_photos = QUICK_PHOTOS
    clipart_root = _resolve_clipart(clipart)
    if not source.is_dir():
        raise ValueError(f"{source}: not a directory (install {PACKAGE})")
    counts: Counter[str] = Counter({k: 0 for k in (
        "symlinks_skipped", "mirrors_skipped", "svg_skipped", "duplicates", "too_large",
        "undecodable", "small_categories")})
    dedup = Deduplicator()
    rows: list[tuple[str, str]] = []
    kept: list[tuple[str, int, int, int]] = []  # (class, photos, drawings, clip-art drawings)
    with built_folder(out / SET_NAME) as tmp:
        for category in _categories(source):
            trial = copy.deepcopy(dedup)  # a category left out does not hide its copies
            photos, drawings, extra = read_category(
                source, category, clipart_root, trial, counts, max_photos=max_photos,
                max_drawings=max_drawings)
            if len(photos) < min_photos or len(drawings) < min_drawings:
                counts["small_categories"] += 1
                continue
            dedup = trial
            name = safe_name(Path(category).name)
            used: set[str] = set()
            for domain, images in (("photo", photos), ("sketch", drawings)):
                for stem, image in images:
                    file = file_name(domain, stem, used)
                    save_png(image, tmp / "images" / name / file)
                    rows.append((f"{name}/{file}", domain))
            kept.append((name, len(photos), len(drawings), extra))
        if not kept:
            raise ValueError(f"{source}: no category of MAPPED holds at least {min_photos} "
                             f"photos and {min_drawings} drawings")
        write_csv(tmp / "images" / "annotations.csv", ["path", "domain"], sorted(rows))
    final = out / SET_NAME
    smallest = min(drawings for _, _, drawings, _ in kept)
    photos_total = sum(p for _, p, _, _ in kept)
    drawings_total = sum(d for _, _, d, _ in kept)
    clipart_total = sum(e for _, _, _, e in kept)
    return [BuiltSet(
        name=SET_NAME, source="folder",
        options={"root": str(final / "images"), "annotations_csv": str(final / "images" / "annotations.csv")},
        split={"method": "held_out_queries", "queries_per_class": queries_per_class(smallest),
               "query_domain": "sketch", "num_folds": NUM_FOLDS, "seed": 0},
        protocol={"name": "cross_domain", "query_domain": "sketch", "gallery_domain": "photo",
                  "precision_ks": [5, 10], "flip": True},
        counts={"classes": len(kept), "images": photos_total + drawings_total,
                "photos": photos_total, "drawings": drawings_total,
                "clipart_drawings": clipart_total, **counts},
        notes=(f"{PACKAGE} photos vs cartoon stamps"
               + (f" + <= {max_drawings} {openclipart.PACKAGE} drawings per category"
                  if clipart_root is not None else "")
               + f"; {len(kept)} of {len(MAPPED)} categories kept (>= {min_photos} photos and "
               f">= {min_drawings} drawings); left out SVG-only stamps ({counts['svg_skipped']}),"
               f" mirrors ({counts['mirrors_skipped']}), {counts['duplicates']} exact duplicates"),
    )]
