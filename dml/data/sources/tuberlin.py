"""TU-Berlin sketches with the TU-Berlin Extension photos ("tuberlin").

Eitz et al., "How Do Humans Sketch Objects?" (SIGGRAPH 2012): 20,000 sketches, 250 classes of
80, drawn by crowd workers from a class name (not from a photo). Layout under ``root``:

- ``png/<class>/<n>.png`` (``sketches_png.zip``; some download scripts rename ``png/`` to
  ``sketches/``, which is read too, ``png/`` first): 1111x1111 PNG sketches, ``n`` numbering
  them over all classes (``airplane/1.png`` ... ``airplane/80.png``, ``alarm clock/81.png``
  ...). Class folder names hold spaces, parentheses and hyphens: ``bear (animal)``,
  ``car (sedan)``, ``pipe (for smoking)``, ``mouse (animal)``, ``flower with stem``,
  ``ice-cream-cone``, ``t-shirt``;
- ``png/filelist.txt``: one ``<class>/<n>.png`` per line, relative to ``png/``;
- ``photos/<folder>/<file>`` (option ``photos``): the TU-Berlin Extension (Zhang et al.
  2016), the natural images that Liu et al. ("Deep Sketch Hashing", CVPR 2017) and the
  DASE/MEMS code use as the gallery. It is distributed as a folder ``ImageResized``; point
  ``photos`` at it or rename it.

Quirk: the photo folders are not named as the sketch classes. Most are the class name
lower-cased with spaces, hyphens and parentheses removed (``bear (animal)`` -> ``bearanimal``,
``beer-mug`` -> ``beermug``, ``ice-cream-cone`` -> ``icecreamcone``, ``t-shirt`` -> ``tshirt``);
a few are shortened (``pipe (for smoking)`` -> ``pipe``, ``mouse (animal)`` -> ``mouse``) or
misspelt in the release (``trombone`` -> ``tromobone``, ``giraffe`` -> ``griaffe``, ``spider`` ->
``spidar``, ``chandelier`` -> ``chandeler``, ``space shuttle`` -> ``spacesshuttle``,
``wrist-watch`` -> ``wristwatching``, ``diamond`` -> ``diamod``). A sketch class finds its photo
folder by its exact name, else by that normalised name (:func:`photo_key`), else through
:data:`PHOTO_FOLDER_QUIRKS`, the release's shortened and misspelt names.

``filelist``: by default ``png/filelist.txt`` is read when present: its sketches are the data
(a line naming a file that is not an image of the tree is an error naming the line; files of
the tree it does not list are left out and listed in ``source.ignored``); without it the class
folders are scanned. A path reads that file instead (lines relative to the sketch folder);
``true`` requires the default file, ``false`` scans even when it is there. Files with an image
extension are images; hidden files are skipped, other files listed in ``source.ignored``.

Records, class by class in label order: the photos (sorted by path), then the sketches (in
filelist order, else sorted by path). ``image_id`` the file's path relative to ``root`` (photos
outside ``root``: ``photos/<folder>/<file>``), ``path`` the file, ``domain`` ``photo`` or
``sketch``, ``label`` the rank of the sketch class among the sorted sketch class names. No
``instance_id`` (a sketch is not drawn from a particular photo), no ``split`` and no ``role``:
the category-level protocol and the zero-shot split come from the split configuration. Scale
``["fine"]``, class names the sketch folder names.

Problems raise one DataError: no sketch folder (naming both places), no photo folder (naming
its path: retrieval needs a gallery), a filelist line that is malformed, repeated or names no
image of the tree (naming the file and line), a sketch class without a photo folder (naming the
class, the names tried and up to 3 closest photo folders), photo folders that match no sketch
class or two classes (the photos are not the release's), a class without sketches or photos.
The reader does not open images: ingest reports missing or unreadable ones.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.folder import scan_tree
from dml.data.sources.problems import (SHOWN, FileProblems, id_prefix, join_id, listing,
                                        relative_path, text_lines)
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

#: Where the sketches may be under ``root``, in the order looked at.
SKETCH_FOLDERS = ("png", "sketches")
FILELIST = "filelist.txt"
PHOTOS = "photos"
#: Sketch class -> photo folder, where the TU-Berlin Extension shortened or misspelt the name
#: (the other folders are the normalised class names, see :func:`photo_key`).
PHOTO_FOLDER_QUIRKS = {
    "pipe (for smoking)": "pipe",
    "mouse (animal)": "mouse",
    "trombone": "tromobone",
    "giraffe": "griaffe",
    "spider": "spidar",
    "chandelier": "chandeler",
    "space shuttle": "spacesshuttle",
    "wrist-watch": "wristwatching",
    "diamond": "diamod",
}


def photo_key(name: str) -> str:
    """``name`` lower-cased, everything but letters and digits removed: how the TU-Berlin
    Extension names most photo folders (``bear (animal)`` -> ``bearanimal``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())



