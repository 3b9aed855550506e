"""Batched embedding extraction and the embeddings.parquet contract: one parquet file, or a
directory of parquet shards (``part-00000.parquet``, ...) read back as the same table.

One function embeds one batch (:func:`embed_batch`); the in-process loop
(:func:`iter_embedded`) and the Ray Data actors (:mod:`dml.embed_ray`) both call it on the
same consecutive rows (:func:`batch_ranges`, :func:`load_batch`), so that their vectors are
the same. :func:`embeddings_writer` writes the rows part by part as they come, atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dml.batch import Batch
from dml.data.dataset import ManifestDataset
from dml.data.shards import shard_files, shard_name
from dml.errors import DataError
from dml.io import atomic_path

#: Manifest/splits columns carried into embeddings.parquet when present.
CARRIED_COLUMNS = ("image_id", "split", "role", "domain", "label")
#: Column-name prefix of an extra head's stored output.
HEAD_PREFIX = "head_"
#: Column-name prefix of another view's embeddings (``view_flip``: the mirrored images).
VIEW_PREFIX = "view_"
#: The other views of the images by name: the transform of a batch's model input.
VIEW_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flip": lambda images: images.flip(-1),  # mirrored left to right
}
@dataclasses.dataclass
class Embedded:
    """What embedding consecutive rows gives: their embeddings ``[n, D]``, each extra head's
    output ``[n, ...]`` and each other view's embeddings ``[n, D]`` (float32 arrays)."""

    embeddings: np.ndarray
    heads: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    views: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def concat(cls, parts: Sequence[Embedded]) -> Embedded:
        """The rows of ``parts`` (at least one, all with the same heads and views) in order."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return cls(np.concatenate([p.embeddings for p in parts]),
                   {name: np.concatenate([p.heads[name] for p in parts]) for name in first.heads},
                   {name: np.concatenate([p.views[name] for p in parts]) for name in first.views})

    def rows(self, start: int, stop: int) -> Embedded:
        """Rows ``start:stop`` of this part."""
        return Embedded(self.embeddings[start:stop],
                        {name: values[start:stop] for name, values in self.heads.items()},
                        {name: values[start:stop] for name, values in self.views.items()})


def batch_ranges(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """The row ranges ``(start, stop)`` of consecutive batches of ``batch_size`` rows (the last
    holds the rest): what every embedding path runs the model on."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]


def load_batch(dataset: ManifestDataset, start: int, stop: int) -> Batch:
    """Rows ``start:stop`` of ``dataset`` as one batch, as a sequential DataLoader without
    workers makes it (its items, then its ``collate``)."""
    return dataset.collate([dataset[index] for index in range(start, stop)])


@torch.no_grad()
def embed_batch(
    model: torch.nn.Module,
    batch: Batch,
    *,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    heads: Sequence[str] = (),
    views: Sequence[str] = (),
    view: str | None = None,
) -> Embedded:
    """One batch through the model (in eval mode, on ``device``): the embeddings, L2-normalized
    if ``normalize``, the raw outputs of the named extra ``heads``, and the embeddings of each
    other view of ``views`` (:data:`VIEW_TRANSFORMS`), each from its own forward pass.

    ``view``: embed that view of the images instead of the images as they are (the heads'
    outputs then come from it too).
    """
    batch = batch.to(device)

    def forward(name: str | None) -> Any:
        images = batch.images if name is None else VIEW_TRANSFORMS[name](batch.images)
        return model.forward_batch(batch if name is None else dataclasses.replace(batch, images=images))

    def vectors(output: Any) -> np.ndarray:
        embeddings = output.embeddings.float()
        return (F.normalize(embeddings, dim=1) if normalize else embeddings).cpu().numpy()

    output = forward(view)
    return Embedded(vectors(output),
                    {name: output.head(name, "extraction").float().cpu().numpy() for name in heads},
                    {name: vectors(forward(name)) for name in views})


def iter_embedded(
    model: torch.nn.Module,
    dataset: ManifestDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    **options: Any,
) -> Iterator[Embedded]:
    """Every row of ``dataset`` embedded in this process, batch by batch, in order (the options
    of :func:`embed_batch`)."""
    model.eval()
    model.to(device)
    for start, stop in tqdm(batch_ranges(len(dataset), batch_size), desc="embed", unit="batch",
                            leave=False, disable=None if progress else True):  # None: on a terminal only
        yield embed_batch(model, load_batch(dataset, start, stop), device=device, **options)


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
    parts = list(iter_embedded(model, dataset, batch_size=batch_size, device=device, progress=progress,
                               normalize=normalize, heads=heads, view="flip" if flip else None))
    if not parts:
        return np.zeros((0, getattr(model, "embed_dim", 0)), dtype=np.float32), {}
    embedded = Embedded.concat(parts)
    return embedded.embeddings, embedded.heads


