"""Every params key that a message names exists: the strings of dml/ and pipelines/ that name a
dotted key under a section of params.yaml (or under ``ingest``, which is no section) are walked
through the schema (dml.config.Params), placeholders of f-strings standing for any name."""

from __future__ import annotations

import ast
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from dml.config import Component, Params

REPO = Path(__file__).resolve().parents[1]
ANY = "*"  # an f-string's placeholder: a dataset's or an experiment's name, an index
#: Words that start a dotted key in a message: the sections of params.yaml, and ``ingest``,
#: which is a stage and not a section (a message naming ``ingest.on_bad`` names no key).
SECTIONS = (*Params.model_fields, "ingest")
KEY = re.compile(r"(?<![\w./\-{*])((?:%s)(?:\.(?:[A-Za-z_]\w*|\*))+)" % "|".join(SECTIONS))
#: Dotted words that are files or modules, not keys.
NOT_KEYS = re.compile(r"\.(py|json|yaml|lock|parquet|safetensors|md|html|png|log|csv|txt|onnx|faiss)$")


def _text(node: ast.AST) -> str | None:
    """A string constant, or an f-string with each placeholder as ``*``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else ANY for v in node.values)
    return None


def named_keys() -> dict[str, list[str]]:
    """Dotted keys named in the strings of dml/ and pipelines/ -> where (file:line)."""
    found: dict[str, list[str]] = {}
    for path in sorted([*REPO.glob("dml/**/*.py"), *REPO.glob("pipelines/*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            text = _text(node) if id(node) not in skip else None
            if not text:
                continue
            for key in KEY.findall(re.sub(r"\[[^\]]*\]", "", text)):
                key = key.rstrip(".")
                if not NOT_KEYS.search(key):
                    found.setdefault(key, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def _walk(annotation: typing.Any, parts: list[str]) -> bool:
    """Whether ``parts`` is a path inside a value of type ``annotation``."""
    if not parts:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_walk(arg, parts) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is dict:
        value = typing.get_args(annotation)[1]
        return value is typing.Any or _walk(value, parts[1:])
    if annotation is typing.Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if issubclass(annotation, Component) and parts[0] != "name":
            return True  # a component's knobs are its registered class's own (checked by dml check)
        field = annotation.model_fields.get(parts[0])
        return field is not None and _walk(field.annotation, parts[1:])
    return False  # a leaf (number, string, list) has no keys inside it


def key_exists(key: str) -> bool:
    """Whether the dotted ``key`` (``*`` for any name) is a key of params.yaml's schema."""
    return _walk(Params, key.split("."))


def test_the_walk_tells_real_keys_from_others():
    assert key_exists("datasets.*.on_bad") and key_exists("datasets.mine.split.num_folds")
    assert key_exists("experiments.*.loss.margin") and key_exists("train.sampler.m")
    assert key_exists("datasets.*.options.root") and key_exists("experiments.*.train.epochs")
    assert not key_exists("ingest.on_bad") and not key_exists("datasets.*.on_bad.x")
    assert not key_exists("train.epochz") and not key_exists("datasets.*.splits")


@pytest.mark.parametrize("key", sorted(named_keys()))
def test_every_key_a_message_names_exists(key):
    where = ", ".join(named_keys()[key][:3])
    assert key_exists(key), f"{key!r} (named in {where}) is not a key of params.yaml"


def test_the_scan_finds_the_keys_of_known_messages():
    keys = named_keys()
    assert len(keys) > 20
    assert "train.val_metric" in keys or "train.val_folds" in keys


def test_a_source_names_its_options_under_the_datasets_own_key(tmp_path):
    from dml.data.ingest import ingest
    from dml.errors import ConfigError

    (tmp_path / "images" / "cat").mkdir(parents=True)
    options = {"root": str(tmp_path / "images"), "domain": "drawing"}
    with pytest.raises(ConfigError) as bad_value:
        ingest("folder", options, tmp_path / "m.parquet", where="datasets.mine")
    assert str(bad_value.value).startswith("datasets.mine.options.domain: 'drawing'")
    with pytest.raises(ConfigError) as unknown:
        ingest("folder", {**options, "domain": "photo", "colour": 1}, tmp_path / "m.parquet",
               where="datasets.mine")
    assert "datasets.mine.options.colour" in str(unknown.value)
    assert key_exists("datasets.*.options.domain")


def test_paths_outside_the_watched_root_are_named(tmp_path):
    from dml.data.ingest import unwatched_paths

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "inside.csv").write_text("path\n")
    (tmp_path / "outside.csv").write_text("path\n")
    root = str(tmp_path / "images")
    assert unwatched_paths({"root": root, "annotations_csv": str(tmp_path / "images" / "inside.csv")}) == []
    assert unwatched_paths({"root": root, "annotations_csv": str(tmp_path / "outside.csv")}) == ["annotations_csv"]
    assert unwatched_paths({"root": "dml/data/synthetic", "seed": 0}) == []
