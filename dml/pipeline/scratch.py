"""Where scratch lives: ignored working space, short temp folders for Unix sockets, run storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

SCRATCH_ENV = "DML_SCRATCH"


def scratch_dir() -> Path:
    """Ignored working space (Ray temp files, run folders): $DML_SCRATCH or ./.scratch."""
    path = Path(os.environ.get(SCRATCH_ENV) or ".scratch").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Ray's deepest socket path adds about 70 bytes to its temp dir (``session_<date>_<time>_<pid>/
#: sockets/plasma_store``) and a Unix socket path holds at most 107: the temp dir must be short
#: wherever the checkout is.
SHORT_TEMP_LIMIT = 32


#: The file in a short temp folder that names the process it belongs to.
OWNER_FILE = "owner.pid"


@contextlib.contextmanager
def short_temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder with a short path under the system temp dir (``/tmp`` where $TMPDIR is
    long) for Unix sockets, removed with everything in it when the block ends. Folders of the
    same prefix whose process died without removing its own (SIGKILL) are removed first."""
    base = tempfile.gettempdir()
    if len(base) > SHORT_TEMP_LIMIT:
        base = "/tmp"
    _remove_abandoned(Path(base), prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(base: Path, prefix: str) -> None:
    """Remove ``base/<prefix>*`` folders whose owner process is no longer alive."""
    for folder in base.glob(f"{prefix}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or its owner is writing the file now
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def storage_dir(configured: str | None) -> Path:
    """Absolute folder for Ray run storage (checkpoints): configured, or scratch/ray_results."""
    path = Path(configured).resolve() if configured else scratch_dir() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return path

