"""The Sketchy database, as published or as the DASE/MEMS code lays it out ("sketchy").

Sangkloy et al., "The Sketchy Database: Learning to Retrieve Badly Drawn Bunnies" (SIGGRAPH
2016): 125 classes, 12,500 photos (100 per class, named by ImageNet id) and 75,471 sketches
drawn from them, 5 or more per photo. Two layouts are read, detected under ``root``:

1. The release ``rendered_256x256`` (``root`` is its folder; ``root`` may also be its
   ``256x256`` folder itself):

   - ``256x256/photo/<augmentation>/<class>/<photo>.jpg``, e.g.
     ``photo/tx_000000000000/airplane/n02691156_10151.jpg``;
   - ``256x256/sketch/<augmentation>/<class>/<photo>-<k>.png``, the sketches of that photo,
     ``k`` = 1..N: ``sketch/tx_000000000000/airplane/n02691156_10151-1.png``.

   Augmentation folders (option ``augmentation``), as the release README describes them:
   ``tx_000000000000`` (the default: photo scaled non-uniformly to 256x256, sketch rendered
   with its photo's scaling, so the two stay aligned), ``tx_000100000000`` (photo: the object's
   bounding box plus 10% scaled to 256x256; sketch: centred, uniformly scaled to fill 78% of
   the canvas), and four sketch-only ones centred on the object's bounding box:
   ``tx_000000000010`` (translated only), ``tx_000000000110`` / ``tx_000000001010`` (scaled
   uniformly so the dimension needing the least / most scaling fits the box),
   ``tx_000000001110`` (scaled non-uniformly to fit the box). Photos exist only under the first
   two; with a sketch-only augmentation the photos come from ``tx_000000000000``.

2. The preprocessed layout of the DASE/MEMS authors' code (Lu et al., ACM MM 2021):
   ``photos/<class>/<file>`` and ``sketches/<class>/<file>``; the sketches keep the release's
   names, the photos are usually the Sketchy Extended set below (the code's README links it as
   its photo download). ``augmentation`` is a ConfigError there.

When ``root`` holds both, the release is read. Class folders are read as named, e.g.
``airplane``, ``car_(sedan)``, ``hot-air_balloon``, ``jack-o-lantern``, ``wading_bird`` (some
download scripts rename ``hot-air_balloon`` and ``jack-o-lantern`` to ``hot_air_balloon`` and
``jack_o_lantern``: any names do, as long as the photo and sketch folders agree). Files with an
image extension (``folder.IMAGE_EXTENSIONS``) are images; hidden files (``.DS_Store``) are
skipped; other files (``Thumbs.db``, a README) are listed in ``source.ignored``.

``extended_photos`` (optional) is the ``EXTEND_image_sketchy`` folder of "Sketchy Extended"
(Liu et al., "Deep Sketch Hashing", CVPR 2017): ``<class>/<file>``, the release's photos again
(same ImageNet names) plus 60,502 more, e.g. ``airplane/ext_1.jpg``, 73,002 in all. Its photos
join their class's gallery. A class folder there that is not a class of the data is an error;
a file whose stem is that of a photo read from ``root`` in the same class is that photo again:
left out (and listed in ``source.ignored``) so the gallery does not hold it twice.

``invalid``: the release marks sketches as invalid in four lists, ``info/invalid-ambiguous.txt``,
``invalid-context.txt``, ``invalid-error.txt`` and ``invalid-pose.txt`` (under ``root/info``,
or the folder of option ``info``); the release README calls each "a listing of all sketches
that were deemed invalid" and names a sketch by its id, ``<photo id>-<k>``. Loaders compare the
stripped lines to sketch file stems (one drops a trailing carriage return too), so a line is
read as a sketch id ``n02691156_10151-3``, surrounding whitespace and line ends dropped, with or
without an image extension and a ``<class>/`` prefix (the prefix restricts the line to that
class). ``keep`` (default; the sketches stay, as the release keeps them; the lists are not
read) or ``drop`` (sketches on any list are left out and listed in ``source.ignored`` with their
reasons; the four files must exist). A listed sketch that is not in the data is no problem
(the lists cover the whole release).

Records, class by class in label order: the photos (sorted by path), the extended photos, the
sketches. ``image_id`` the file's path relative to ``root`` (extended photos outside ``root``:
``extended_photos/<class>/<file>``), ``path`` the file, ``domain`` ``photo`` or ``sketch``,
``label`` the rank of the class among the sorted sketch class folders. No ``split`` and no
``role``: the category-level protocol and the zero-shot split come from the split
configuration. Scale ``["fine"]``, class names the sketch class folders.

``instance_id`` links a photo and its sketches: a sketch named ``<photo>-<k>`` has the photo's
stem, even when that photo is not in the data (its name says which photo it was drawn from; a
link without a partner is what a skipped bad photo leaves too). A photo has its stem when a
sketch of its class names it, else None: photos nobody sketched (the extended ones, whose
``ext_<n>`` names recur across classes) link nothing. Sketches named otherwise have None.

Problems raise one DataError: neither layout under ``root`` (naming both), the augmentation
folder missing, photo and sketch classes that differ (naming the classes on one side only), a
class without photos or sketches, photo names that do not link up (a sketch naming a photo of
another class, one photo id sketched in two classes, two photos of a class with one stem),
missing invalid lists with ``invalid: drop`` or lines that are not sketch ids (naming the file
and line), extended photo folders that are not classes of the data. The reader does not open
images: ingest reports missing or unreadable ones.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.folder import IMAGE_EXTENSIONS, scan_tree
from dml.data.sources.problems import (SHOWN, FileProblems, id_prefix, join_id, listing,
                                        relative_path, text_lines)
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

#: The folder of the release archive that holds ``photo/`` and ``sketch/``.
RELEASE_FOLDER = "256x256"
#: Augmentation folders of the release; the first (no augmentation) is the default.
AUGMENTATIONS = ("tx_000000000000", "tx_000100000000", "tx_000000000010", "tx_000000000110",
                 "tx_000000001010", "tx_000000001110")
#: Augmentations with photos of their own; the others take the unaugmented photos.
PHOTO_AUGMENTATIONS = AUGMENTATIONS[:2]
#: Photo and sketch folders of the preprocessed layout.
PREPROCESSED = ("photos", "sketches")
#: The release's lists of invalid sketches, by reason.
INVALID_FILES = {"ambiguous": "invalid-ambiguous.txt", "context": "invalid-context.txt",
                 "error": "invalid-error.txt", "pose": "invalid-pose.txt"}
INVALID_CHOICES = ("keep", "drop")
#: A sketch's stem: its photo's stem, a hyphen, the sketch's number.
SKETCH_STEM = re.compile(r"^(?P<photo>.+)-(?P<number>[0-9]+)$")
#: Image id prefix of extended photos that lie outside ``root``.
EXTENDED_PREFIX = "extended_photos"
LAYOUTS = ("the release rendered_256x256 (256x256/photo/<augmentation>/<class>/<photo>.jpg and "
           "256x256/sketch/<augmentation>/<class>/<photo>-<k>.png) or the preprocessed layout "
           "of the DASE/MEMS code (photos/<class>/<file> and sketches/<class>/<file>)")



def _fail(summary: str, problems: list[str]) -> None:
    """Raise one DataError listing ``problems`` under ``summary``, if there are any."""
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"{summary}:\n  " + "\n  ".join(problems[:SHOWN]) + more)


def _has_folders(parent: Path, *names: str) -> bool:
    return all((parent / name).is_dir() for name in names)




class _Tree:
    """The images of ``folder/<class>/...`` (rel paths sorted per class) and its image ids."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.classes, self.images, ignored = scan_tree(folder)
        self.ignored = [f"{self.image_id(rel)} (not an image file)" for rel in ignored]

    def image_id(self, rel: str) -> str:
        return join_id(self.prefix, rel)


