"""Which ``dml`` modules a script imports, read from the source (function-level imports
included), transitively."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_file(name: str) -> Path | None:
    """The file of module ``dml.a.b`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return {n for n in names if n == "dml" or n.startswith("dml.")}


def dml_closure(script: Path) -> set[Path]:
    """Every file of the ``dml`` package that ``script`` imports, directly or not (each
    imported module's parent packages included, as Python runs their ``__init__``)."""
    seen: set[Path] = set()
    todo = [(script, "")]
    while todo:
        path, package = todo.pop()
        for name in _imported(path, package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    seen.add(file)
                    pkg = ".".join(parts[:i]) if file.name == "__init__.py" else ".".join(parts[: i - 1])
                    todo.append((file, pkg))
    return seen