def embed_dataset(model: torch.nn.Module, dataset: ManifestDataset, **options: Any) -> np.ndarray:
    """The embeddings of :func:`extract` alone (same options, no heads)."""
    return extract(model, dataset, **options)[0]


class _EmbeddingsSink:
    """The rows of an embeddings output, added part by part in order, written into ``folder``
    (the atomic temporary of :func:`embeddings_writer`): all at the end as one file, or as
    each shard of ``shard_rows`` rows fills."""

    def __init__(self, path: Path, target: Path, columns: Mapping[str, Sequence[Any] | np.ndarray],
                 rows: int, meta: dict[str, Any], shard_rows: int | None) -> None:
        self.path, self.target, self.rows, self.shard_rows = path, target, rows, shard_rows
        self.columns = {name: pa.array(values) for name, values in columns.items()}
        for name, array in self.columns.items():
            if len(array) != rows:
                raise DataError(f"{path}: column {name!r} has {len(array)} rows, embeddings have {rows}")
        self.meta = meta
        self.pending: list[Embedded] = []
        self.pending_rows = 0
        self.written = 0  # rows already in shards
        self.shards = 0

    def add(self, part: Embedded) -> None:
        """The next rows (they follow those added before)."""
        for kind, names, given in (("head", self.meta["heads"], part.heads), ("view", self.meta["views"], part.views)):
            if sorted(given) != names:
                raise DataError(f"{self.path}: {kind}s {sorted(given)} in a part of the embeddings, "
                                f"{names} declared")
        n = len(part)
        if part.embeddings.ndim != 2 or part.embeddings.shape[1] != self.meta["embed_dim"]:
            raise DataError(f"{self.path}: embeddings of shape {list(part.embeddings.shape)}, "
                            f"[n, {self.meta['embed_dim']}] declared")
        for prefix, values in ((HEAD_PREFIX, part.heads), (VIEW_PREFIX, part.views)):
            for name, array in values.items():
                if len(array) != n:
                    raise DataError(f"{self.path}: column {prefix + name!r} has {len(array)} rows, "
                                    f"embeddings have {n}")
        if self.written + self.pending_rows + n > self.rows:
            raise DataError(f"{self.path}: more than the {self.rows} rows of its columns embedded")
        self.pending.append(part)
        self.pending_rows += n
        while self.shard_rows is not None and self.pending_rows >= self.shard_rows:
            self._write_shard(self.shard_rows)

    def finish(self) -> None:
        """Write what is left; DataError when fewer rows came than the columns hold."""
        embedded = self.written + self.pending_rows
        if embedded != self.rows:
            raise DataError(f"{self.path}: {embedded} rows embedded, its columns hold {self.rows}")
        if self.shard_rows is None:
            pq.write_table(self._table(self._take(self.pending_rows), 0), self.target)
        elif self.pending_rows or not self.shards:  # the rest; one empty shard for no rows
            self._write_shard(self.pending_rows)

    def _take(self, n: int) -> Embedded:
        """The first ``n`` pending rows, removed from the pending parts."""
        if not self.pending:
            dim = self.meta["embed_dim"]
            empty = np.zeros((0, dim), dtype=np.float32)
            return Embedded(empty, {name: np.zeros((0, 1), np.float32) for name in self.meta["heads"]},
                            {name: empty for name in self.meta["views"]})
        joined = Embedded.concat(self.pending)
        rest = joined.rows(n, len(joined))
        self.pending, self.pending_rows = ([rest] if len(rest) else []), len(rest)
        return joined.rows(0, n)

    def _write_shard(self, n: int) -> None:
        start = self.written
        part = self._take(n)
        pq.write_table(self._table(part, start), self.target / shard_name(self.shards))
        self.shards += 1
        self.written += n

    def _table(self, part: Embedded, start: int) -> pa.Table:
        arrays = {name: array.slice(start, len(part)) for name, array in self.columns.items()}
        for name, values in part.heads.items():
            values = np.asarray(values)  # [n, ...]: one flat row per image
            width = int(np.prod(values.shape[1:]))
            arrays[f"{HEAD_PREFIX}{name}"] = _fixed_size_rows(values.reshape(len(values), width))
        for name, values in part.views.items():
            arrays[f"{VIEW_PREFIX}{name}"] = _fixed_size_rows(values)
        arrays["embedding"] = _fixed_size_rows(part.embeddings)
        return pa.table(arrays).replace_schema_metadata({"dml": json.dumps(self.meta)})


