"""Embedding on Ray Data: the rows' batches mapped over a pool of model actors (one per GPU
where the cluster has GPUs, CPU actors otherwise), the results streamed back in batch order.

Each actor loads the exported model once and opens the manifest itself (no image crosses
from the driver); the dataset holds one record per batch, ``(start, stop)``, the same
consecutive rows as the in-process loop, and the actor runs the same function on them
(:func:`dml.embed.embed_batch` on :func:`dml.embed.load_batch`). The vectors are therefore
those of the in-process path: bitwise in fp32 on CPU where the actor's torch threads
(``cpus_per_actor``) are the driver's, as a convolution's sums follow the thread count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from dml.data.dataset import ManifestDataset
from dml.embed import (HEAD_PREFIX, VIEW_PREFIX, Embedded, batch_ranges, embed_batch, embeddings_writer,
                       iter_embedded, load_batch)
from dml import errors
from dml.errors import ConfigError, DataError, DmlError

#: Rows per shard of the embeddings that Ray Data writes when ``embed.shard_rows`` is null.
DEFAULT_SHARD_ROWS = 65536
#: The column of an actor's output that numbers its rows (their position in the dataset).
ROW_COLUMN = "row"
#: The columns of the record an actor returns instead where it fails with a DmlError: the
#: error's class name (of :mod:`dml.errors`) and message, raised again by the driver.
ERROR_COLUMN, ERROR_MESSAGE_COLUMN = "error", "error_message"


@dataclasses.dataclass(frozen=True)
class EmbedJob:
    """What every actor needs, pickled once to each: the exported model's folder, how to open
    the rows (``make_dataset``, a picklable callable such as a ``functools.partial`` of
    :class:`~dml.data.dataset.ManifestDataset`), their number, and the options of
    :func:`~dml.embed.embed_batch`."""

    model_dir: str
    make_dataset: Callable[[], Any]
    rows: int
    normalize: bool = True
    heads: tuple[str, ...] = ()
    views: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """How many model actors run, and what each holds: CPUs (its torch threads) and a GPU or none."""

    count: int
    cpus: int
    gpus: int

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


class EmbedActor:
    """A Ray Data actor: the model, loaded once, and the rows; called on batch records."""

    def __init__(self, job: EmbedJob, device: str, threads: int) -> None:
        import torch

        from dml.train.export import load_model

        torch.set_num_threads(threads)
        self.job, self.device = job, device
        self.error: DmlError | None = None
        try:  # an error is returned by the first call (Ray Data's traceback hides its line)
            self.model = load_model(job.model_dir)[0].to(device).eval()
            self.dataset = job.make_dataset()
            if len(self.dataset) != job.rows:
                raise DataError(f"the rows opened by a Ray Data actor ({len(self.dataset)}) are not "
                                f"the {job.rows} rows the driver embeds: the manifest changed")
        except DmlError as exc:
            self.error = exc

    def __call__(self, records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The embeddings of the rows of each record ``(start, stop)``, numbered by ``row``."""
        job = self.job
        parts, numbers = [], []
        try:
            if self.error is not None:
                raise self.error
            for start, stop in zip(records["start"].tolist(), records["stop"].tolist()):
                parts.append(embed_batch(self.model, load_batch(self.dataset, start, stop), device=self.device,
                                         normalize=job.normalize, heads=job.heads, views=job.views))
                numbers.append(np.arange(start, stop, dtype=np.int64))
        except DmlError as exc:  # a bad image, a changed manifest, a tampered model: its one line
            return {ROW_COLUMN: np.array([-1]), ERROR_COLUMN: np.array([type(exc).__name__]),
                    ERROR_MESSAGE_COLUMN: np.array([str(exc)])}
        part = Embedded.concat(parts)
        return {ROW_COLUMN: np.concatenate(numbers), "embedding": part.embeddings,
                **{HEAD_PREFIX + name: values for name, values in part.heads.items()},
                **{VIEW_PREFIX + name: values for name, values in part.views.items()}}


