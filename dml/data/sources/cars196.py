"""Stanford Cars as deep metric learning uses it ("cars196").

Krause et al., "3D Object Representations for Fine-Grained Categorization" (3dRR 2013);
the zero-shot split of Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding" (CVPR 2016). Layout under ``root`` (the folder of the ``car_ims.tgz`` and
``cars_annos.mat`` release):

- ``cars_annos.mat``: a MATLAB v5 file with two variables.
  ``annotations`` is a 1x16185 struct array, one element per image, with the fields
  ``relative_im_path`` (``car_ims/000001.jpg``), ``bbox_x1``, ``bbox_y1``, ``bbox_x2``,
  ``bbox_y2`` (the car's box), ``class`` (1-196) and ``test`` (0/1). ``class_names`` is a
  1x196 cell array of strings, class id ``k`` named by its ``k``-th entry
  (``AM General Hummer SUV 2000``);
- ``car_ims/000001.jpg`` ... ``car_ims/016185.jpg``: the images (JPEG), at the listed paths
  relative to ``root``.

Quirks: the ``test`` flag is the release's fine-grained classification split (8,144 / 8,041
images, every class on both sides); the metric-learning protocol ignores it and splits by
class, so the reader does not read it, nor the boxes (images are used uncropped). The other
release of the dataset (``cars_train/``, ``cars_test/`` and ``devkit/cars_{train,test}_annos.mat``
with ``devkit/cars_meta.mat``) is not read: it names the images differently.

Records, in annotation order: ``image_id`` the listed path, ``path`` the file, ``domain``
``photo``, role ``both`` (self-retrieval: every test image is a query against all the
others), split ``train`` for classes 1-98 and ``test`` for classes 99-196 (8,054 and 8,131
images in the release). Scale ``["fine"]``: ``label`` the rank of the class id among the
196 ids of ``class_names`` (``class_id - 1``), class names from ``class_names`` (surrounding
whitespace dropped). ``class_names`` is required, with 196 non-empty strings: inventing names
(the ids) would hide a file that is not the release's.

Problems (a file that is missing or not a MATLAB v5 file, no ``annotations`` or
``class_names`` variable, ``annotations`` without a ``relative_im_path`` or ``class`` field,
``class_names`` not 196 strings, an annotation whose class is not an integer in 1-196 or
whose path is not text, leaves ``root`` or is listed twice, no annotation at all) raise one
DataError naming the file and, the file being MATLAB rather than lines, the annotation's
1-based index: ``annotation 17: ...``. The reader does not look at the images: ingest reports
a missing or unreadable one with its file and annotation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import mat_struct

from dml.data.sources import SOURCES
from dml.data.sources.problems import FileProblems, relative_path
from dml.data.manifest import ManifestInfo
from dml.errors import DataError

ANNOTATIONS_FILE = "cars_annos.mat"
NUM_CLASSES = 196
#: Class ids up to this one are train, the others test (the zero-shot protocol).
LAST_TRAIN_CLASS = 98
#: Fields of ``annotations`` the reader reads (the boxes and ``test`` are not read).
FIELDS = ("relative_im_path", "class")


def _load(path: Path) -> dict[str, Any]:
    """The ``annotations`` and ``class_names`` variables of ``path`` (those present)."""
    if not path.is_file():
        raise DataError(f"cars196 source: {path} does not exist (root must be the folder "
                        f"holding {ANNOTATIONS_FILE} and car_ims/ of the release)")
    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False,
                       variable_names=["annotations", "class_names"])
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        raise DataError(f"{path}: a MATLAB v7.3 (HDF5) file; the release's {ANNOTATIONS_FILE} "
                        "is a MATLAB v5 file (save it with -v7 or earlier)") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on a corrupt file
        raise DataError(f"{path}: not a readable MATLAB v5 file ({type(exc).__name__}: "
                        f"{exc})") from None


def _elements(value: Any) -> list[Any] | None:
    """The elements of a squeezed MATLAB array (a 1x1 one is squeezed to its element), in
    MATLAB's order; None when ``value`` is a character array (text, not a list)."""
    if isinstance(value, str):
        return None
    if isinstance(value, np.ndarray):
        return list(value.ravel(order="F"))
    return [value]


