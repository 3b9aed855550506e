"""A fingerprint of the files a dataset's source reads, so that DVC re-runs ingest when an
image or an annotation file changes.

DVC cannot list a dataset's own files as the ingest stage's deps (they differ per source and
live outside the repository), so an always-run stage writes this fingerprint and ingest
depends on it: when nothing changed its content is the same and ingest is skipped. Every
option of the source that names an existing file or folder is fingerprinted: a file by its
SHA-256, a folder by each file's relative path, size and modification time (reading every
image of a large collection on each `dvc repro` would cost more than the check is worth).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from dml.io import sha256_file


def _folder_digest(root: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    files = total = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files, total = files + 1, total + stat.st_size
    return {"folder": str(root), "files": files, "bytes": total, "sha256": digest.hexdigest()}


def dataset_fingerprint(source: str, options: dict[str, Any]) -> dict[str, Any]:
    """``{"source", "options", "paths": {option: fingerprint}}`` for the options that name an
    existing file (its SHA-256) or folder (its files' names, sizes and times)."""
    paths: dict[str, Any] = {}
    for key, value in sorted(options.items()):
        if not isinstance(value, str) or not value:
            continue
        path = Path(value)
        if path.is_file():
            paths[key] = {"file": value, "sha256": sha256_file(path)}
        elif path.is_dir():
            paths[key] = _folder_digest(path)
    return {"source": source, "options": options, "paths": paths}
