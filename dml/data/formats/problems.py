"""Problems found while reading one annotation file, reported together as one DataError, and
the check of the image paths the files list."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from dml.errors import DataError

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
