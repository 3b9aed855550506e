"""The category-level split of sketch-based retrieval (``split.method: held_out_queries``): held-out
query sketches per class against every photo, which is trained on too (a shared gallery)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dml.data.dataset import ManifestDataset
from dml.data.rows import ManifestRows
from dml.data.ingest import ingest
from dml.data.manifest import read_manifest
from dml.data.splits import evaluated_rows, make_splits, shared_gallery, write_splits
from dml.errors import ConfigError, DataError
from dml.evaluate.experiment import test_rows as rows_of_test
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.held_out import validation_set


def _two_domains(classes: int = 4, photos: int = 5, sketches: int = 7) -> pa.Table:
    ids, labels, domains = [], [], []
    for c in range(classes):
        for domain, count in (("photo", photos), ("sketch", sketches)):
            for k in range(count):
                ids.append(f"{domain}-{c}-{k}")
                labels.append(c)
                domains.append(domain)
    return pa.table({"image_id": ids, "label": labels, "domain": domains})


def _columns(splits: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array(splits.column("split").to_pylist(), dtype=object),
            np.array(splits.column("role").to_pylist(), dtype=object),
            splits.column("fold").to_numpy())


def test_queries_per_class_held_out_and_photos_shared():
    table = _two_domains()
    splits = make_splits(table, method="held_out_queries", queries_per_class=2, num_folds=3, seed=0)
    split, role, fold = _columns(splits)
    labels = table.column("label").to_numpy()
    domain = np.array(table.column("domain").to_pylist())
    # 2 query sketches of each class, nothing else in test
    test = split == "test"
    assert (domain[test] == "sketch").all() and (role[test] == "query").all()
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 2, 2, 2]
    # every photo: trained on and the gallery, in no fold
    photo = domain == "photo"
    assert (split[photo] == "train").all() and (role[photo] == "gallery").all() and (fold[photo] == -1).all()
    # the other sketches train, dealt into folds class by class: 5 per class over 3 folds
    rest = (domain == "sketch") & ~test
    assert (split[rest] == "train").all() and (role[rest] == "both").all()
    for c in range(4):
        counts = np.bincount(fold[rest & (labels == c)], minlength=3)
        assert sorted(counts.tolist()) == [1, 2, 2]
    assert shared_gallery(split, role).tolist() == photo.tolist()
    assert evaluated_rows(split, role).tolist() == (photo | test).tolist()


def test_seeded_and_recorded():
    table = _two_domains()
    a = make_splits(table, method="held_out_queries", queries_per_class=3, seed=4)
    b = make_splits(table, method="held_out_queries", queries_per_class=3, seed=4)
    c = make_splits(table, method="held_out_queries", queries_per_class=3, seed=5)
    assert a.equals(b) and not a.equals(c)
    assert b'"queries_per_class": 3' in a.schema.metadata[b"dml"]


def test_query_domain_photo_swaps_the_sides():
    splits = make_splits(_two_domains(), method="held_out_queries", queries_per_class=1,
                         query_domain="photo")
    split, role, _ = _columns(splits)
    ids = splits.column("image_id").to_pylist()
    assert all(i.startswith("photo") for i, s in zip(ids, split) if s == "test")
    assert all(i.startswith("sketch") for i, r in zip(ids, role) if r == "gallery")


@pytest.mark.parametrize("kwargs, error, words", [
    ({"method": "held_out_queries"}, ConfigError, "queries_per_class"),
    ({"method": "random", "queries_per_class": 2}, ConfigError, "held_out_queries"),
    ({"method": "held_out_queries", "queries_per_class": 7}, DataError, "class 0 (7)"),
    ({"method": "held_out_queries", "queries_per_class": 2, "query_fraction": 0.5}, ConfigError,
     "query_fraction"),
    ({"method": "held_out_queries", "queries_per_class": 2, "query_domain": "drawing"}, ConfigError,
     "query_domain"),
])
def test_bad_settings_are_named(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        make_splits(_two_domains(), **kwargs)


def test_needs_both_domains():
    photos_only = _two_domains(sketches=0)
    with pytest.raises(DataError, match="'sketch'"):
        make_splits(photos_only, method="held_out_queries", queries_per_class=1)
    no_domain = _two_domains().drop(["domain"])
    with pytest.raises(DataError, match="missing: \\['domain'\\]"):
        make_splits(no_domain, method="held_out_queries", queries_per_class=1)


@pytest.fixture()
def sketch_data(tmp_path):
    """A real synthetic manifest with photos and sketches, split by held-out queries."""
    manifest = tmp_path / "manifest.parquet"
    ingest("synthetic", {"seed": 0, "image_size": 16, "families": 2, "types_per_family": 1,
                         "classes_per_type": 2, "images_per_class": 6,
                         "domains": ["photo", "sketch"]}, manifest)
    table = read_manifest(manifest, columns=["image_id", "label", "domain"])
    splits = tmp_path / "splits.parquet"
    write_splits(make_splits(table, method="held_out_queries", queries_per_class=2, num_folds=2,
                             seed=0), splits)
    return str(manifest), str(splits)


def test_training_validation_and_test_rows(sketch_data):
    manifest, splits = sketch_data
    train = ManifestDataset(manifest, splits, split="train", exclude_folds=[0])
    val = validation_set(manifest, splits, [0])
    every = EvalRows.from_rows(ManifestRows(manifest, splits))
    photos = int((every.domain == "photo").sum())
    # training: every photo, the sketches outside fold 0
    assert int((train.rows.domains == "photo").sum()) == photos
    train_sketches = set(np.asarray(train.rows.image_ids)[train.rows.domains == "sketch"])
    val_rows = EvalRows.from_rows(val.rows)
    val_sketches = set(val_rows.ids[val_rows.domain == "sketch"])
    assert val_sketches and not val_sketches & train_sketches
    # validation searches the same photos as the test
    assert int((val_rows.domain == "photo").sum()) == photos
    # the test: the held-out query sketches against all photos
    test = every.subset(rows_of_test(every))
    assert int((test.domain == "photo").sum()) == photos
    assert (test.role[test.domain == "sketch"] == "query").all()
    protocol = build_protocol({"name": "cross_domain"})
    queries, gallery, own = protocol.split(test)
    assert len(queries) == 2 * 4 and len(gallery) == photos and (own == -1).all()
    perfect = np.eye(4, dtype=np.float32)[test.fine] * 10
    assert protocol.evaluate(test, perfect, ks=(1,), nmi=False)["map"] == pytest.approx(1.0)
