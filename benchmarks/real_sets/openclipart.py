"""The ``clipart`` set: Open Clip Art Library drawings (Debian ``openclipart-png``), one class
per folder of the library's subject tree, the top-level folder as the coarse class.

Decisions a reader of the results needs:

- A fine class is the images filed *directly* in one folder below the top level
  (``animals/birds``, ``computer/icons/lemon-theme/apps``); a folder's sub-folders are classes
  of their own, so an inner folder and its sub-folders never share an image. Inner folders are
  kept (``animals/birds`` holds 47 birds beside a 3-image ``penguin`` sub-folder); the price is
  a few pairs of classes whose subjects overlap (``people/clothing`` and
  ``people/clothing/hats``, the ``flags`` folders). The images filed directly in a top-level
  folder are left out: they are that subject's unsorted rest, and their fine class would be
  their coarse class. The ``unsorted`` tree is left out.
- A folder is a class when it holds at least ``min_images`` (default 20) distinct images.
  Left out before counting: symbolic links (1,221 in the package, all to a file of the
  library; every image is counted once, in the folder that holds the file), images
  over ``MAX_PIXELS`` (a few reach 623 Mpx) or that cannot be decoded, and exact duplicates:
  identical pixels after downscaling to ``MAX_SIDE``, the first one read kept. Folders are read
  in a spread order (round robin over the top-level folders, each one's folders sorted; files
  sorted), which is also the order ``max_classes`` keeps; an image of a folder that ends up
  too small does not hide its copies elsewhere. The counts of what was left out cover the
  folders read (those below the top level).
- Class sizes are uneven: ``shapes/stars`` keeps 1,378 images (over a quarter of the set),
  the icon themes 100-530, most classes 20-80. ``max_per_class`` (default ``PER_CLASS``, 80:
  the first images by name; None keeps all) evens them, so that no class dominates the
  queries of MAP@R or the batches.
- The tree is ``images/<top>/<fine>/<name>.png`` with ``<fine>`` the folder's path under the
  library root joined by ``_`` (``animals_birds``): read with
  ``folder_scales: [coarse, fine]``, the classes are the folder paths.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path

from PIL import Image

from .common import (MAX_PIXELS, BuiltSet, Deduplicator, built_folder, decode_small, safe_name,
                     save_png)

PACKAGE = "openclipart-png"
DEFAULT_SOURCE = Path("/usr/share/openclipart/png")
SET_NAME = "clipart"
#: Top-level folders that are no subject.
LEFT_OUT_TOP = ("unsorted",)
#: ``quick=True`` caps: classes, images per class.
QUICK_CLASSES, QUICK_PER_CLASS = 24, 30
#: Images kept per class at most (the full build).
PER_CLASS = 80
COUNT_KEYS = ("symlinks_skipped", "duplicates", "too_large", "undecodable")


# -- reading images (shared with the Tux Paint builder) -----------------------------------


def read_images(paths: Sequence[Path], dedup: Deduplicator, *, limit: int | None = None
                ) -> tuple[list[tuple[Path, Image.Image]], Counter[str]]:
    """The decoded images of ``paths`` (in order) that are neither too large, undecodable nor
    seen by ``dedup`` before, at most ``limit`` of them (no file after the last one kept is
    decoded); and the counts of those left out."""
    kept: list[tuple[Path, Image.Image]] = []
    counts: Counter[str] = Counter({key: 0 for key in COUNT_KEYS})
    for path in paths:
        if limit is not None and len(kept) >= limit:
            break
        status, image = decode_small(str(path))
        if image is None:
            counts[status] += 1
        elif dedup.seen(image):
            counts["duplicates"] += 1
        else:
            kept.append((path, image))
    return kept, counts


def png_files(folder: Path) -> tuple[list[Path], int]:
    """(sorted PNG files directly in ``folder``, number of symbolic links left out)."""
    files, links = [], 0
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.name.lower().endswith(".png"):
            continue
        if entry.is_symlink():
            links += 1
        elif entry.is_file():
            files.append(Path(entry.path))
    return sorted(files), links


def read_folder_images(folder: Path, dedup: Deduplicator, *, limit: int | None = None
                       ) -> tuple[list[tuple[Path, Image.Image]], Counter[str]]:
    """The distinct images filed directly in ``folder`` (symbolic links left out), sorted by
    name, as :func:`read_images` reads them; the counts include ``symlinks_skipped``."""
    files, links = png_files(folder)
    kept, counts = read_images(files, dedup, limit=limit)
    counts["symlinks_skipped"] += links
    return kept, counts


# -- the clipart set --------------------------------------------------------------------


def candidate_folders(source: Path) -> list[Path]:
    """The folders below the top level (outside ``LEFT_OUT_TOP``), in spread order: the first
    folder of each top-level folder, then the second of each, ... (each top's folders sorted)."""
    groups = []
    for top in sorted(p for p in source.iterdir() if p.is_dir() and not p.is_symlink()):
        if top.name.startswith(".") or top.name in LEFT_OUT_TOP:
            continue
        inner = []
        for folder, dirs, _ in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if Path(folder) != top:
                inner.append(Path(folder))
        groups.append(sorted(inner))
    return [f for row in zip_longest(*groups) for f in row if f is not None]


def fine_name(source: Path, folder: Path) -> str:
    """The fine class folder: the folder's path under ``source`` joined by ``_``."""
    return safe_name("_".join(folder.relative_to(source).parts))


def write_classes(source: Path, images_dir: Path, counts: Counter[str], *, min_images: int,
                  max_classes: int | None, max_per_class: int | None
                  ) -> list[tuple[Path, int]]:
    """Writes each class (module doc) under ``images_dir/<top>/<fine>/`` as soon as it is read;
    returns (folder, images) of the classes in spread order and adds to ``counts`` what was
    left out."""
    dedup = Deduplicator()
    classes: list[tuple[Path, int]] = []
    names: set[str] = set()
    for folder in candidate_folders(source):
        if max_classes is not None and len(classes) >= max_classes:
            break
        files, links = png_files(folder)
        counts["symlinks_skipped"] += links
        if len(files) < min_images:  # cannot reach min_images: not decoded
            counts["small_folders"] += bool(files)
            continue
        trial = copy.deepcopy(dedup)  # a folder left out does not hide its copies elsewhere
        images, read = read_images(files, trial, limit=max_per_class)
        counts.update(read)
        if len(images) < min_images:
            counts["small_folders"] += 1
            continue
        dedup = trial
        fine = fine_name(source, folder)
        if fine in names:
            raise ValueError(f"{folder}: its class name {fine!r} is taken by another folder")
        names.add(fine)
        target = images_dir / folder.relative_to(source).parts[0] / fine
        for path, image in images:
            save_png(image, target / f"{path.stem}.png")
        classes.append((folder, len(images)))
    return classes


def build(source: Path, out: Path, *, quick: bool = False, min_images: int = 20,
          max_classes: int | None = None, max_per_class: int | None = PER_CLASS) -> list[BuiltSet]:
    """Builds ``out/clipart`` from the library at ``source`` (module doc); ``quick`` caps it at
    ``QUICK_CLASSES`` classes of at most ``QUICK_PER_CLASS`` images unless the caps are given.
    Decoding runs in this process: a pool of 2 workers gained nothing measurable on a shared
    2-core machine (27 s either way for the full build)."""
    source, out = Path(source), Path(out)
    if quick:
        max_classes = QUICK_CLASSES if max_classes is None else max_classes
        max_per_class = QUICK_PER_CLASS if max_per_class in (None, PER_CLASS) else max_per_class
    if max_per_class is not None and max_per_class < min_images:
        raise ValueError(f"max_per_class {max_per_class} is below min_images {min_images}")
    if not source.is_dir():
        raise ValueError(f"{source}: not a directory (install {PACKAGE})")
    counts: Counter[str] = Counter({key: 0 for key in (*COUNT_KEYS, "small_folders")})
    with built_folder(out / SET_NAME) as tmp:
        classes = write_classes(source, tmp / "images", counts, min_images=min_images,
                                max_classes=max_classes, max_per_class=max_per_class)
        if not classes:
            raise ValueError(f"{source}: no folder holds at least {min_images} images")
    tops = {folder.relative_to(source).parts[0] for folder, _ in classes}
    return [BuiltSet(
        name=SET_NAME, source="folder",
        options={"root": str(out / SET_NAME / "images"), "folder_scales": ["coarse", "fine"]},
        split={"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0},
        protocol={"name": "self_retrieval"},
        scales=["fine", "coarse"],
        counts={"classes": len(classes), "coarse_classes": len(tops),
                "images": sum(n for _, n in classes), **counts},
        notes=(f"{PACKAGE}: folders below the top level with >= {min_images} distinct images; "
               f"left out {counts['symlinks_skipped']} symlinks, {counts['duplicates']} exact "
               f"duplicates, {counts['too_large']} images over {MAX_PIXELS // 1_000_000} Mpx, "
               f"{counts['undecodable']} undecodable, {counts['small_folders']} smaller folders"),
    )]