def _show(value: Any) -> str:
    """``value`` for a message: numpy scalars and arrays as the Python values they hold."""
    return repr(value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value)


def _class_id(value: Any) -> int | None:
    """``value`` as an integer in 1..NUM_CLASSES (MATLAB keeps integers as uint8 or as
    integral doubles), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        return None
    if not isinstance(value, Integral) and not float(value).is_integer():
        return None
    number = int(value)
    return number if 1 <= number <= NUM_CLASSES else None


def _class_names(data: dict[str, Any], problems: FileProblems) -> list[str]:
    if "class_names" not in data:
        problems.add(None, f"no 'class_names' variable (a 1x{NUM_CLASSES} cell array of "
                           "strings in the release)")
        return []
    names = _elements(data["class_names"])
    if names is None or len(names) != NUM_CLASSES:
        count = 1 if names is None else len(names)
        problems.add(None, f"class_names has {count} entries, expected {NUM_CLASSES}")
        return []
    bad = [i for i, name in enumerate(names, start=1)
           if not isinstance(name, str) or not name.strip()]
    if bad:
        problems.add(None, f"class_names entries {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                           "are not non-empty strings")
        return []
    return [name.strip() for name in names]


def _read(path: Path) -> tuple[list[str], list[tuple[int, str, int]]]:
    """(class names, (annotation number, relative path, class id) per image)."""
    data = _load(path)
    problems = FileProblems(path)
    names = _class_names(data, problems)
    if "annotations" not in data:
        problems.add(None, "no 'annotations' variable (a struct array, one element per image, "
                           "in the release)")
        problems.check()
    entries = _elements(data["annotations"])
    if entries is None or not all(isinstance(e, mat_struct) for e in entries):
        problems.add(None, "annotations is not a struct array")
        problems.check()
    assert entries is not None
    missing = [f for f in FIELDS if entries and f not in entries[0]._fieldnames]
    if missing:
        problems.add(None, f"annotations has no field {', '.join(map(repr, missing))} (fields: "
                           f"{', '.join(entries[0]._fieldnames)})")
        problems.check()
    rows: list[tuple[int, str, int]] = []
    paths: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"annotation {number}"
        text, value = entry.relative_im_path, getattr(entry, "class")
        class_id = _class_id(value)
        rel = relative_path(text) if isinstance(text, str) else None
        if not isinstance(text, str):
            problems.add(None, f"{where}: relative_im_path {_show(text)} is not text")
        elif rel is None:
            problems.add(None, f"{where}: relative_im_path {text!r} leaves the dataset folder")
        elif class_id is None:
            problems.add(None, f"{where}: class {_show(value)} is not an integer in "
                               f"1..{NUM_CLASSES}")
        elif rel in paths:
            problems.add(None, f"{where}: path {rel} already on annotation {paths[rel]}")
        else:
            paths[rel] = number
            rows.append((number, rel, class_id))
    if not entries and not problems.count:
        problems.add(None, "no images (annotations is empty)")
    problems.check()
    return names, rows


class Cars196Source:
    """Records of a Stanford Cars folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"cars196 source: root {self.root} is not a directory")
        self.annotations_path = self.root / ANNOTATIONS_FILE
        self.class_names, self.rows = _read(self.annotations_path)

    def records(self) -> Iterator[dict[str, Any]]:
        for number, rel, class_id in self.rows:
            yield {
                "image_id": rel,
                "path": str(self.root / rel),
                "split": "train" if class_id <= LAST_TRAIN_CLASS else "test",
                "role": "both",
                "domain": "photo",
                "label": class_id - 1,
                "_origin": f"{self.annotations_path} annotation {number}",
            }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="cars196",
            scales=["fine"],
            class_names={"fine": list(self.class_names)},
            options={"root": str(self.root)},
        )


@SOURCES.register("cars196")
def cars196_source(*, root: str) -> Cars196Source:
    """Stanford Cars (Cars196) from the published folder ``root`` (``cars_annos.mat`` and
    ``car_ims/``): the 196 car models are the classes; classes 1-98 for training, 99-196 for
    self-retrieval (role ``both``); the release's ``test`` flag is ignored.
    """
    return Cars196Source(root)