def _stem(rel: str) -> str:
    return PurePosixPath(rel).stem


def _locate(root: Path, augmentation: str | None) -> tuple[str, Path, Path]:
    """(layout, photo folder, sketch folder) of ``root``; DataError when neither layout is
    there or the augmentation folder is missing."""
    base = root / RELEASE_FOLDER
    if not _has_folders(base, "photo", "sketch"):
        base = root if _has_folders(root, "photo", "sketch") else None
    if base is not None:
        chosen = augmentation or AUGMENTATIONS[0]
        sketch_dir = base / "sketch" / chosen
        photo_dir = base / "photo" / (chosen if chosen in PHOTO_AUGMENTATIONS else AUGMENTATIONS[0])
        for folder in (sketch_dir, photo_dir):
            if not folder.is_dir():
                present = sorted(p.name for p in folder.parent.iterdir()
                                 if p.is_dir() and not p.name.startswith("."))
                raise DataError(f"sketchy source: {folder} does not exist (augmentation folders "
                                f"there: {', '.join(present) or 'none'}; see "
                                "datasets.<name>.options.augmentation)")
        return "release", photo_dir, sketch_dir
    if _has_folders(root, *PREPROCESSED):
        if augmentation is not None:
            raise ConfigError(f"datasets.<name>.options.augmentation: {augmentation!r} applies to the "
                              f"release layout only; {root} holds the preprocessed layout "
                              "(photos/, sketches/), whose sketches are not augmented")
        return "preprocessed", root / PREPROCESSED[0], root / PREPROCESSED[1]
    raise DataError(f"sketchy source: root {root} holds neither Sketchy layout; expected "
                    f"{LAYOUTS}")


