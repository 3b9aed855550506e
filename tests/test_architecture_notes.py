"""ARCHITECTURE.md stays true: every path and module it names exists, every package and
top-level module of ``dml`` has its line, and every stage of dvc.yaml is in its picture."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTES = (ROOT / "ARCHITECTURE.md").read_text()


def test_every_named_path_and_module_exists() -> None:
    paths = set(re.findall(r"`(dml/[\w/]*(?:\.py)?)`", NOTES))
    modules = set(re.findall(r"`(dml(?:\.\w+)+)", NOTES))
    assert paths and modules
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []
    assert [m for m in sorted(modules) if not _resolves(m)] == []


def _resolves(dotted: str) -> bool:
    """A module or package, or a name (``Class.method``) inside a module whose file exists."""
    parts = dotted.split(".")
    for end in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:end])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def test_every_package_and_top_level_module_has_its_line() -> None:
    rows = set(re.findall(r"^\| `(dml/[\w/]*(?:\.py)?)` \|", NOTES, re.M))
    packages = {f"dml/{p.parent.relative_to(ROOT / 'dml')}/" for p in (ROOT / "dml").rglob("__init__.py")
                if p.parent != ROOT / "dml"}
    modules = {f"dml/{p.name}" for p in (ROOT / "dml").glob("*.py") if p.name != "__init__.py"}
    assert sorted((packages | modules) - rows) == []


def test_the_picture_shows_every_stage() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    picture = NOTES.split("```")[1]
    assert [s for s in stages if not re.search(rf"\b{s}\b", picture)] == []
