"""Batched embedding extraction and the embeddings.parquet contract."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from dml.data.dataset import ManifestDataset
from dml.errors import DataError
from dml.io import atomic_path

#: Manifest/splits columns carried into embeddings.parquet when present.
CARRIED_COLUMNS = ("image_id", "split", "role", "domain", "label")
#: Column-name prefix of an extra head's stored output.
HEAD_PREFIX = "head_"
#: Column-name prefix of another view's embeddings (``view_flip``: the mirrored images).
VIEW_PREFIX = "view_"


@torch.no_grad()
def extract(
    model: torch.nn.Module,
    dataset: ManifestDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    normalize: bool = True,
    heads: Sequence[str] = (),
    flip: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Embeddings ``[N, D]`` (float32) of every item of ``dataset``, in order, and the raw
    outputs of the named extra ``heads`` (``[N, ...]`` float32 each) from the same pass.

    The model sees each batch with its annotations (a conditioned trunk gets its domain
    flag). ``normalize``: L2-normalize the rows (for cosine ranking); euclidean protocols
    keep the raw vectors. ``flip``: embed each image mirrored left to right (the second view
    of flip test-time augmentation).
    """
    model.eval()
    model.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                        collate_fn=dataset.collate)
    parts: list[torch.Tensor] = []
    head_parts: dict[str, list[torch.Tensor]] = {name: [] for name in heads}
    for batch in tqdm(loader, desc="embed", unit="batch", leave=False,
                      disable=None if progress else True):  # None: on a terminal only
        batch = batch.to(device)
        if flip:
            batch = dataclasses.replace(batch, images=batch.images.flip(-1))
        output = model.forward_batch(batch)
        embeddings = output.embeddings.float()
        parts.append((F.normalize(embeddings, dim=1) if normalize else embeddings).cpu())
        for name in heads:
            head_parts[name].append(output.head(name, "extraction").float().cpu())
    if not parts:
        return np.zeros((0, getattr(model, "embed_dim", 0)), dtype=np.float32), {}
    return (torch.cat(parts).numpy(),
            {name: torch.cat(values).numpy() for name, values in head_parts.items()})


def embed_dataset(model: torch.nn.Module, dataset: ManifestDataset, **options: Any) -> np.ndarray:
    """The embeddings of :func:`extract` alone (same options, no heads)."""
    return extract(model, dataset, **options)[0]


def write_embeddings(
    path: str | os.PathLike[str],
    columns: dict[str, list | np.ndarray],
    embeddings: np.ndarray,
    *,
    model_hash: str,
    normalized: bool = True,
    heads: Mapping[str, np.ndarray] | None = None,
    views: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``embeddings.parquet`` atomically: carried columns plus a fixed-size list column,
    one ``head_<name>`` fixed-size list column per extra head's output (``[N, K]``: the
    attribute head's logits, scored by the evaluate stage), and one ``view_<name>`` column
    per other view of the images (``[N, D]``: the mirrored images' embeddings).

    ``normalized`` records whether the rows are L2-normalized (cosine protocols) or raw
    (euclidean ones).
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = embeddings.shape
    arrays = {name: pa.array(values) for name, values in columns.items()}
    for name, values in (heads or {}).items():
        arrays[f"{HEAD_PREFIX}{name}"] = _fixed_size_rows(np.asarray(values).reshape(len(values), -1))
    for name, values in (views or {}).items():
        arrays[f"{VIEW_PREFIX}{name}"] = _fixed_size_rows(values)
    for name, array in arrays.items():
        if len(array) != n:
            raise DataError(f"{path}: column {name!r} has {len(array)} rows, embeddings have {n}")
    arrays["embedding"] = _fixed_size_rows(embeddings)
    meta = {"embed_dim": dim, "model_sha256": model_hash, "normalized": normalized,
            "heads": sorted(heads or {}), "views": sorted(views or {})}
    table = pa.table(arrays).replace_schema_metadata({"dml": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _fixed_size_rows(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def head_output(table: pa.Table, name: str) -> np.ndarray | None:
    """The stored output ``[N, K]`` of head ``name`` in an embeddings table, or None."""
    column = f"{HEAD_PREFIX}{name}"
    if column not in table.column_names:
        return None
    return _fixed_size_matrix(table.column(column))


def with_views(table: pa.Table, vectors: np.ndarray, views: Sequence[str], *,
               path: str | os.PathLike[str] = "embeddings") -> np.ndarray:
    """``vectors [N, D]`` as they are without ``views``, else stacked with each named view's
    embeddings as ``[N, 1 + len(views), D]`` (the plain view first); DataError naming the
    file and the view when it was not embedded."""
    if not views:
        return vectors
    stacked = [vectors]
    for name in views:
        column = f"{VIEW_PREFIX}{name}"
        if column not in table.column_names:
            raise DataError(f"{path}: no {name!r} view of the images (column {column!r}); "
                            "re-run the embed stage with this protocol")
        stacked.append(_fixed_size_matrix(table.column(column)))
    return np.stack(stacked, axis=1)


def _fixed_size_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size list column as float32 ``[N, K]`` (the inverse of ``_fixed_size_rows``)."""
    values = column.combine_chunks()
    width = values.type.list_size
    return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32)


def read_embeddings(
    path: str | os.PathLike[str], *, expected_dim: int | None = None
) -> tuple[pa.Table, np.ndarray, dict]:
    """Read ``embeddings.parquet``: (other columns, embeddings [N, D], metadata).

    A file whose vectors do not match its declared size, or ``expected_dim``, is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings file {path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path} is not a readable parquet file (truncated or corrupt): {err}") from None
    raw = (table.schema.metadata or {}).get(b"dml")
    if raw is None or "embedding" not in table.column_names:
        raise DataError(f"{path} is not an embeddings file (no 'embedding' column or metadata)")
    meta = json.loads(raw)
    dim = table.schema.field("embedding").type.list_size
    if dim != meta["embed_dim"] or (expected_dim is not None and dim != expected_dim):
        raise DataError(
            f"{path}: embedding size {dim} does not match the expected "
            f"{expected_dim if expected_dim is not None else meta['embed_dim']}"
        )
    vectors = _fixed_size_matrix(table.column("embedding"))
    return table.drop(["embedding"]), vectors, meta