def _check_classes(photos: _Tree, sketches: _Tree) -> None:
    """DataError unless both trees have the same non-empty class folders, each with images."""
    if not sketches.classes:
        raise DataError(f"sketchy source: {sketches.folder} has no class folders")
    only_photos = sorted(set(photos.classes) - set(sketches.classes))
    only_sketches = sorted(set(sketches.classes) - set(photos.classes))
    if only_photos or only_sketches:
        sides = []
        if only_photos:
            sides.append(f"only among the photos ({photos.folder}): {listing(only_photos)}")
        if only_sketches:
            sides.append(f"only among the sketches ({sketches.folder}): "
                         f"{listing(only_sketches)}")
        raise DataError("sketchy source: the photo and sketch class folders differ; "
                        + "; ".join(sides))
    empty = [f"class {name!r} has no {kind} in {tree.folder / name}"
             for kind, tree in (("photo", photos), ("sketch", sketches))
             for name in tree.classes if not tree.images[name]]
    _fail("sketchy source: empty classes", empty)


def _link(photos: _Tree, sketches: _Tree) -> tuple[dict[tuple[str, str], str], set[str]]:
    """(sketch (class, rel) -> photo stem it names, the photo stems some sketch names);
    DataError when a link would join two classes or two photos."""
    named: dict[tuple[str, str], str] = {}
    classes_of: dict[str, str] = {}  # photo stem -> class of the first sketch naming it
    problems: list[str] = []
    for name in sketches.classes:
        for rel in sketches.images[name]:
            match = SKETCH_STEM.match(_stem(rel))
            if match is None:
                continue
            stem = match["photo"]
            named[name, rel] = stem
            first = classes_of.setdefault(stem, name)
            if first != name:
                problems.append(f"{sketches.image_id(rel)} names photo {stem}, which sketches "
                                f"of class {first!r} name too")
    seen: dict[str, str] = {}  # photo stem -> image id, for stems that sketches name
    for name in photos.classes:
        for rel in photos.images[name]:
            stem = _stem(rel)
            if stem not in classes_of:
                continue
            if classes_of[stem] != name:
                problems.append(f"photo {photos.image_id(rel)} is named by sketches of class "
                                f"{classes_of[stem]!r}")
            elif stem in seen:
                problems.append(f"photos {seen[stem]} and {photos.image_id(rel)} share the stem "
                                f"{stem} that sketches name")
            else:
                seen[stem] = photos.image_id(rel)
    _fail("sketchy source: photos and sketches do not link up by name "
          "(<photo>.jpg, <photo>-<k>.png)", problems)
    return named, set(classes_of)


