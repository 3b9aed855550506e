"""The protocol: class-disjoint (zero-shot) train/test splits and validation folds.

``make_splits`` returns one row per manifest row: ``image_id``, ``split`` (train / val /
test), ``role`` (query / gallery / both) and ``fold`` (int64; -1 on test rows).

- Single-label manifests (a ``label`` column): the fine classes are split, never the images,
  so no test class is seen in training. ``method="random"`` draws the test classes from
  ``seed``; ``method="ordered"`` takes the first classes (by id) for training and the rest for
  test, as CUB's 1-100 / 101-200. Test rows get role ``both``: the query set is the gallery
  set, each query left out of its own ranking.
- A manifest that already has ``split`` (and/or ``role``) columns is respected as is (In-Shop,
  SOP, DyML define them); missing roles become ``both``. Only such a manifest's test rows may
  lack a label (DyML's per-scale benchmarks).
- Training classes (every class of a non-test row) are dealt into ``num_folds`` class-disjoint
  validation folds from ``seed``; hyperparameter search validates on one fold and trains on
  the others, never touching the test classes.
- Multi-label manifests without ``label`` (scenes with ``object_counts``) cannot be split by
  class: their images are split at random (or in order) and dealt into folds by image, so
  every class appears on both sides (the multi-label retrieval literature's protocol: COCO,
  NUS-WIDE).
- ``query_fraction``: a seeded share of the test rows becomes the queries (role ``query``),
  the others the gallery (role ``gallery``), as multi-label retrieval samples a query set
  from the test images and searches the rest. Only for a manifest without roles.
- ``method="held_out_queries"``: the category-level protocol of sketch-based retrieval
  (Sketchy, TU-Berlin; the split of the DASE/MEMS authors' code). Every class is trained on;
  ``queries_per_class`` seeded rows of each class in ``query_domain`` (sketches) are held out
  as test queries (role ``query``), and every row of the other domain (photos) is both
  trained on and searched: split ``train``, role ``gallery``, a *shared gallery*
  (:func:`evaluated_rows`). The other query-domain rows are dealt into the validation folds
  class by class (each fold holds sketches of every class); the shared gallery belongs to
  no fold (-1), so it is never held out of training and validation searches it as the test
  does. The zero-shot variant of that benchmark is ``random`` or ``ordered``: its test
  classes' sketches are searched among their photos.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dml.data.hierarchy import class_parents, scale_labels
from dml.data.manifest import DOMAINS, SPLITS, ManifestInfo, attribute_matrix
from dml.errors import ConfigError, DataError
from dml.io import atomic_path

METHODS = ("random", "ordered", "held_out_queries")
SPLITS_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("split", pa.string()), ("role", pa.string()), ("fold", pa.int64())]
)


def evaluated_rows(split: np.ndarray, role: np.ndarray) -> np.ndarray:
    """Mask of the rows a test evaluation ranks: the test split, and the training rows that
    form a shared gallery (role ``gallery``: trained on and searched, as the photos of the
    category-level sketch protocol)."""
    split, role = np.asarray(split, dtype=object), np.asarray(role, dtype=object)
    return (split == "test") | shared_gallery(split, role)


def shared_gallery(split: np.ndarray, role: np.ndarray) -> np.ndarray:
    """Mask of the training rows that are also the test and validation gallery."""
    return (np.asarray(split, dtype=object) == "train") & (np.asarray(role, dtype=object) == "gallery")


def _check(test_fraction: float, num_folds: int, method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"split.method: {method!r} is not one of: {', '.join(METHODS)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"split.test_fraction: {test_fraction} must lie strictly between 0 and 1")
    if int(num_folds) < 1:
        raise ConfigError(f"split.num_folds: {num_folds} must be at least 1")


def make_splits(
    table: pa.Table,
    *,
    test_fraction: float = 0.5,
    num_folds: int = 3,
    seed: int = 0,
    method: str = "random",
    query_fraction: float | None = None,
    queries_per_class: int | None = None,
    query_domain: str = "sketch",
) -> pa.Table:
    """Split ``table`` (a manifest) into train/test and validation folds; see the module doc.

    Deterministic in ``seed``; rows keep the manifest's order.
    """
    _check(test_fraction, num_folds, method)
    _check_request(table, method, query_fraction, queries_per_class)
    if method == "held_out_queries":
        return _held_out_queries(table, int(queries_per_class), query_domain,
                                 num_folds=num_folds, seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    fold_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    if "label" in table.column_names:
        split, fold = _split_by_class(table, test_fraction, num_folds, method, rng, fold_rng)
    else:
        split, fold = _split_by_image(table, test_fraction, num_folds, method, rng, fold_rng)
    role = _roles(table, split, query_fraction, seed)
    return _splits_table(table, split, role, fold, {
        "method": "given" if "split" in table.column_names else method,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "num_folds": int(num_folds),
        "class_disjoint": "label" in table.column_names,
        "query_fraction": query_fraction,
    })


def _check_request(table: pa.Table, method: str, query_fraction: float | None,
                   queries_per_class: int | None) -> None:
    """Refuse a manifest without ids, and query options that do not go with ``method``."""
    if "image_id" not in table.column_names:
        raise DataError("make_splits: the manifest has no 'image_id' column")
    if (method == "held_out_queries") != (queries_per_class is not None):
        raise ConfigError("split.queries_per_class goes with split.method: held_out_queries "
                          "(the category-level protocol), and only with it")
    if method == "held_out_queries" and query_fraction is not None:
        raise ConfigError("split.query_fraction: held_out_queries draws its queries per "
                          "class (split.queries_per_class); remove query_fraction")


def _labels(table: pa.Table, *, nulls_allowed: bool) -> np.ndarray:
    """The fine labels, int64, -1 where unknown; a null is refused (naming its first row)
    unless ``nulls_allowed`` (a manifest's own split may leave test rows unlabelled)."""
    label_col = table.column("label")
    if label_col.null_count and not nulls_allowed:
        row = int(np.flatnonzero(label_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"make_splits: null label on row {row} "
                        f"(image_id {table.column('image_id')[row].as_py()!r})")
    return label_col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _given_split(table: pa.Table) -> np.ndarray:
    """The manifest's own ``split`` column, as an object array."""
    return np.asarray(table.column("split").to_pylist(), dtype=object)


def _split_by_class(table: pa.Table, test_fraction: float, num_folds: int, method: str,
                    rng: np.random.Generator,
                    fold_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(split, fold)`` of a single-label manifest: test classes drawn (or the manifest's own
    split), training classes dealt into folds, so that no class is on two sides."""
    has_split = "split" in table.column_names
    labels = _labels(table, nulls_allowed=has_split)
    if has_split:  # the manifest's validation allows an unknown label on test rows only
        split = _given_split(table)
    else:
        split = _test_classes(labels, test_fraction, method, rng)
    return split, _class_folds(labels, split != "test", num_folds, fold_rng)


def _test_classes(labels: np.ndarray, test_fraction: float, method: str,
                  rng: np.random.Generator) -> np.ndarray:
    """The split of each row: the rows of a ``test_fraction`` of the classes (the last ones in
    id order, or at random) are test, the others train."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DataError(f"make_splits: a class-disjoint split needs at least 2 classes, "
                        f"the manifest has {len(classes)}")
    n_test = min(len(classes) - 1, max(1, int(round(test_fraction * len(classes)))))
    ordered = classes if method == "ordered" else rng.permutation(classes)
    test_classes = ordered[len(classes) - n_test:]
    return np.where(np.isin(labels, test_classes), "test", "train").astype(object)


def _class_folds(labels: np.ndarray, not_test: np.ndarray, num_folds: int,
                 fold_rng: np.random.Generator) -> np.ndarray:
    """The fold of each row: the training classes shuffled and dealt round-robin into
    ``num_folds`` class-disjoint folds; -1 on test rows."""
    fold = np.full(len(labels), -1, dtype=np.int64)
    train_classes = np.unique(labels[not_test])
    if len(train_classes) and num_folds > len(train_classes):
        raise ConfigError(f"split.num_folds: {num_folds} folds need at least as many "
                          f"training classes, there are {len(train_classes)}")
    if len(train_classes):
        fold_of_class = np.empty(len(train_classes), dtype=np.int64)
        fold_of_class[fold_rng.permutation(len(train_classes))] = (
            np.arange(len(train_classes)) % num_folds)
        fold[not_test] = fold_of_class[np.searchsorted(train_classes, labels[not_test])]
    return fold


def _split_by_image(table: pa.Table, test_fraction: float, num_folds: int, method: str,
                    rng: np.random.Generator,
                    fold_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(split, fold)`` of a multi-label manifest, where no class-disjoint split exists: a
    ``test_fraction`` of the images (or the manifest's own split) is test, the other images
    are dealt into folds."""
    n = table.num_rows
    if "split" in table.column_names:
        split = _given_split(table)
    else:
        if n < 2:
            raise DataError("make_splits: need at least 2 images")
        n_test = min(n - 1, max(1, int(round(test_fraction * n))))
        order = np.arange(n) if method == "ordered" else rng.permutation(n)
        split = np.full(n, "train", dtype=object)
        split[order[n - n_test:]] = "test"
    not_test = np.flatnonzero(split != "test")
    if len(not_test) and num_folds > len(not_test):
        raise ConfigError(f"split.num_folds: {num_folds} folds need at least as many "
                          f"training images, there are {len(not_test)}")
    fold = np.full(n, -1, dtype=np.int64)
    fold[not_test[fold_rng.permutation(len(not_test))]] = np.arange(len(not_test)) % num_folds
    return split, fold


def _roles(table: pa.Table, split: np.ndarray, query_fraction: float | None,
           seed: int) -> np.ndarray:
    """The role of each row: the manifest's own, else ``both``; with ``query_fraction``, test
    rows drawn as queries and the rest as gallery."""
    names = table.column_names
    role = (np.asarray(table.column("role").to_pylist(), dtype=object) if "role" in names
            else np.full(table.num_rows, "both", dtype=object))
    if query_fraction is not None:
        role = _draw_queries(role, split, float(query_fraction), has_role="role" in names,
                             seed=seed)
    return role


def _splits_table(table: pa.Table, split: np.ndarray, role: np.ndarray, fold: np.ndarray,
                  provenance: dict[str, Any]) -> pa.Table:
    """The splits table of ``table``'s rows, its provenance in the schema metadata."""
    out = pa.table(
        {
            "image_id": table.column("image_id").cast(pa.string()),
            "split": pa.array(split.tolist(), pa.string()),
            "role": pa.array(role.tolist(), pa.string()),
            "fold": pa.array(fold, pa.int64()),
        },
        schema=SPLITS_SCHEMA,
    )
    return out.replace_schema_metadata({b"dml": json.dumps(provenance, sort_keys=True)})


def _held_out_queries(table: pa.Table, per_class: int, query_domain: str, *, num_folds: int,
                      seed: int) -> pa.Table:
    """The category-level split (module doc): ``per_class`` test queries of each class in
    ``query_domain``, every other-domain row a shared gallery, folds over the rest."""
    _check_held_out(table, per_class, query_domain)
    labels = _labels(table, nulls_allowed=False)
    query_rows = _query_rows(table, query_domain)
    split, role, fold = _deal_queries(labels, query_rows, per_class, query_domain,
                                      num_folds=num_folds, seed=seed)
    return _splits_table(table, split, role, fold, {
        "method": "held_out_queries", "seed": int(seed), "num_folds": int(num_folds),
        "queries_per_class": per_class, "query_domain": query_domain, "class_disjoint": False,
    })


def _check_held_out(table: pa.Table, per_class: int, query_domain: str) -> None:
    """Refuse settings and manifests the category-level split cannot use: it needs labels and
    domains, and makes the split and roles itself."""
    names = table.column_names
    if per_class < 1:
        raise ConfigError(f"split.queries_per_class: {per_class} must be at least 1")
    if query_domain not in DOMAINS:
        raise ConfigError(f"split.query_domain: {query_domain!r} is not one of: {', '.join(DOMAINS)}")
    missing = [c for c in ("label", "domain") if c not in names]
    if missing or "split" in names or "role" in names:
        raise DataError("split.method held_out_queries needs a manifest with 'label' and "
                        "'domain' columns and without its own 'split' or 'role' columns"
                        + (f" (missing: {missing})" if missing else ""))


def _query_rows(table: pa.Table, query_domain: str) -> np.ndarray:
    """Mask of the rows in ``query_domain``; DataError unless both it and another domain occur."""
    domain = np.asarray(table.column("domain").to_pylist(), dtype=object)
    query_rows = domain == query_domain
    if not query_rows.any() or query_rows.all():
        raise DataError(f"split.method held_out_queries: the manifest needs rows of domain "
                        f"{query_domain!r} (the queries) and of another domain (the gallery); "
                        f"it has {sorted(set(domain.tolist()))}")
    return query_rows


def _deal_queries(labels: np.ndarray, query_rows: np.ndarray, per_class: int, query_domain: str,
                  *, num_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(split, role, fold)``: per class, ``per_class`` seeded query rows held out as test
    queries and the others dealt into the folds; the other domain a shared gallery (fold -1).
    DataError naming the classes that would have no query-domain row left to train on."""
    n = len(labels)
    split = np.full(n, "train", dtype=object)
    role = np.where(query_rows, "both", "gallery").astype(object)
    fold = np.full(n, -1, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    fold_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    short = []
    for c in np.unique(labels[query_rows]):
        rows = np.flatnonzero(query_rows & (labels == c))
        if len(rows) <= per_class:
            short.append(f"class {int(c)} ({len(rows)})")
            continue
        drawn = rng.permutation(rows)
        split[drawn[:per_class]], role[drawn[:per_class]] = "test", "query"
        rest = np.sort(drawn[per_class:])
        # Each class's training queries dealt round-robin from a seeded start: every fold holds
        # every class when the class has as many rows as there are folds.
        fold[rest[fold_rng.permutation(len(rest))]] = (
            np.arange(len(rest)) + int(fold_rng.integers(num_folds))) % num_folds
    if short:
        raise DataError(f"split.queries_per_class: {per_class} held-out queries per class "
                        f"leave no {query_domain} of some classes to train on: "
                        f"{', '.join(short[:5])}{' ...' if len(short) > 5 else ''} "
                        f"({query_domain} rows per class in brackets)")
    return split, role, fold


def _draw_queries(role: np.ndarray, split: np.ndarray, fraction: float, *, has_role: bool,
                  seed: int) -> np.ndarray:
    """Roles with a seeded ``fraction`` of the test rows as queries, the rest as gallery."""
    if has_role:
        raise ConfigError("split.query_fraction: the manifest already gives each row a role; "
                          "remove query_fraction")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split.query_fraction: {fraction} must lie strictly between 0 and 1")
    test = np.flatnonzero(split == "test")
    if len(test) < 2:
        raise DataError(f"split.query_fraction: {len(test)} test row(s) cannot be split into "
                        "queries and a gallery")
    n_query = min(len(test) - 1, max(1, int(round(fraction * len(test)))))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    role = role.copy()
    role[test] = "gallery"
    role[test[rng.permutation(len(test))[:n_query]]] = "query"
    return role


def write_splits(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a splits table (from ``make_splits``) to parquet atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_splits(path: str | os.PathLike[str]) -> pa.Table:
    """Read a splits parquet written by ``write_splits``; DataError if it is not one."""
    if not os.path.isfile(path):
        raise DataError(f"splits file {path} does not exist")
    table = pq.read_table(path)
    missing = [c for c in SPLITS_SCHEMA.names if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a splits file (no column(s) {missing})")
    return table


def align(table: pa.Table, splits: pa.Table, *, where: str = "splits") -> np.ndarray:
    """Row of ``splits`` for each row of ``table`` (matched on image_id); DataError naming the
    first ids of ``table`` that ``splits`` lacks."""
    positions = pc.index_in(table.column("image_id"), value_set=splits.column("image_id"))
    missing = positions.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        ids = table.column("image_id").filter(pa.array(missing)).to_pylist()[:5]
        raise DataError(f"{where}: {int(missing.sum())} manifest image(s) have no row, "
                        f"e.g. {ids}; regenerate the splits for this manifest")
    return positions.to_numpy(zero_copy_only=False).astype(np.int64)


def label_tables(table: pa.Table, info: ManifestInfo, splits: pa.Table) -> dict[str, Any]:
    """JSON-serializable summary: per scale the class names with image counts per split (and
    each fine class's parents at the coarser scales), attribute names with prevalence per
    split, and the classes of each validation fold.

    Raises DataError when a fine class has two parents at a scale
    (:func:`dml.data.hierarchy.class_parents`)."""
    rows = align(table, splits)
    split = np.asarray(splits.column("split").to_pylist(), dtype=object)[rows]
    fold = splits.column("fold").to_numpy(zero_copy_only=False)[rows]
    present = [s for s in SPLITS if (split == s).any()]
    hierarchy = class_parents(table, info)
    out: dict[str, Any] = {
        "source": info.source,
        "images": {s: int((split == s).sum()) for s in present},
        "scales": {},
        "attributes": [],
    }
    for scale in info.scales:
        per_split = _class_counts(table, info, scale, split, present)
        if per_split is not None:
            out["scales"][scale] = _class_rows(info, scale, per_split, present, hierarchy)
    if "attributes" in table.column_names and info.attribute_names:
        out["attributes"] = _attribute_prevalence(table, info, split, present)
    fold_rows = _fold_rows(table, info, fold)
    out["num_folds"] = len(fold_rows)
    out["folds"] = fold_rows
    return out


def _class_counts(table: pa.Table, info: ManifestInfo, scale: str, split: np.ndarray,
                  present: list[str]) -> dict[str, np.ndarray] | None:
    """Images per class of ``scale`` in each split (for multi-label data: images showing at
    least one object of the class); None for a scale the manifest does not label."""
    names = table.column_names
    num = info.num_classes(scale)
    per_split: dict[str, np.ndarray] = {}
    if info.label_column(scale) in names:
        labels = scale_labels(table, info)[scale]
        for s in present:
            mine = labels[(split == s) & (labels >= 0)]
            per_split[s] = np.bincount(mine, minlength=num)
    elif scale == info.fine and "object_counts" in names:
        objects = table.column("object_counts").combine_chunks()
        parents = pc.list_parent_indices(objects).to_numpy(zero_copy_only=False)
        labels = pc.list_flatten(objects).field("label").to_numpy(zero_copy_only=False)
        for s in present:
            keep = split[parents] == s
            per_split[s] = np.bincount(labels[keep], minlength=num)
    else:
        return None
    return per_split


def _class_rows(info: ManifestInfo, scale: str, per_split: dict[str, np.ndarray],
                present: list[str], hierarchy: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One entry per class of ``scale``: id, name, images per split, and for the fine scale
    the class's parents at the coarser scales."""
    return [
        {
            "id": i,
            "name": name,
            "images": {s: int(per_split[s][i]) for s in present},
            **({"parents": {coarser: info.class_names[coarser][int(p[i])]
                            for coarser, p in hierarchy.items() if p[i] >= 0}}
               if scale == info.fine and hierarchy else {}),
        }
        for i, name in enumerate(info.class_names[scale])
    ]


def _attribute_prevalence(table: pa.Table, info: ManifestInfo, split: np.ndarray,
                          present: list[str]) -> list[dict[str, Any]]:
    """Per attribute, the share of images in each split that show it (among those where it is
    known; None where it is known for none)."""
    values, known = attribute_matrix(table.column("attributes"), len(info.attribute_names))
    rows = []
    for j, name in enumerate(info.attribute_names):
        prevalence: dict[str, float | None] = {}
        for s in present:
            mask = known[:, j] & (split == s)
            prevalence[s] = round(float(values[mask, j].mean()), 6) if mask.any() else None
        rows.append({"name": name, "prevalence": prevalence})
    return rows


def _fold_rows(table: pa.Table, info: ManifestInfo, fold: np.ndarray) -> list[dict[str, Any]]:
    """One entry per validation fold: its images and, for single-label data, its classes."""
    folds = sorted(int(f) for f in np.unique(fold) if f >= 0)
    fold_rows = []
    labels = scale_labels(table, info).get(info.fine) if "label" in table.column_names else None
    for f in folds:
        mask = fold == f
        entry: dict[str, Any] = {"fold": f, "images": int(mask.sum())}
        if labels is not None:
            ids = sorted(Counter(labels[mask].tolist()))
            entry["classes"] = ids
            entry["class_names"] = [info.class_names[info.fine][i] for i in ids]
        fold_rows.append(entry)
    return fold_rows
