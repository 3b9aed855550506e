"""Embedding on Ray Data equals the in-process path bitwise, and sharded embeddings read back as
the single file, written whole or not at all."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dml.config import ModelConfig, parse_params
from dml.context import BuildContext
from dml.data.dataset import ManifestDataset
from dml.embed import Embedded, embeddings_writer, extract, iter_embedded, read_embeddings, write_embeddings
from dml.errors import ConfigError, DataError
from dml.models import build_model
from dml.train.export import export_model, load_model

OPTIONS = {"normalize": True, "heads": ("attributes",), "views": ("flip",)}


@pytest.fixture(scope="module")
def tiny_model(short_tmp):
    """A small CNN with an attribute head, exported as the train stage exports it."""
    cfg = ModelConfig(backbone="small_cnn", backbone_options={"width": 8, "depth": 2}, embed_dim=8,
                      image_size=32, weights=None, heads={"attributes": {}})
    context = BuildContext(num_attributes=3)
    torch.manual_seed(0)
    return export_model(build_model(cfg, context), cfg, short_tmp / "embed-model", context=context)


def in_process(model_dir, make_dataset, batch_size: int, threads: int) -> tuple[Embedded, np.ndarray]:
    """The in-process path at ``threads`` torch threads: all outputs, and extract's flip view."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, _ = load_model(model_dir)
        dataset = make_dataset()
        parts = list(iter_embedded(model, dataset, batch_size=batch_size, **OPTIONS))
        flipped, _ = extract(model, dataset, batch_size=batch_size, flip=True)
    finally:
        torch.set_num_threads(before)
    return Embedded.concat(parts), flipped