def match_photo_folders(classes: list[str], folders: list[str]) -> tuple[dict[str, str],
                                                                         list[str]]:
    """(sketch class -> photo folder, problems) for the sketch ``classes`` and the photo
    ``folders``: exact name, else :func:`photo_key`, else :data:`PHOTO_FOLDER_QUIRKS`.

    Problems: a class without a folder (the names tried and up to 3 closest folders), a folder
    taken by two classes, folders matching no class.
    """
    by_key: dict[str, list[str]] = {}
    for folder in folders:
        by_key.setdefault(photo_key(folder), []).append(folder)
    matched: dict[str, str] = {}
    problems: list[str] = []
    for name in classes:
        if name in by_key.get(photo_key(name), []):  # the exact name
            matched[name] = name
            continue
        tried = [name, photo_key(name)]
        found = by_key.get(photo_key(name), [])
        quirk = PHOTO_FOLDER_QUIRKS.get(name)
        if not found and quirk is not None:
            tried.append(quirk)
            found = by_key.get(photo_key(quirk), [])
        if len(found) == 1:
            matched[name] = found[0]
        elif found:
            problems.append(f"sketch class {name!r}: photo folders {', '.join(found)} all read as "
                            f"{tried[-1]!r}")
        else:
            close = difflib.get_close_matches(photo_key(name), list(by_key), n=3, cutoff=0.4)
            names = [folder for key in close for folder in by_key[key]][:3]
            problems.append(f"sketch class {name!r} has no photo folder (tried "
                            f"{', '.join(map(repr, dict.fromkeys(tried)))}; closest photo "
                            f"folders: {', '.join(names) or 'none'})")
    takers: dict[str, list[str]] = {}
    for name, folder in matched.items():
        takers.setdefault(folder, []).append(name)
    problems += [f"photo folder {folder!r} matches the sketch classes "
                 f"{', '.join(map(repr, names))}" for folder, names in takers.items()
                 if len(names) > 1]
    unmatched = [folder for folder in folders if folder not in takers]
    if unmatched:
        problems.append(f"photo folders matching no sketch class: {listing(unmatched)} (the "
                        "photos are not the TU-Berlin Extension of these sketches)")
    return matched, problems




def read_filelist(path: Path, sketch_dir: Path, images: set[str]) -> list[str]:
    """The sketches ``path`` lists (``<class>/<file>`` relative to ``sketch_dir``), in its
    order; DataError naming the lines that are malformed, repeated or name no file of
    ``images`` (the image files of the tree)."""
    problems = FileProblems(path)
    listed: dict[str, int] = {}
    for number, text in text_lines(path):
        rel = relative_path(text)
        if rel is None or "/" not in rel:
            problems.add(number, f"expected '<class>/<file>', got {text!r}")
        elif rel in listed:
            problems.add(number, f"{rel} already on line {listed[rel]}")
        elif rel not in images:
            problems.add(number, f"{rel} is not an image file in {sketch_dir}")
        else:
            listed[rel] = number
    if not listed and not problems.count:
        problems.add(None, "lists no sketch")
    problems.check()
    return list(listed)


