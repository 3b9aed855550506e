"""A run's embedding model as ONNX, for serving outside PyTorch, checked on export.

The graph is :class:`dml.retrieve.EmbeddingNet`: images ``[batch, 3, S, S]`` (and, for a model
conditioned on the domain, ``domain`` int64 ``[batch]``: 0 sketch, 1 photo) to the vectors the
run's indexes are searched with (normalized, flips averaged, as the protocol says). The batch
size is dynamic. Beside ``model.onnx`` goes ``model.preprocess.json``: how an image becomes the
input, and what the check measured. The check embeds real rows of the run's dataset with
PyTorch and with onnxruntime, and refuses the export (nothing is written) when the largest
absolute difference exceeds the tolerance; it also reports whether each row's top-10 neighbours
in the run's exact index are the same under both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dml.batch import DOMAIN_CODES
from dml.config import load_params, resolve_run
from dml.data.dataset import load_images
from dml.embed import read_embeddings
from dml.errors import DataError
from dml.evaluate.experiment import aligned_rows, experiment_rows, gallery_indices
from dml.evaluate.protocols import build_protocol
from dml.index import load_index, search
from dml.io import atomic_path, write_json_atomic
from dml.retrieve import EmbeddingNet, Preprocessing, RunFiles
from dml.pipeline.stage import read_tuned
from dml.train.export import load_model

#: The largest absolute difference of an embedding coordinate the export accepts.
TOLERANCE = 1e-4
#: ONNX operator set of the exported graph.
OPSET = 18


def preprocess_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.preprocess.json``."""
    return Path(onnx_path).with_suffix(".preprocess.json")


def to_onnx(net: EmbeddingNet, image_size: int, path: str | os.PathLike[str]) -> None:
    """Write ``net`` as an ONNX graph with a dynamic batch (torch's exporter)."""
    images = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1)
    if net.conditioned:
        args, names = (images, torch.ones(2, dtype=torch.int64)), ["images", "domain"]
        shapes = {"images": {0: batch}, "domain": {0: batch}}
    else:
        args, names, shapes = (images,), ["images"], {"images": {0: batch}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), args, str(path), input_names=names, output_names=["embeddings"],
                          dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, verbose=False,
                          external_data=False)


def onnx_session(path: str | os.PathLike[str]) -> Any:
    """An onnxruntime session on the CPU (onnxruntime is the ``export`` extra)."""
    try:
        import onnxruntime
    except ImportError:
        raise DataError("checking an ONNX export needs onnxruntime: pip install 'dml[export]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_embed(session: Any, images: np.ndarray, domain: np.ndarray | None = None) -> np.ndarray:
    """The ONNX model's vectors of ``images`` (float32 NCHW, preprocessed)."""
    feeds = {"images": np.ascontiguousarray(images, dtype=np.float32)}
    if domain is not None:
        feeds["domain"] = np.asarray(domain, dtype=np.int64)
    return session.run(["embeddings"], feeds)[0]


def compare(net: EmbeddingNet, path: str | os.PathLike[str], images: torch.Tensor,
            domain: torch.Tensor | None = None, *, index: Any = None, k: int = 10) -> dict[str, Any]:
    """PyTorch against onnxruntime on the same inputs: the largest absolute difference of the
    vectors and, with ``index`` (the run's exact gallery), how many rows have the same top-``k``
    neighbours, in the same order, under both."""
    with torch.no_grad():
        expected = net(images, domain).numpy()
    got = onnx_embed(onnx_session(path), images.numpy(), None if domain is None else domain.numpy())
    out: dict[str, Any] = {"rows": len(images), "max_abs_diff": float(np.abs(got - expected).max())}
    if index is not None:
        same = (search(index, expected, k)[1] == search(index, got, k)[1]).all(axis=1)
        out.update(k=min(k, int(index.ntotal)), same_neighbours=int(same.sum()))
    return out


def export_run(files: RunFiles, out: str | os.PathLike[str], *, rows: int = 64,
               tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export a run's model to ``out`` (and its preprocessing beside it), checked on up to
    ``rows`` rows of the test gallery; DataError, and no file written, above ``tolerance``."""
    params = load_params(files.project / "params.yaml")
    spec = resolve_run(params, files.experiment)
    protocol = build_protocol(spec.protocol)
    model, card = load_model(files.model)
    net = EmbeddingNet(model, normalize=protocol.geometry.normalized, flip=protocol.flip)
    preprocessing = Preprocessing.of_run(spec, params.dataset(spec.dataset).images)
    data = read_tuned(str(files.tuned))["data"]
    manifest, splits = (str(files.project / data[key]) for key in ("manifest", "splits"))
    table, _, _ = read_embeddings(files.embeddings, expected_dim=card["embed_dim"])
    eval_rows = aligned_rows(spec, manifest, splits, table)
    dataset, _ = experiment_rows(spec, manifest, splits, image_size=preprocessing.image_size)
    chosen = gallery_indices(eval_rows, protocol)[:rows]
    images = load_images(dataset, chosen)
    domain = torch.from_numpy(dataset.rows.domain_codes[chosen]) if net.conditioned else None
    index, _ = load_index(files.index_path("flat"))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="dml-onnx-") as scratch:
        written = Path(scratch) / "model.onnx"
        to_onnx(net, preprocessing.image_size, written)
        check = compare(net, written, images, domain, index=index)
        if check["max_abs_diff"] > tolerance:
            raise DataError(f"{out}: the ONNX model's embeddings differ from PyTorch's by up to "
                            f"{check['max_abs_diff']:.2e} on {check['rows']} rows of {manifest}, "
                            f"above the tolerance {tolerance:.0e}; nothing written")
        card_out = {
            "experiment": files.experiment, "seed": files.seed, "model_sha256": card["sha256"],
            "inputs": ["images", "domain"] if net.conditioned else ["images"],
            "output": "embeddings", "embed_dim": card["embed_dim"],
            "metric": protocol.metric, "normalized": protocol.geometry.normalized,
            "flip_averaged": protocol.flip, "domain_codes": dict(DOMAIN_CODES),
            "preprocessing": preprocessing.describe(),
            "check": check | {"tolerance": tolerance, "data": manifest},
        }
        with atomic_path(out) as tmp:
            shutil.copyfile(written, tmp)
    write_json_atomic(preprocess_path(out), card_out)
    return card_out

