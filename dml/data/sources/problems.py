"""Problems found while reading one annotation file, reported together as one DataError, and
the check of the image paths the files list."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from dml.errors import ConfigError, DataError

#: Problems listed in one error; the rest are counted.
SHOWN = 20


class FileProblems:
    """Collects ``line N: ...`` problems of one file; :meth:`check` raises them as one
    DataError that names the file, so that a user fixes every line in one pass."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.shown: list[str] = []
        self.count = 0

    def add(self, line: int | None, text: str) -> None:
        """Record a problem on ``line`` (None: one about the whole file)."""
        self.count += 1
        if len(self.shown) < SHOWN:
            self.shown.append(f"line {line}: {text}" if line is not None else text)

    def check(self) -> None:
        """Raise the DataError listing the problems, if there are any."""
        if self.count:
            more = f"\n  ... and {self.count - SHOWN} more" if self.count > SHOWN else ""
            listing = "\n  ".join(self.shown)
            raise DataError(f"{self.path}: {self.count} problem(s):\n  {listing}{more}")


def relative_path(text: str) -> str | None:
    """``text`` as a canonical posix path below the dataset's folder (backslashes read as
    slashes, ``.`` parts dropped), or None when it is empty, absolute or leaves the folder."""
    parts = [p for p in PurePosixPath(text.replace("\\", "/")).parts if p not in (".", "")]
    if not parts or text.startswith(("/", "\\")) or ".." in parts:
        return None
    return "/".join(parts)


def text_lines(path: Path) -> list[tuple[int, str]]:
    """The non-empty lines of the text file ``path``, stripped, with their 1-based numbers
    (UTF-8, a byte-order mark and either line end accepted); DataError naming a file that is
    not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = list(handle)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def listing(items: list[str]) -> str:
    """``items`` joined for a message, the first :data:`SHOWN` of them and a count of the rest."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def id_prefix(folder: Path, root: Path, outside: str) -> str:
    """Image id prefix of the files under ``folder``: its path relative to ``root``, or
    ``outside`` when it lies elsewhere (a photo folder given apart from the dataset's)."""
    try:
        rel = Path(os.path.abspath(folder)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return outside
    return "" if rel == "." else rel


def join_id(prefix: str, rel: str) -> str:
    """The image id of ``rel`` under ``prefix`` (from :func:`id_prefix`)."""
    return f"{prefix}/{rel}" if prefix else rel


#: The ``unlabelled`` option of multi-label readers: what to do with an image that shows no
#: class (the multi-label retrieval literature leaves such images out).
UNLABELLED = ("skip", "fail")
#: Unlabelled images named in the ``unlabelled: fail`` error; the rest are counted.
UNLABELLED_SHOWN = 5


def check_unlabelled(value: object) -> None:
    """ConfigError unless the reader option ``unlabelled`` is one of :data:`UNLABELLED`."""
    if value not in UNLABELLED:
        raise ConfigError(f"datasets.<name>.options.unlabelled: {value!r} is not one of: "
                          f"{', '.join(UNLABELLED)}")


def leave_out_unlabelled(source: str, images: list[tuple[str, str]], mode: str) -> list[str]:
    """The ingest report's ``ignored`` lines, ``"<image> (<why>)"``, for ``(image, why)`` pairs
    of images that show no class; with ``mode`` ``fail`` a DataError naming the first ones."""
    lines = [f"{image} ({why})" for image, why in images]
    if lines and mode == "fail":
        more = (f" and {len(lines) - UNLABELLED_SHOWN} more" if len(lines) > UNLABELLED_SHOWN
                else "")
        raise DataError(f"{source} source: {len(lines)} image(s) show no class (set "
                        "datasets.<name>.options.unlabelled: skip to leave them out): "
                        f"{', '.join(lines[:UNLABELLED_SHOWN])}{more}")
    return lines
