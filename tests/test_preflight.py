"""Checks before compute on a first folder of one's own images: 12 classes x 20 images, the
default parameters. Each answer comes in seconds, names the experiment and key, and adapts
what a default cannot do on data this small."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from dml.config import load_params, parse_params, resolve_run
from dml.data.ingest import ingest
from dml.data.splits import make_splits
from dml.errors import ConfigError, DataError
from dml.losses import LOSSES, MetricLoss
from dml.models import HEADS
from dml.preflight import preflight, preflight_tune
from dml.train.training_data import DataSpec

REPO = Path(__file__).resolve().parents[1]
#: Seconds a check may take (data reads and one forward pass on 8 images, no training).
FAST = 5.0


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def own_images(tmp_path_factory) -> Path:
    """A project folder as the README describes it: params.yaml with every default, the
    dataset pointed at an image folder, and data/own/ built by ingest and preprocess."""
    root = tmp_path_factory.mktemp("own")
    for c in range(12):
        folder = root / "images" / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(20):
            (folder / f"{i}.png").write_bytes(png(100 * c + i))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"own": {**params["datasets"]["shapes"], "source": "folder",
                                  "options": {"root": str(root / "images")}}}
    params["experiments"] = {"contrastive": {**params["experiments"]["contrastive"], "dataset": "own"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    data = root / "data" / "own"
    ingest("folder", {"root": str(root / "images")}, data / "manifest.parquet")
    split = params["datasets"]["own"]["split"]
    table = pq.read_table(data / "manifest.parquet", columns=["image_id", "label"])
    pq.write_table(make_splits(table, test_fraction=split["test_fraction"], num_folds=split["num_folds"],
                               seed=split["seed"], method=split["method"]), data / "splits.parquet")
    return root


def data_of(root: Path) -> DataSpec:
    return DataSpec(manifest=str(root / "data/own/manifest.parquet"), splits=str(root / "data/own/splits.parquet"))


def timed(call):
    start = time.perf_counter()
    out = call()
    return out, time.perf_counter() - start


def test_default_batch_shrinks_to_the_classes_of_a_small_folder_with_a_notice(own_images):
    params = load_params(own_images / "params.yaml")
    checked, seconds = timed(lambda: preflight_tune(params, "contrastive", data_of(own_images)))
    assert checked.notices == [
        "tune contrastive: train.batch_size 64 -> 16: m_per_class with m=4 needs 16 classes per "
        "global batch of 64 x 1 worker(s), the training rows have 4 once validation folds [0] "
        "are held out",
        "quantize contrastive: pq32, pq64, opq32, opq64 will be skipped: 120 training vectors, "
        "pq needs 256 / opq needs 256 (256-word codebooks); the exact index is built",
    ]
    assert checked.spec.train.batch_size == 16
    assert seconds < FAST


def test_two_workers_halve_the_batch_each_and_train_says_so(own_images):
    params = load_params(own_images / "params.yaml")
    spec = resolve_run(params, "contrastive", {"train.num_workers": 2})
    checked, seconds = timed(lambda: preflight(spec, data_of(own_images), world_size=2))
    assert checked.notices == [
        "train contrastive: train.batch_size 64 -> 8: m_per_class with m=4 needs 32 classes per "
        "global batch of 64 x 2 worker(s), the training rows have 4 once validation folds [0] "
        "are held out"]
    assert checked.spec.train.batch_size == 8
    assert seconds < FAST


def test_more_workers_than_classes_is_an_error_naming_the_key(own_images):
    params = load_params(own_images / "params.yaml")
    spec = resolve_run(params, "contrastive", {"train.num_workers": 5})
    with pytest.raises(ConfigError) as err:
        preflight(spec, data_of(own_images), world_size=5)
    assert str(err.value) == (
        "experiments.contrastive.train: m_per_class with m=4 needs 80 classes per global batch of "
        "64 x 5 worker(s), the training rows have 4: fewer classes than workers; lower "
        "experiments.contrastive.train.num_workers or use more classes")


class NeedsAttributes(MetricLoss):
    """A loss that reads per-image attributes, which an image folder without a CSV lacks."""

    def forward_batch(self, output, batch):
        return output.embeddings.sum() * batch.require("attributes", "NeedsAttributes").sum()


@pytest.fixture
def attribute_loss():
    LOSSES.register("needs_attributes")(NeedsAttributes)
    yield "needs_attributes"
    LOSSES._factories.pop("needs_attributes")


def test_a_loss_that_needs_an_annotation_the_data_lacks_fails_before_training(own_images, attribute_loss):
    spec = resolve_run(load_params(own_images / "params.yaml"), "contrastive")
    spec = spec.model_copy(update={"loss": {"name": attribute_loss}})
    with pytest.raises(ConfigError) as err:
        timed(lambda: preflight(spec, data_of(own_images), world_size=1))
    assert str(err.value) == (
        "experiments.contrastive: the first training step fails on the data: NeedsAttributes needs "
        "the annotation 'attributes', which this dataset's rows do not have (present: images, index, "
        "labels, domain, instance)")


def test_sgml_on_images_without_attributes_fails_before_training(own_images):
    spec = resolve_run(load_params(REPO / "params.yaml"), "sgml")
    spec = spec.model_copy(update={"experiment": "contrastive"})
    with pytest.raises(ConfigError) as err:
        preflight(spec, data_of(own_images), world_size=1)
    assert str(err.value) == "experiments.contrastive: model.heads.attributes: the dataset has no attributes"


class Probe(torch.nn.Module):
    """An extra head that no loss reads."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(feature_dim, 2)

    def forward(self, features, embeddings):
        return self.linear(features)


