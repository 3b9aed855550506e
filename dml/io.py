"""Atomic writes and checksums: outputs appear whole or not at all."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name lives in the same folder so the final ``os.replace`` is atomic on
    POSIX. With ``directory=True`` the temporary path is an empty folder and an existing
    folder at ``path`` is replaced whole, by an atomic exchange where Linux offers one. On
    any exception the temporary is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp and mkdtemp make private (0600, 0700) entries; the output gets the permissions
    # any file written in place would have: the process's umask applied to rw (rwx) for all
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
    try:
        yield tmp
        if directory:
            if target.exists() and exchange_paths(tmp, target):
                _remove(tmp)  # it now holds what was there: a folder, or a file
            else:
                _replace_folder(tmp, target)
        else:
            _fsync(tmp)
            if target.is_dir() and not target.is_symlink():  # a folder before (shards): swap it
                if exchange_paths(tmp, target):
                    _remove(tmp)
                else:
                    _replace_folder(tmp, target)
            else:
                os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    """Delete ``path``, a folder (with its contents) or a file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it to read it, which
    races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the system or file system cannot.
    """
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_folder(tmp: Path, target: Path) -> None:
    """Two renames where an atomic exchange is not available: a death between them leaves the
    previous folder at ``.<name>.old-<pid>``."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        _remove(old)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON atomically (stable bytes for DVC)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in blocks (``hashlib.file_digest``) so large files stay out
    of memory; of a directory (a sharded manifest), over each file's relative name and digest
    in name order."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_fingerprint(package: str | os.PathLike[str] | None = None) -> str:
    """Hex SHA-256 over the path and bytes of every ``.py`` file of the ``dml`` package (or of
    ``package``): runs named with it never resume, or restore, work of other code."""
    root = Path(package) if package is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
