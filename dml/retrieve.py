"""Search with a trained run: an image on disk to its nearest gallery items.

A :class:`Retriever` joins what the pipeline wrote for one (experiment, seed): the exported
model (``models/``), one of the quantize stage's indexes (``indexes/``) and the gallery rows
that index holds (the embeddings file and the dataset's manifest, read as the evaluate stage
reads them). A query image goes through ingest's checks and storage
(:func:`dml.data.ingest.prepare_image`), the dataset's evaluation transforms and the protocol's
geometry (:class:`EmbeddingNet`: L2-normalized under cosine, image and mirror averaged where
the protocol flips), so it is embedded exactly as the gallery was::

    from dml.retrieve import Retriever
    retriever = Retriever.from_run("multi_similarity", seed=0, index="opq64")
    hits = retriever.search(["query.png"], k=10)[0]  # [Hit(image_id, name, score, rank), ...]
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dml.batch import DOMAIN_CODES
from dml.config import ImagesConfig, RunSpec, load_params, resolve_run
from dml.data.images import decode_rgb, parse_colour
from dml.data.ingest import prepare_image
from dml.data.manifest import read_info
from dml.data.transforms import MEAN, STD, build_transforms
from dml.embed import read_embeddings
from dml.errors import DataError
from dml.evaluate.experiment import aligned_rows, gallery_indices
from dml.evaluate.geometry import GEOMETRIES, Geometry
from dml.evaluate.protocols import CrossDomain, build_protocol
from dml.index import index_order, load_index, search
from dml.models import EmbeddingModel
from dml.pipeline.stage import read_tuned
from dml.train.export import load_model

#: What a user runs to make the files a search reads.
RUN_HINT = "run the pipeline first: `dml run -- dvc repro` (or `make demo`)"

#: What one image may be: a file path, its encoded bytes, or a PIL image.
ImageInput = str | os.PathLike | bytes | Image.Image


@dataclass(frozen=True)
class RunFiles:
    """Where the pipeline wrote one (experiment, seed) of a project (dvc.yaml's paths)."""

    project: Path
    experiment: str
    seed: int

    @property
    def model(self) -> Path:
        return self.project / "models" / self.experiment / f"seed{self.seed}"

    @property
    def embeddings(self) -> Path:
        return self.project / "embeddings" / self.experiment / f"seed{self.seed}.parquet"

    @property
    def indexes(self) -> Path:
        return self.project / "indexes" / self.experiment / f"seed{self.seed}"

    @property
    def tuned(self) -> Path:
        return self.project / "tuned" / f"{self.experiment}.json"

    @property
    def metrics(self) -> Path:
        return self.project / "metrics" / self.experiment / f"seed{self.seed}.json"

    def index_names(self) -> list[str]:
        """The indexes the quantize stage built for this run (``flat`` first)."""
        return sorted((p.stem for p in self.indexes.glob("*.faiss")), key=index_order)

    def index_path(self, name: str) -> Path:
        """The file of index ``name``; an unknown name lists the valid ones."""
        names = self.index_names()
        if name not in names:
            raise DataError(f"{self.indexes}: no index {name!r}; valid choices: "
                            f"{', '.join(names) or '(none: ' + RUN_HINT + ')'}")
        return self.indexes / f"{name}.faiss"

    @classmethod
    def locate(cls, experiment: str, seed: int = 0, project: str | os.PathLike[str] = ".") -> RunFiles:
        """The run's files, checked: an unknown experiment or seed lists the valid ones; a run
        whose model, embeddings or indexes are missing says what to run."""
        project = Path(project)
        params_path = project / "params.yaml"
        if not params_path.is_file():
            raise DataError(f"{params_path} does not exist: give the project folder (where "
                            "params.yaml and dvc.yaml are)")
        params = load_params(params_path)
        params.experiment(experiment)  # unknown: lists the valid ones
        if seed not in params.seeds:
            raise DataError(f"{params_path}: seed {seed} is not one of the project's seeds: "
                            f"{', '.join(map(str, params.seeds))}")
        files = cls(project, experiment, seed)
        for what, path in (("model", files.model / "model.json"), ("embeddings", files.embeddings),
                           ("indexes", files.indexes), ("tune output", files.tuned)):
            if not path.exists():
                raise DataError(f"experiment {experiment!r} seed {seed} was never trained here "
                                f"(no {what} at {path}); {RUN_HINT}")
        return files


@dataclass(frozen=True)
class Preprocessing:
    """How a query image becomes the model's input, as the pipeline makes the gallery's:
    ingest's decoding and storage (shorter side at most ``short_side`` pixels, transparency
    onto ``background``), then the evaluation transforms (a square resize to ``image_size``,
    scaled to [0, 1], normalized by ``mean`` and ``std``)."""

    image_size: int
    short_side: int
    background: str
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    @classmethod
    def of_run(cls, spec: RunSpec, images: ImagesConfig) -> Preprocessing:
        return cls(image_size=spec.model.image_size, short_side=images.short_side,
                   background=images.background)

    def describe(self) -> dict[str, Any]:
        """The steps in words and numbers (written beside an exported model)."""
        return {
            "decode": "RGB; transparent pixels composited onto the background colour",
            "background": self.background,
            "short_side": self.short_side,
            "resize": [self.image_size, self.image_size],
            "interpolation": "bilinear, antialiased (torchvision Resize)",
            "scale": "pixel / 255",
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW float32",
        }

    def tensor(self, data: bytes, where: str) -> torch.Tensor:
        """``[3, S, S]`` model input of the encoded image ``data``; a DataError naming
        ``where`` (the file) when it does not decode, as ingest words it."""
        stored = prepare_image(data, None, short_side=self.short_side,
                               background=parse_colour(self.background, "images.background"))
        if isinstance(stored, str):
            raise DataError(f"{where}: {stored}")
        return build_transforms(self.image_size, train=False)(decode_rgb(stored.data))


def image_bytes(image: ImageInput) -> tuple[bytes, str]:
    """The encoded bytes of ``image`` and a name for messages; a missing file is named."""
    if isinstance(image, bytes):
        return image, "image bytes"
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "PIL image"
    path = Path(image)
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err.strerror or err})") from None


