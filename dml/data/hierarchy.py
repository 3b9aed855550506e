"""The class hierarchy of a manifest: each fine class's parent at every coarser scale.

A fine class must have exactly one parent per coarser scale (a car model belongs to one
maker, a product to one category): losses that reason across scales (CSL) and the
hierarchical sampler rely on it. :func:`class_parents` derives the parents from the rows
labelled at both scales and refuses a class with two, naming it and them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dml.data.manifest import ManifestInfo
from dml.errors import DataError

#: Conflicting classes named in one error; the rest are counted.
SHOWN = 10


def scale_labels(table: pa.Table, info: ManifestInfo) -> dict[str, np.ndarray]:
    """int64 ``[N]`` labels of every scale present in ``table`` (-1 where a row is unlabelled
    at that scale), finest first."""
    out = {}
    for scale in info.scales:
        column = info.label_column(scale)
        if column in table.column_names:
            out[scale] = table.column(column).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return out


def class_parents(table: pa.Table, info: ManifestInfo) -> dict[str, np.ndarray]:
    """For each coarser scale with a column, int64 ``[C_fine]``: the parent of every fine
    class (-1 for a class with no row labelled at both scales).

    Raises DataError naming each fine class that has several parents at a scale, with those
    parents and how many rows say each.
    """
    labels = scale_labels(table, info)
    fine = labels.pop(info.fine, None)
    if fine is None:
        return {}
    num_fine = info.num_classes()
    out: dict[str, np.ndarray] = {}
    for scale, coarse in labels.items():
        both = (fine >= 0) & (coarse >= 0)
        pairs, counts = np.unique(np.stack([fine[both], coarse[both]], axis=1), axis=0,
                                  return_counts=True)
        classes, first, n_parents = np.unique(pairs[:, 0], return_index=True, return_counts=True)
        conflicts = classes[n_parents > 1]
        if len(conflicts):
            names = info.class_names
            lines = []
            for c in conflicts[:SHOWN]:
                mine = pairs[:, 0] == c
                parents = ", ".join(f"{names[scale][p]!r} ({n} rows)"
                                    for p, n in zip(pairs[mine, 1], counts[mine]))
                lines.append(f"fine class {names[info.fine][c]!r} has {scale} parents {parents}")
            more = f"\n  ... and {len(conflicts) - SHOWN} more" if len(conflicts) > SHOWN else ""
            raise DataError(f"{len(conflicts)} fine class(es) have more than one {scale!r} parent "
                            "(each fine class needs exactly one per coarser scale):\n  "
                            + "\n  ".join(lines) + more)
        parent = np.full(num_fine, -1, dtype=np.int64)
        parent[pairs[first, 0]] = pairs[first, 1]
        out[scale] = parent
    return out