@pytest.fixture
def probe_head():
    HEADS.register("probe")(Probe)
    yield "probe"
    HEADS._factories.pop("probe")


def test_a_head_that_nothing_trains_is_refused(own_images, probe_head):
    spec = resolve_run(load_params(own_images / "params.yaml"), "contrastive",
                       {"model.heads": {probe_head: {}}})
    with pytest.raises(ConfigError) as err:
        preflight(spec, data_of(own_images), world_size=1)
    assert str(err.value).startswith(
        "experiments.contrastive.model.heads.probe: the loss 'contrastive' never trains this head")


def test_validation_folds_without_a_pair_of_one_class_are_refused(tmp_path):
    """One image per class: no validation query has anything of its class to retrieve."""
    for c in range(12):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        (tmp_path / "images" / f"c{c}" / "0.png").write_bytes(png(c))
    manifest, splits = tmp_path / "manifest.parquet", tmp_path / "splits.parquet"
    ingest("folder", {"root": str(tmp_path / "images")}, manifest)
    pq.write_table(make_splits(pq.read_table(manifest), test_fraction=0.5, num_folds=3, seed=0), splits)
    params = load_params(REPO / "params.yaml")
    spec = resolve_run(params, "contrastive").model_copy(update={"loss": None})
    started = time.perf_counter()
    with pytest.raises(DataError) as err:
        preflight(spec, DataSpec(manifest=str(manifest), splits=str(splits)), world_size=1)
    assert str(err.value) == (
        "experiments.contrastive: validation folds [0] (train.val_folds): none of the 2 queries has "
        "a relevant item in the gallery: every retrieval metric is undefined (check the labels, the "
        "relevance, or the query/gallery split)")
    assert time.perf_counter() - started < FAST


def test_dml_check_reports_the_adapted_defaults_in_seconds(own_images):
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dml.cli", "check"], cwd=own_images,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("notice: tune contrastive: train.batch_size 64 -> 16: ")
    assert lines[1].startswith("notice: quantize contrastive: pq32, pq64, opq32, opq64 will be skipped")
    assert lines[2].startswith("notice: train contrastive: train.batch_size 64 -> 16: ")
    assert lines[3] == "params.yaml: valid; experiments: contrastive; checked against their data: contrastive"
    assert time.perf_counter() - started < 60  # the interpreter's imports included


@pytest.mark.ray
def test_a_ray_train_stage_with_an_impossible_batch_fails_before_ray_starts(tiny_data, tmp_path):
    """Two workers asked for on data with fewer training classes than workers: the stage ends
    with one line, before any Ray process exists, so Ray Train never retries it."""
    from system.processes import stage_command, write_params

    write_params(tmp_path, experiment="few", data=tiny_data,
                 train={"num_workers": 9, "launcher": "ray", "storage_path": str(tmp_path / "runs")})
    started = time.perf_counter()
    out = subprocess.run(stage_command("train", "few", tiny_data), cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: experiments.few.train: m_per_class with m=4 needs 36 classes per global batch of 16 x 9 "
        "worker(s), the training rows have 4: fewer classes than workers; lower "
        "experiments.few.train.num_workers or use more classes"]
    assert "Ray" not in out.stdout + out.stderr and not (tmp_path / "runs").exists()
    assert time.perf_counter() - started < 60  # the interpreter's imports included


def test_a_query_gallery_dataset_under_self_retrieval_is_refused(tmp_path):
    """In-Shop's test images are queries and a gallery: evaluating them all-against-all would
    report another protocol's figures; the check names the key to set."""
    from data.test_sources_cub_inshop import _write_inshop

    root = _write_inshop(tmp_path)
    data = tmp_path / "data"
    ingest("inshop", {"root": str(root)}, data / "manifest.parquet")
    table = pq.read_table(data / "manifest.parquet", columns=["image_id", "label", "split", "role"])
    pq.write_table(make_splits(table, num_folds=1), data / "splits.parquet")
    spec = DataSpec(manifest=str(data / "manifest.parquet"), splits=str(data / "splits.parquet"))
    params = load_params(REPO / "params.yaml")
    reference = {"dataset": "shop", "model": {"backbone": "pixels", "embed_dim": None},
                 "train": {"epochs": 0, "val_folds": [], "select": "last"}}
    raw = {"datasets": {"shop": {"source": "inshop", "options": {"root": str(root)}}},
           "experiments": {"pixels": reference}, "quantize": params.quantize.model_dump()}
    with pytest.raises(ConfigError) as err:
        preflight(resolve_run(parse_params(raw), "pixels"), spec, world_size=1, quantize=params.quantize)
    assert str(err.value).startswith("experiments.pixels.protocol: the test rows of dataset 'shop' are "
                                     "divided into queries and a gallery")
    raw["datasets"]["shop"]["protocol"] = {"name": "query_gallery"}
    checked = preflight(resolve_run(parse_params(raw), "pixels"), spec, world_size=1, quantize=params.quantize)
    assert checked.spec.experiment == "pixels"


def test_images_stored_smaller_than_the_model_reads_them_are_a_notice(own_images):
    raw = yaml.safe_load((own_images / "params.yaml").read_text())
    raw["datasets"]["own"]["images"] = {"short_side": 16}
    checked = preflight_tune(parse_params(raw), "contrastive", data_of(own_images))
    assert ("tune contrastive: model.image_size 64 is larger than datasets.own.images.short_side 16: "
            "the stored images are enlarged; raise short_side to at least 64 and ingest again") in checked.notices