def plan_actors(actors: int | Literal["auto"], cpus_per_actor: int = 1) -> ActorPlan:
    """The actors of ``embed.actors`` on the connected cluster: one GPU each where it has GPUs
    (``auto``: one per GPU), else ``cpus_per_actor`` CPUs each (``auto``: as many as its CPUs
    hold). ConfigError for more GPU actors than GPUs, or more CPUs than a fixed cluster has."""
    import ray

    from dml.pipeline.ray_cluster import check_fits_a_node, fixed_cluster_node_cpus

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if actors != "auto" and actors < 1:
        raise ConfigError(f"embed.actors: {actors} runs in process, not on Ray Data")
    check_fits_a_node("embed.cpus_per_actor", cpus_per_actor)
    if gpus:
        count = gpus if actors == "auto" else actors
        if count > gpus:
            raise ConfigError(f"embed.actors: {count} GPU actors asked, the Ray cluster has {gpus} GPUs")
        return ActorPlan(count, cpus_per_actor, 1)
    count = max(1, cpus // cpus_per_actor) if actors == "auto" else actors
    if fixed_cluster_node_cpus() is not None and count * cpus_per_actor > cpus:
        raise ConfigError(f"embed.actors: {count} actors of {cpus_per_actor} CPUs asked, the Ray "
                          f"cluster has {cpus} CPUs; lower embed.actors or embed.cpus_per_actor")
    return ActorPlan(count, cpus_per_actor, 0)


def embed_on_ray(job: EmbedJob, *, batch_size: int, actors: int | Literal["auto"],
                 cpus_per_actor: int = 1, progress: bool = False) -> Iterator[Embedded]:
    """Every row of ``job`` embedded by Ray Data actors (:func:`plan_actors`; Ray connected),
    yielded in row order as blocks of results arrive: memory holds a few blocks, not all.

    The records are the batches of :func:`~dml.embed.batch_ranges`, one per block so that
    the actors share them out; the output keeps their order (``preserve_order``), which is
    checked by each row's number.
    """
    import ray

    from dml.pipeline.quiet import quiet_ray_data

    quiet_ray_data()  # a progress bar of our own, no Ray Data chatter
    plan = plan_actors(actors, cpus_per_actor)
    records = [{"start": start, "stop": stop} for start, stop in batch_ranges(job.rows, batch_size)]
    if not records:
        return
    with warnings.catch_warnings():
        # max_restarts: an actor that dies fails the stage rather than restarting, and Ray's
        # core worker no longer says on the console that a restarted actor could lose its
        # constructor arguments (ray-project/ray#53727). Ray 2.60 deprecates passing it this
        # way without naming another.
        warnings.simplefilter("ignore", DeprecationWarning)
        embedded = ray.data.from_items(records, override_num_blocks=len(records)).map_batches(
            EmbedActor, fn_constructor_kwargs={"job": job, "device": plan.device, "threads": plan.cpus},
            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=plan.count),
            num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0)
    context = embedded.context  # this dataset's own copy: the session's default is left alone
    context.execution_options.preserve_order = True
    expected = 0
    blocks = embedded.iter_batches(batch_size=None, batch_format="numpy")
    for block in tqdm(blocks, total=len(records), desc="embed", unit="batch", leave=False,
                      disable=None if progress else True):  # None: on a terminal only
        if ERROR_COLUMN in block:
            raise getattr(errors, str(block[ERROR_COLUMN][0]), DmlError)(str(block[ERROR_MESSAGE_COLUMN][0]))
        numbers = block[ROW_COLUMN]
        if not np.array_equal(numbers, np.arange(expected, expected + len(numbers))):
            raise RuntimeError(f"Ray Data returned rows {numbers[:1].tolist()}... where row {expected} "
                               "was next: the batches' order was lost")
        expected += len(numbers)
        yield Embedded(block["embedding"],
                       {name: block[HEAD_PREFIX + name] for name in job.heads},
                       {name: block[VIEW_PREFIX + name] for name in job.views})
    if expected != job.rows:
        raise RuntimeError(f"Ray Data returned {expected} of the {job.rows} rows")



def embed_to(out: str | os.PathLike[str], model_dir: str | os.PathLike[str],
             manifest: str | os.PathLike[str], splits: str | os.PathLike[str], *,
             domains: Sequence[str] | None, normalize: bool, views: tuple[str, ...], batch_size: int,
             actors: int | Literal["auto"], cpus_per_actor: int = 1, shard_rows: int | None = None,
             progress: bool = False) -> tuple[int, int]:
    """Embed every row of the manifest in ``domains`` (all splits) with the exported model
    ``model_dir`` (and its extra heads, and the named ``views``) into the embeddings file or
    shards ``out``: in this process with ``actors`` 0, else on Ray Data (connected to Ray, or a
    local instance for the call); the rows and dimension written.

    Each image is embedded once, so none is kept after its batch (``cache_bytes=0``): memory
    does not grow with the rows, in this process or in an actor.
    """
    from dml.evaluate.protocols import EvalRows
    from dml.pipeline.ray_cluster import ray_session
    from dml.train.export import load_model

    model, card = load_model(model_dir)  # a tampered model is refused here, whatever runs it
    # one recipe for the rows, which the Ray Data actors follow too (they open the manifest)
    make_dataset = functools.partial(ManifestDataset, str(manifest), str(splits), domains=domains,
                                     image_size=card["model"]["image_size"], cache_bytes=0)
    dataset = make_dataset()
    rows = EvalRows.from_rows(dataset.rows)
    options = {"normalize": normalize, "heads": tuple(model.heads), "views": tuple(views)}
    columns = {"image_id": list(rows.ids), "split": list(rows.split), "role": list(rows.role),
               "domain": list(rows.domain)}
    with contextlib.ExitStack() as stack:
        if actors == 0:
            parts = iter_embedded(model, dataset, batch_size=batch_size, progress=progress, **options)
        else:
            stack.enter_context(ray_session())
            job = EmbedJob(str(model_dir), make_dataset, len(dataset), **options)
            parts = embed_on_ray(job, batch_size=batch_size, actors=actors,
                                 cpus_per_actor=cpus_per_actor, progress=progress)
            shard_rows = shard_rows or DEFAULT_SHARD_ROWS
        with embeddings_writer(out, columns, len(dataset), embed_dim=card["embed_dim"],
                               model_hash=card["sha256"], normalized=normalize,
                               heads=options["heads"], views=options["views"],
                               shard_rows=shard_rows) as add:
            for part in parts:
                add(part)
    return len(dataset), int(card["embed_dim"])