@contextlib.contextmanager
def embeddings_writer(
    path: str | os.PathLike[str],
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    rows: int,
    *,
    embed_dim: int,
    model_hash: str,
    normalized: bool = True,
    heads: Sequence[str] = (),
    views: Sequence[str] = (),
    shard_rows: int | None = None,
) -> Iterator[Callable[[Embedded], None]]:
    """Write ``embeddings.parquet`` atomically from parts that come in row order: yields the
    function that takes the next part (:class:`Embedded`).

    ``columns``: the carried columns of all ``rows`` rows. ``shard_rows``: None writes one
    file at the end; a number writes ``path`` as a directory of shards of that many rows
    (:func:`shard_name`), each as soon as it fills, so that memory holds one shard. Every
    shard carries the same metadata, with the total ``rows`` and the number of ``shards``.
    Nothing appears at ``path`` unless every row came (an error or an interruption leaves the
    previous output, file or directory, as it was).
    """
    if shard_rows is not None and shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    meta: dict[str, Any] = {"embed_dim": int(embed_dim), "model_sha256": model_hash,
                            "normalized": normalized, "heads": sorted(heads), "views": sorted(views)}
    if shard_rows is not None:
        meta |= {"rows": int(rows), "shards": max(1, -(-int(rows) // shard_rows))}
    path = Path(path)
    with atomic_path(path, directory=shard_rows is not None) as tmp:
        sink = _EmbeddingsSink(path, tmp, columns, rows, meta, shard_rows)
        yield sink.add
        sink.finish()


def write_embeddings(
    path: str | os.PathLike[str],
    columns: dict[str, list | np.ndarray],
    embeddings: np.ndarray,
    *,
    model_hash: str,
    normalized: bool = True,
    heads: Mapping[str, np.ndarray] | None = None,
    views: Mapping[str, np.ndarray] | None = None,
    shard_rows: int | None = None,
) -> None:
    """Write ``embeddings.parquet`` atomically: carried columns plus a fixed-size list column,
    one ``head_<name>`` fixed-size list column per extra head's output (``[N, K]``: the
    attribute head's logits, scored by the evaluate stage), and one ``view_<name>`` column
    per other view of the images (``[N, D]``: the mirrored images' embeddings).

    ``normalized`` records whether the rows are L2-normalized (cosine protocols) or raw
    (euclidean ones). ``shard_rows``: a directory of shards of that many rows instead of one
    file (:func:`embeddings_writer`).
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    heads, views = dict(heads or {}), dict(views or {})
    with embeddings_writer(path, columns, len(embeddings), embed_dim=embeddings.shape[1],
                           model_hash=model_hash, normalized=normalized, heads=list(heads),
                           views=list(views), shard_rows=shard_rows) as add:
        add(Embedded(embeddings, heads, views))


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


def _read_file(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """One parquet file of embeddings and its metadata; DataError naming it when it is not one."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path} is not a readable parquet file (truncated or corrupt): {err}") from None
    raw = (table.schema.metadata or {}).get(b"dml")
    if raw is None or "embedding" not in table.column_names:
        raise DataError(f"{path} is not an embeddings file (no 'embedding' column or metadata)")
    return table, json.loads(raw)


def _read_shards(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The shards of an embeddings directory as one table, checked against their metadata:
    the same in every shard, naming as many shards and rows as there are."""
    files = shard_files(path, "embeddings")
    tables, meta = [], None
    for file in files:
        table, shard_meta = _read_file(file)
        if meta is None:
            meta = shard_meta
        elif shard_meta != meta:
            raise DataError(f"{file}: metadata differs from that of {files[0].name} (shards of different outputs)")
        tables.append(table)
    expected = [shard_name(i) for i in range(int(meta.get("shards", -1)))]
    if [f.name for f in files] != expected:
        raise DataError(f"{path}: shards {[f.name for f in files]}, its metadata declares {len(expected)} "
                        f"({', '.join(expected[:2])}{', ...' if len(expected) > 2 else ''})")
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: shards with different columns ({err})") from None
    if table.num_rows != meta.get("rows"):
        raise DataError(f"{path}: {table.num_rows} rows in its shards, its metadata declares {meta.get('rows')}")
    return table, meta


def read_embeddings(
    path: str | os.PathLike[str], *, expected_dim: int | None = None
) -> tuple[pa.Table, np.ndarray, dict]:
    """Read ``embeddings.parquet``, one file or a directory of shards: (other columns,
    embeddings [N, D], metadata).

    A file whose vectors do not match its declared size, or ``expected_dim``, is refused.
    """
    path = Path(path)
    if path.is_dir():
        table, meta = _read_shards(path)
    elif path.is_file():
        table, meta = _read_file(path)
    else:
        raise DataError(f"embeddings file {path} does not exist")
    dim = table.schema.field("embedding").type.list_size
    if dim != meta["embed_dim"] or (expected_dim is not None and dim != expected_dim):
        raise DataError(
            f"{path}: embedding size {dim} does not match the expected "
            f"{expected_dim if expected_dim is not None else meta['embed_dim']}"
        )
    vectors = _fixed_size_matrix(table.column("embedding"))
    return table.drop(["embedding"]), vectors, meta