class TuBerlinSource:
    """Records of TU-Berlin sketches and their extension's photos (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str],
                 photos: str | os.PathLike[str] | None = None,
                 filelist: str | os.PathLike[str] | bool | None = None) -> None:
        if not (filelist is None or isinstance(filelist, (bool, str, os.PathLike))):
            raise ConfigError(f"datasets.<name>.options.filelist: {filelist!r} is not a path, true or "
                              "false")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"tuberlin source: root {self.root} is not a directory")
        self.sketch_dir = self._find_sketch_dir()
        self.photo_dir = Path(photos) if photos is not None else self.root / PHOTOS
        if not self.photo_dir.is_dir():
            raise DataError(f"tuberlin source: photo folder {self.photo_dir} is not a directory "
                            "(the TU-Berlin Extension photos, photos/<folder>/<file>; set "
                            "datasets.<name>.options.photos): retrieval needs a gallery")

        classes, images, others = scan_tree(self.sketch_dir)
        self.filelist = self._filelist_path(filelist)
        images, left_out = self._listed_sketches(classes, images, others)
        sketch_prefix = id_prefix(self.sketch_dir, self.root, SKETCH_FOLDERS[0])
        photo_prefix = id_prefix(self.photo_dir, self.root, PHOTOS)
        folders, photo_images, photo_others = scan_tree(self.photo_dir)
        self.ignored = [f"{join_id(sketch_prefix, rel)} ({why})" for rel, why in left_out] + [
            f"{join_id(photo_prefix, rel)} (not an image file)" for rel in photo_others]

        if not classes:
            raise DataError(f"tuberlin source: {self.sketch_dir} has no class folders")
        self.class_names = list(classes)
        self.photo_folders = self._match_photos(images, folders, photo_images)
        # (image id, path, domain, label), class by class
        self.rows = self._rows(images, photo_images, sketch_prefix, photo_prefix)

    def _find_sketch_dir(self) -> Path:
        """The first of :data:`SKETCH_FOLDERS` under ``root``; DataError naming both if neither."""
        sketch_dir = next((self.root / f for f in SKETCH_FOLDERS if (self.root / f).is_dir()),
                          None)
        if sketch_dir is None:
            places = " nor ".join(str(self.root / f) for f in SKETCH_FOLDERS)
            raise DataError(f"tuberlin source: no sketch folder: neither {places} is a "
                            "directory (root must hold the png/ folder of sketches_png.zip)")
        return sketch_dir

    def _listed_sketches(self, classes: list[str], images: dict[str, list[str]],
                         others: list[str],
                         ) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
        """(class -> sketches, (file, why) left out): the file list's sketches, else all found."""
        left_out = [(rel, "not an image file") for rel in others
                    if self.sketch_dir / rel != self.filelist]
        if self.filelist is not None:
            everything = {rel for name in classes for rel in images[name]}
            listed = read_filelist(self.filelist, self.sketch_dir, everything)
            left_out += [(rel, f"not in {self.filelist.name}")
                         for rel in sorted(everything - set(listed))]
            images = {name: [] for name in classes}
            for rel in listed:
                images[rel.split("/", 1)[0]].append(rel)
        return images, left_out

    def _match_photos(self, images: dict[str, list[str]], folders: list[str],
                      photo_images: dict[str, list[str]]) -> dict[str, str]:
        """Sketch class -> photo folder; one DataError listing every mismatch of the two trees."""
        photo_folders, problems = match_photo_folders(self.class_names, folders)
        problems += [f"sketch class {name!r} has no sketch"
                     + (f" listed in {self.filelist}" if self.filelist else "")
                     for name in self.class_names if not images[name]]
        problems += [f"photo folder {folder!r} (class {name!r}) has no photo"
                     for name, folder in photo_folders.items() if not photo_images[folder]]
        if problems:
            more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
            raise DataError(f"tuberlin source: sketches in {self.sketch_dir} and photos in "
                            f"{self.photo_dir} do not match:\n  "
                            + "\n  ".join(problems[:SHOWN]) + more)
        return photo_folders

    def _rows(self, images: dict[str, list[str]], photo_images: dict[str, list[str]],
              sketch_prefix: str, photo_prefix: str) -> list[tuple[str, str, str, int]]:
        """(image id, path, domain, label) per image: each class's photos, then its sketches."""
        rows: list[tuple[str, str, str, int]] = []
        for label, name in enumerate(self.class_names):
            rows += [(join_id(photo_prefix, rel), str(self.photo_dir / rel), "photo", label)
                     for rel in photo_images[self.photo_folders[name]]]
            rows += [(join_id(sketch_prefix, rel), str(self.sketch_dir / rel), "sketch", label)
                     for rel in images[name]]
        return rows

    def _filelist_path(self, option: str | os.PathLike[str] | bool | None) -> Path | None:
        """The file list to read (None: scan the folders)."""
        default = self.sketch_dir / FILELIST
        if option is None:
            return default if default.is_file() else None
        if option is False:
            return None
        path = default if option is True else Path(option)
        if not path.is_file():
            raise DataError(f"tuberlin source: filelist {path} does not exist (set "
                            "datasets.<name>.options.filelist: false to scan the class folders)")
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        for image_id, path, domain, label in self.rows:
            yield {"image_id": image_id, "path": path, "domain": domain, "label": label}

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="tuberlin",
            scales=["fine"],
            class_names={"fine": list(self.class_names)},
            options={
                "root": str(self.root),
                "sketches": str(self.sketch_dir),
                "photos": str(self.photo_dir),
                "filelist": str(self.filelist) if self.filelist else None,
                # the photo folders not named as their class, for the record
                "photo_folders": {name: folder for name, folder in self.photo_folders.items()
                                  if folder != name},
            },
        )


@SOURCES.register("tuberlin")
def tuberlin_source(
    *, root: str, photos: str | None = None, filelist: str | bool | None = None,
) -> TuBerlinSource:
    """TU-Berlin sketches (``root/png/<class>/<n>.png``, or ``root/sketches``) with the
    TU-Berlin Extension photos (``photos``, default ``root/photos``) as the gallery; photo
    folders are matched to sketch classes through the release's renamings. ``filelist``:
    default ``png/filelist.txt`` when present, a path, ``true`` (required) or ``false`` (scan).
    """
    return TuBerlinSource(root, photos, filelist)
