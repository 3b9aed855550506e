"""Which code a pipeline stage runs, as one small fingerprint per stage script.

A stage must re-run when any ``dml`` module its script imports changes, and only then. Listing
those modules as DVC deps of every stage works, but DVC rewrites ``dvc.lock`` after each stage
and re-parses it in pure Python: with a few dozen files per stage and a few stages per
experiment the lock file grows to thousands of lines and the pipeline spends seconds per
stage on YAML. Instead the ``code`` stage writes, for each stage script, the sha256 of every
file the script imports (read from the source, function-level imports included,
transitively), and each stage depends on its script's fingerprint alone: one entry in the
lock file, the same precision.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

__all__ = ["code_fingerprint", "dml_closure", "source_root"]

#: The folder that holds the ``dml`` package.
ROOT = Path(__file__).resolve().parents[2]


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module ``dml.a.b`` (a package's ``__init__.py``) under ``root``, or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, package: str) -> set[str]:
    """The ``dml`` module names ``path`` imports anywhere in its source (``from a import b``
    gives ``a`` and ``a.b``, as ``b`` may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return {n for n in names if n == "dml" or n.startswith("dml.")}


def dml_closure(script: Path, root: Path = ROOT) -> set[Path]:
    """Every file of the ``dml`` package that ``script`` imports, directly or not (each
    imported module's parent packages included, as Python runs their ``__init__``)."""
    seen: set[Path] = set()
    todo = [(Path(script), "")]
    while todo:
        path, package = todo.pop()
        for name in _imported(path, package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]), root)
                if file is not None and file not in seen:
                    seen.add(file)
                    pkg = ".".join(parts[:i]) if file.name == "__init__.py" else ".".join(parts[: i - 1])
                    todo.append((file, pkg))
    return seen


def source_root() -> Path:
    """The folder whose ``dml`` sources the pipeline tracks: the working directory when it
    holds the package (the project's checkout, as DVC sees it), else the installed package's."""
    return Path.cwd() if (Path.cwd() / "dml" / "__init__.py").is_file() else ROOT


def code_fingerprint(script: Path, root: Path | None = None) -> dict[str, str]:
    """``{path: sha256}`` of ``script`` (under the path given) and of every ``dml`` file it
    imports (relative to ``root``, default :func:`source_root`), sorted by path."""
    root = source_root() if root is None else root
    files = {str(script): Path(script)}
    files.update({str(f.relative_to(root)): f for f in dml_closure(script, root)})
    return {name: hashlib.sha256(files[name].read_bytes()).hexdigest() for name in sorted(files)}
