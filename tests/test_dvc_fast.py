"""`dml run`'s dvc.lock reader and writer (libyaml) against DVC's own (ruamel): the same data
both ways, in DVC's block style."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize._yaml import _dump, parse_yaml_for_update

from dml.pipeline.dvc_fast import dump_lock, load_lock

LOCK = Path(__file__).resolve().parents[1] / "dvc.lock"


def test_the_repository_lock_reads_the_same_and_writes_back_what_dvc_reads() -> None:
    text = LOCK.read_text()
    ours = load_lock(text)
    assert ours == yaml.safe_load(text) == parse_yaml_for_update(text, str(LOCK))
    out = io.StringIO()
    dump_lock(ours, out)
    assert parse_yaml_for_update(out.getvalue(), "dvc.lock") == ours  # DVC reads it back unchanged


def test_block_style_of_dvc() -> None:
    """Ordered keys as given, sequences flush with their key, nulls as empty values, as ruamel
    writes them; the two writers may differ only in where a long command wraps."""
    from collections import OrderedDict

    data = {"schema": "2.0", "stages": {"train@x-0": OrderedDict([
        ("cmd", "python pipelines/train.py --experiment x"),
        ("deps", [{"path": "a", "hash": "md5", "md5": "0" * 32, "size": 3}]),
        ("params", {"params.yaml": {"model": {"weights": None, "heads": {}}}}),
    ])}}
    ours, theirs = io.StringIO(), io.StringIO()
    dump_lock(data, ours)
    _dump(data, theirs)
    assert ours.getvalue() == theirs.getvalue()


@pytest.mark.parametrize("text", ["", "schema: '2.0'\n"])
def test_small_files(text: str) -> None:
    assert load_lock(text) == (yaml.safe_load(text) or {})
