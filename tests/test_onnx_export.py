"""The ONNX export of the demo's model: the graph onnxruntime runs embeds the demo's images as
PyTorch does, at any batch size, with the same neighbours."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from dml.config import load_params
from dml.data.dataset import ManifestDataset, load_images
from dml.data.ingest import ingest
from dml.models import build_model
from dml.onnx_export import TOLERANCE, compare, onnx_embed, onnx_session, to_onnx
from dml.retrieve import EmbeddingNet

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_demo_models_onnx_graph_embeds_the_demo_images_as_pytorch(tmp_path):
    params = load_params(REPO / "params.yaml")
    assert params.model.weights  # the demo's trunk: ImageNet weights, as every trained experiment
    model = build_model(params.model)
    shapes = params.dataset("shapes")
    manifest = tmp_path / "manifest.parquet"
    ingest(shapes.source, {**shapes.options, "root": str(REPO / shapes.options["root"])}, manifest)
    dataset = ManifestDataset(manifest, image_size=params.model.image_size)
    images = load_images(dataset, np.arange(0, len(dataset), len(dataset) // 48)[:48])
    for normalize, flip in ((True, False), (False, True)):  # cosine; euclidean with flips
        net = EmbeddingNet(model, normalize=normalize, flip=flip)
        path = tmp_path / f"model-{normalize}-{flip}.onnx"
        to_onnx(net, params.model.image_size, path)
        with torch.no_grad():
            vectors = net(images).numpy()
        gallery = faiss.IndexFlatIP(vectors.shape[1]) if normalize else faiss.IndexFlatL2(vectors.shape[1])
        gallery.add(vectors)
        check = compare(net, path, images, index=gallery)
        assert check["max_abs_diff"] < TOLERANCE
        assert check["same_neighbours"] == check["rows"] == len(images) and check["k"] == 10
        session = onnx_session(path)
        for batch in (1, 5):  # the batch size is free
            np.testing.assert_allclose(onnx_embed(session, images[:batch].numpy()), vectors[:batch],
                                       atol=TOLERANCE)