def assert_bitwise(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def test_ray_data_actors_embed_bitwise_as_the_process(ray_local, tiny_data, tiny_model, tmp_path):
    from dml.embed_ray import ActorPlan, EmbedJob, embed_on_ray, plan_actors

    assert plan_actors("auto", 1) == ActorPlan(2, 1, 0)  # the local instance's 2 CPUs, no GPU
    with pytest.raises(ConfigError, match="embed.actors: 3 actors of 1 CPUs asked, the Ray cluster has 2"):
        plan_actors(3, 1)
    make_dataset = functools.partial(ManifestDataset, tiny_data["manifest"], tiny_data["splits"], image_size=32)
    local, flipped = in_process(tiny_model, make_dataset, batch_size=20, threads=1)
    rows = len(local)
    job = EmbedJob(str(tiny_model), make_dataset, rows, **OPTIONS)
    remote = Embedded.concat(list(embed_on_ray(job, batch_size=20, actors=2, cpus_per_actor=1)))
    assert rows == len(make_dataset()) and len(remote) == rows
    assert_bitwise(remote.embeddings, local.embeddings)
    assert_bitwise(remote.heads["attributes"], local.heads["attributes"])
    assert_bitwise(remote.views["flip"], local.views["flip"])
    assert_bitwise(local.views["flip"], flipped)  # the flip view: extract's mirrored images
    assert not np.array_equal(local.views["flip"], local.embeddings)

    # streamed into shards as they come; an actor that fails (here: other rows than the
    # driver's) leaves nothing behind
    out = tmp_path / "e.parquet"
    columns = {"image_id": [f"i{i}" for i in range(rows)]}
    with pytest.raises(DataError, match="the manifest changed"):
        with embeddings_writer(out, columns, rows, embed_dim=8, model_hash="h", heads=OPTIONS["heads"],
                               views=OPTIONS["views"], shard_rows=64) as add:
            for part in embed_on_ray(EmbedJob(str(tiny_model), make_dataset, rows + 1, **OPTIONS),
                                     batch_size=20, actors=1):
                add(part)
    assert list(tmp_path.iterdir()) == []


def toy(rows: int = 23, dim: int = 4) -> tuple[dict, Embedded]:
    rng = np.random.default_rng(0)
    columns = {"image_id": [f"i{i}" for i in range(rows)], "split": ["test"] * rows}
    part = Embedded(rng.standard_normal((rows, dim)).astype(np.float32),
                    {"attributes": rng.standard_normal((rows, 3)).astype(np.float32)},
                    {"flip": rng.standard_normal((rows, dim)).astype(np.float32)})
    return columns, part


def write(path, columns, part: Embedded, **options) -> None:
    write_embeddings(path, columns, part.embeddings, model_hash="h", heads=part.heads, views=part.views, **options)


def test_sharded_embeddings_read_back_as_the_single_file(tmp_path):
    columns, part = toy()
    write(tmp_path / "one.parquet", columns, part)
    with embeddings_writer(tmp_path / "shards.parquet", columns, len(part), embed_dim=4, model_hash="h",
                           heads=["attributes"], views=["flip"], shard_rows=10) as add:
        for start, stop in ((0, 3), (3, 17), (17, 17), (17, 23)):  # parts of any size, in order
            add(part.rows(start, stop))
    assert sorted(p.name for p in (tmp_path / "shards.parquet").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    one, sharded = read_embeddings(tmp_path / "one.parquet"), read_embeddings(tmp_path / "shards.parquet")
    assert sharded[0].to_pylist() == one[0].to_pylist()  # heads and views too
    assert_bitwise(sharded[1], one[1])
    assert sharded[2] == one[2] | {"rows": 23, "shards": 3}
    # the output may change layout at the same path, either way
    write(tmp_path / "one.parquet", columns, part, shard_rows=100)
    assert (tmp_path / "one.parquet").is_dir() and read_embeddings(tmp_path / "one.parquet")[2]["shards"] == 1
    write(tmp_path / "one.parquet", columns, part)
    assert (tmp_path / "one.parquet").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet", "shards.parquet"]


def test_a_failed_write_leaves_nothing_and_bad_shards_are_named(tmp_path):
    columns, part = toy()
    path = tmp_path / "e.parquet"
    with pytest.raises(RuntimeError, match="interrupted"):
        with embeddings_writer(path, columns, len(part), embed_dim=4, model_hash="h", heads=["attributes"],
                               views=["flip"], shard_rows=5) as add:
            add(part.rows(0, 12))  # two shards written
            raise RuntimeError("interrupted")
    with pytest.raises(DataError, match=r"e\.parquet: 12 rows embedded, its columns hold 23"):
        with embeddings_writer(path, columns, len(part), embed_dim=4, model_hash="h", heads=["attributes"],
                               views=["flip"], shard_rows=5) as add:
            add(part.rows(0, 12))
    assert list(tmp_path.iterdir()) == []

    write(path, columns, part, shard_rows=10)
    (path / "part-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"e\.parquet: shards .* its metadata declares 3"):
        read_embeddings(path)
    write(path, columns, part, shard_rows=10)
    shard = path / "part-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(DataError, match=r"part-00002\.parquet is not a readable parquet file"):
        read_embeddings(path)
    pq.write_table(pq.read_table(path / "part-00000.parquet").replace_schema_metadata({}), shard)
    with pytest.raises(DataError, match=r"part-00002\.parquet is not an embeddings file"):
        read_embeddings(path)
    for file in path.iterdir():
        file.unlink()
    with pytest.raises(DataError, match=r"e\.parquet is a directory without embeddings shards"):
        read_embeddings(path)


def test_the_embed_section_takes_a_count_or_auto_and_refuses_unknown_keys():
    assert parse_params({}).embed.actors == 0  # in process by default
    assert parse_params({"embed": {"actors": "auto", "shard_rows": 1000}}).embed.actors == "auto"
    with pytest.raises(ConfigError, match=r"embed\.workers: unknown key"):
        parse_params({"embed": {"workers": 2}})
    with pytest.raises(ConfigError, match=r"embed\.actors"):
        parse_params({"embed": {"actors": -1}})