class EmbeddingNet(torch.nn.Module):
    """Images ``[B, 3, S, S]`` (and each one's domain flag, for a model conditioned on it)
    to the vectors a run's indexes are searched with: the embedding, L2-normalized under a
    cosine protocol; with ``flip``, the mean of the image's and its mirror's (normalized
    again), as :func:`dml.index.code_vectors` makes the gallery's."""

    def __init__(self, model: EmbeddingModel, *, normalize: bool, flip: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.flip = flip

    @property
    def conditioned(self) -> bool:
        return self.model.condition is not None

    def _view(self, images: torch.Tensor, domain: torch.Tensor | None) -> torch.Tensor:
        embeddings = self.model(images, domain).embeddings.float()
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def forward(self, images: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
        vectors = self._view(images, domain)
        if self.flip:
            vectors = (vectors + self._view(images.flip(-1), domain)) / 2
            if self.normalize:
                vectors = F.normalize(vectors, dim=1)
        return vectors


@dataclass(frozen=True)
class Hit:
    """One search result: the gallery item's id, its class name (None for unlabelled rows),
    its score (``Retriever.score_name``) and its rank (1 = nearest)."""

    image_id: str
    name: str | None
    score: float
    rank: int


class Retriever:
    """A run's model, preprocessing and one index over its test gallery: :meth:`embed`
    images, :meth:`search` images or vectors."""

    def __init__(self, net: EmbeddingNet, preprocessing: Preprocessing, index: faiss.Index, *,
                 gallery_ids: Sequence[str], gallery_names: Sequence[str | None], geometry: Geometry,
                 query_domain: str = "photo", name: str = "index") -> None:
        if len(gallery_ids) != index.ntotal:
            raise DataError(f"{name}: the index holds {index.ntotal} items, the gallery has "
                            f"{len(gallery_ids)} rows; re-run the quantize stage")
        self.net, self.preprocessing, self.index = net, preprocessing, index
        self.gallery_ids = list(gallery_ids)
        self.gallery_names = list(gallery_names)
        self.geometry = geometry  # how the index scores a result
        self.score_name = geometry.score_name
        if geometry.faiss_metric == "ip" and not isinstance(faiss.downcast_index(index), faiss.IndexFlat):
            self.score_name += " to the quantized item"
        self.query_domain = query_domain
        self.name = name

    @classmethod
    def from_run(cls, experiment: str, *, seed: int = 0, index: str = "flat",
                 project: str | os.PathLike[str] = ".") -> Retriever:
        """The retriever of a project's run: its exported model and the quantize stage's
        index ``index`` (``flat``: exact; ``pq64``, ``opq64``, ``hash64``, ...)."""
        files = RunFiles.locate(experiment, seed, project)
        path = files.index_path(index)
        params = load_params(files.project / "params.yaml")
        spec = resolve_run(params, experiment)
        protocol = build_protocol(spec.protocol)
        model, card = load_model(files.model)
        table, _, meta = read_embeddings(files.embeddings, expected_dim=card["embed_dim"])
        if meta.get("model_sha256") != card["sha256"]:
            raise DataError(f"{files.embeddings} was embedded by another model than {files.model}; "
                            f"{RUN_HINT}")
        data = read_tuned(str(files.tuned))["data"]
        manifest = str(files.project / data["manifest"])
        rows = aligned_rows(spec, manifest, str(files.project / data["splits"]), table)
        gallery = gallery_indices(rows, protocol)
        faiss_index, _ = load_index(path)
        info = read_info(manifest)
        fine = rows.labels.get(info.fine)
        names = ([None] * len(gallery) if fine is None
                 else [info.class_names[info.fine][int(label)] if label >= 0 else None
                       for label in fine[gallery]])
        lsh = isinstance(faiss.downcast_index(faiss_index), faiss.IndexLSH)
        net = EmbeddingNet(model, normalize=protocol.geometry.normalized, flip=protocol.flip)
        return cls(net, Preprocessing.of_run(spec, params.dataset(spec.dataset).images), faiss_index,
                   gallery_ids=list(rows.ids[gallery]), gallery_names=names,
                   geometry=GEOMETRIES["hamming"] if lsh else protocol.geometry,
                   query_domain=protocol.query_domain if isinstance(protocol, CrossDomain) else "photo",
                   name=str(path))

    def images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The model input ``[B, 3, S, S]`` of ``images`` (paths, bytes or PIL images)."""
        if not len(images):
            raise DataError("no query image given")
        return torch.stack([self.preprocessing.tensor(*image_bytes(image)) for image in images])

    @torch.no_grad()
    def embed(self, images: Sequence[ImageInput], *, domain: str | None = None) -> np.ndarray:
        """float32 ``[B, D]``: the vectors :meth:`search` ranks the gallery by, for images of
        ``domain`` (default: the protocol's query domain, e.g. sketches against photos)."""
        batch = self.images(images)
        flag = None
        if self.net.conditioned:
            code = DOMAIN_CODES[domain or self.query_domain]
            flag = torch.full((len(batch),), code, dtype=torch.int64)
        return self.net(batch, flag).numpy()

    def search(self, queries: Sequence[ImageInput] | np.ndarray, k: int = 10, *,
               domain: str | None = None) -> list[list[Hit]]:
        """The ``k`` nearest gallery items of each query (images of ``domain``, or vectors
        from :meth:`embed`), nearest first, scored by :attr:`score_name`."""
        vectors = queries if isinstance(queries, np.ndarray) else self.embed(queries, domain=domain)
        scores, ids = search(self.index, vectors, k)
        if self.geometry.euclidean:  # faiss ranks by squared distance; report the distance
            scores = np.sqrt(np.maximum(scores, 0.0))
        return [[Hit(self.gallery_ids[i], self.gallery_names[i], float(s), rank)
                 for rank, (i, s) in enumerate(zip(row_ids, row_scores), start=1) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]
