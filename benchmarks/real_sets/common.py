"""What every builder of a real image set shares: the built set's description, small image
reading, exact-duplicate removal and an atomic output folder.

A builder module (one per Debian package) exposes ``PACKAGE`` (the apt package name),
``DEFAULT_SOURCE`` (where the package puts its files) and ``build(source, out, *, quick=False,
**options) -> list[BuiltSet]``. It writes, under ``out/<set name>/``, an ImageFolder tree
``images/<class>/<file>.png`` (RGB on white, longest side at most ``MAX_SIDE``) and, where the
set has more than fine labels, ``images/annotations.csv`` as the project's ``folder`` source
reads it (``path``, ``label_<scale>``, ``attr_<name>``, ``domain``, ``split``; inside the root,
where the pipeline's ingest stage, which watches the root, sees it change), or a COCO tree for
multi-object sets.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

#: Longest side of a stored image: the pipeline reads at most 64-260 px.
MAX_SIDE = 256
#: Larger images are left out (a few clip-art files reach 623 Mpx; decoding one takes GBs).
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class BuiltSet:
    """One built set: how the suite's params name it, and what the report says of it."""

    name: str
    source: str                         # a source of dml/data/sources ("folder", "coco")
    options: dict[str, Any]             # that source's options (root, annotations_csv, ...)
    split: dict[str, Any]               # datasets.<name>.split
    protocol: dict[str, Any]            # datasets.<name>.protocol
    scales: list[str] = field(default_factory=lambda: ["fine"])   # fine -> coarse
    attributes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)          # classes, images, ...
    notes: str = ""                     # one line for the report: what was left out and why

    def dataset_entry(self) -> dict[str, Any]:
        """The ``datasets.<name>`` entry of a params file."""
        return {"source": self.source, "on_bad": "fail", "options": dict(self.options),
                "split": dict(self.split), "protocol": dict(self.protocol)}


def decode_small(path: str | os.PathLike[str]) -> tuple[str, Image.Image | None]:
    """(status, image): ``""`` and the image as RGB on white, its longest side at most
    ``MAX_SIDE``; or ``"too_large"`` (over ``MAX_PIXELS``, never decoded) or ``"undecodable"``."""
    try:
        with warnings.catch_warnings():   # the size is checked here, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    return "too_large", None
                image.load()
                if image.mode in ("P", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
                    image = image.convert("RGBA")
                if image.mode == "RGBA":
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image)
                image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return "undecodable", None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return "", image


def open_small(path: str | os.PathLike[str]) -> Image.Image | None:
    """``decode_small``'s image, or None when it is too large or cannot be decoded."""
    return decode_small(path)[1]


class Deduplicator:
    """Remembers the pixels of every image kept; ``seen`` says whether these are a repeat."""

    def __init__(self) -> None:
        self._digests: set[str] = set()

    def seen(self, image: Image.Image) -> bool:
        digest = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()
        if digest in self._digests:
            return True
        self._digests.add(digest)
        return False


def save_png(image: Image.Image, path: Path) -> None:
    """Writes ``image`` as PNG at ``path``, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


@contextlib.contextmanager
def built_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary folder beside ``out`` that replaces ``out`` when the block ends
    without an error (and is removed when it raises): a cut build leaves no half set."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV with ``header`` and ``rows``, written through a temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def unique_png_name(base: str, taken: set[str]) -> str:
    """``<base>.png``, or ``<base>_<n>.png`` with the first n that is not in ``taken``
    (which it joins): two sources of one stem keep both files."""
    name, n = f"{base}.png", 1
    while name in taken:
        n += 1
        name = f"{base}_{n}.png"
    taken.add(name)
    return name


def safe_name(text: str) -> str:
    """A folder name: lower case, letters, digits and ``_`` only."""
    cleaned = "".join(c if c.isalnum() else "_" for c in text.lower())
    return "_".join(part for part in cleaned.split("_") if part) or "unnamed"