def _sketch_id(text: str) -> tuple[str | None, str] | None:
    """(class or None, sketch stem) of a line of an invalid list, None when it is no sketch id."""
    rel = relative_path(text)
    parts = rel.split("/") if rel else []
    if not parts or len(parts) > 2:
        return None
    name = parts[-1]
    if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS:
        name = PurePosixPath(name).stem
    if SKETCH_STEM.match(name) is None:
        return None
    return (parts[0] if len(parts) == 2 else None), name


def read_invalid(folder: Path, classes: list[str]) -> dict[tuple[str | None, str], list[str]]:
    """The release's invalid-sketch lists in ``folder``: (class or None for any class, sketch
    stem) -> reasons (``ambiguous``, ``context``, ``error``, ``pose``). DataError when a list is
    missing or a line is not a sketch id."""
    missing = [name for name in INVALID_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(f"sketchy source: invalid: drop needs the release's lists of invalid "
                        f"sketches in {folder}; missing: {', '.join(missing)} (set "
                        "datasets.<name>.options.info to the release's info/ folder)")
    known = set(classes)
    table: dict[tuple[str | None, str], list[str]] = {}
    for reason, name in INVALID_FILES.items():
        path = folder / name
        problems = FileProblems(path)
        for number, text in text_lines(path):
            key = _sketch_id(text)
            if key is None:
                problems.add(number, f"expected a sketch id such as n02691156_10151-3 "
                                     f"(<photo>-<k>), got {text!r}")
            elif key[0] is not None and key[0] not in known:
                problems.add(number, f"class {key[0]!r} is not a class of this data")
            elif reason not in table.setdefault(key, []):
                table[key].append(reason)
        problems.check()
    return table


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else ""


class SketchySource:
    """Records of a Sketchy folder in either layout (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], augmentation: str | None = None,
                 extended_photos: str | os.PathLike[str] | None = None, invalid: str = "keep",
                 info: str | os.PathLike[str] | None = None) -> None:
        if invalid not in INVALID_CHOICES:
            raise ConfigError(f"datasets.<name>.options.invalid: {invalid!r} is not one of: "
                              f"{', '.join(INVALID_CHOICES)}")
        if augmentation is not None and augmentation not in AUGMENTATIONS:
            raise ConfigError(f"datasets.<name>.options.augmentation: {augmentation!r} is not one of: "
                              f"{', '.join(AUGMENTATIONS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"sketchy source: root {self.root} is not a directory")
        self.layout, photo_dir, sketch_dir = _locate(self.root, augmentation)
        self.augmentation = (augmentation or AUGMENTATIONS[0]) if self.layout == "release" else None
        self.invalid = invalid
        photos = _Tree(photo_dir, id_prefix(photo_dir, self.root, ""))
        sketches = _Tree(sketch_dir, id_prefix(sketch_dir, self.root, ""))
        _check_classes(photos, sketches)
        self.class_names = list(sketches.classes)
        self.ignored: list[str] = photos.ignored + sketches.ignored
        named, sketched = _link(photos, sketches)

        self.info_folder: Path | None = None
        invalid_table: dict[tuple[str | None, str], list[str]] = {}
        if invalid == "drop":
            self.info_folder = Path(info) if info is not None else self.root / "info"
            invalid_table = read_invalid(self.info_folder, self.class_names)

        self.extended_folder = Path(extended_photos) if extended_photos is not None else None
        extended, again = (self._extended(photos) if self.extended_folder is not None
                           else (None, set()))

        # (image id, path, domain, label, instance id), class by class
        self.rows: list[tuple[str, str, str, int, str | None]] = []
        for label, name in enumerate(self.class_names):
            for rel in photos.images[name]:
                stem = _stem(rel)
                self.rows.append((photos.image_id(rel), str(photo_dir / rel), "photo", label,
                                  stem if stem in sketched else None))
            if extended is not None:
                for rel in extended.images.get(name, []):
                    if rel in again:
                        continue
                    self.rows.append((extended.image_id(rel), str(extended.folder / rel),
                                      "photo", label, None))
            for rel in sketches.images[name]:
                stem = _stem(rel)
                anywhere = invalid_table.get((None, stem), [])
                reasons = anywhere + [r for r in invalid_table.get((name, stem), [])
                                      if r not in anywhere]
                if reasons:
                    self.ignored.append(f"{sketches.image_id(rel)} (invalid: "
                                        f"{', '.join(reasons)})")
                    continue
                self.rows.append((sketches.image_id(rel), str(sketch_dir / rel), "sketch", label,
                                  named.get((name, rel))))

    def _extended(self, photos: _Tree) -> tuple[_Tree, set[str]]:
        """The extended photo tree and the rel paths in it of photos read from ``root``."""
        folder = self.extended_folder
        assert folder is not None
        if not folder.is_dir():
            raise DataError(f"sketchy source: extended_photos {folder} is not a directory (the "
                            "EXTEND_image_sketchy folder of Sketchy Extended)")
        tree = _Tree(folder, id_prefix(folder, self.root, EXTENDED_PREFIX))
        unknown = [f"{name!r}{_close(name, self.class_names)}" for name in tree.classes
                   if name not in photos.images]
        _fail(f"sketchy source: extended_photos {folder} has class folders that are not classes "
              f"of the data ({len(self.class_names)} classes in {photos.folder})", unknown)
        again: set[str] = set()
        for name in tree.classes:
            release = {_stem(rel): rel for rel in photos.images[name]}
            for rel in tree.images[name]:
                original = release.get(_stem(rel))
                if original is not None:
                    again.add(rel)
                    self.ignored.append(f"{tree.image_id(rel)} (the photo "
                                        f"{photos.image_id(original)} again)")
        self.ignored += tree.ignored
        return tree, again

    def records(self) -> Iterator[dict[str, Any]]:
        for image_id, path, domain, label, instance in self.rows:
            yield {
                "image_id": image_id,
                "path": path,
                "domain": domain,
                "label": label,
                "instance_id": instance,
            }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="sketchy",
            scales=["fine"],
            class_names={"fine": list(self.class_names)},
            options={
                "root": str(self.root),
                "layout": self.layout,
                "augmentation": self.augmentation,
                "extended_photos": str(self.extended_folder) if self.extended_folder else None,
                "invalid": self.invalid,
                "info": str(self.info_folder) if self.info_folder else None,
            },
        )


@SOURCES.register("sketchy")
def sketchy_source(
    *, root: str, augmentation: str | None = None, extended_photos: str | None = None,
    invalid: str = "keep", info: str | None = None,
) -> SketchySource:
    """The Sketchy database from ``root``: the release ``rendered_256x256`` or the DASE/MEMS
    ``photos/`` + ``sketches/`` layout, detected. ``augmentation`` picks the release's
    augmentation folder (default ``tx_000000000000``, none); ``extended_photos`` adds the
    Sketchy Extended photos (``EXTEND_image_sketchy``) to the gallery; ``invalid: drop`` leaves
    out the sketches on the release's invalid lists (in ``info``, default ``root/info``).
    """
    return SketchySource(root, augmentation, extended_photos, invalid, info)
