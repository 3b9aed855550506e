"""A sharded manifest: written and read back equal to the single file, read by row group with a
bounded cache; ingest on Ray Data equal to ingest in one process, atomic, every bad file named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dml.data.ingest import ingest
from dml.data.manifest import manifest_columns, read_images, read_info, read_manifest, write_manifest
from dml.data.shards import ManifestReader, manifest_files
from dml.errors import DataError
from dml.io import sha256_file

from .conftest import png_bytes

#: 16 classes of 12 images: 192 rows, four shards of 50.
TINY_OPTIONS = {"seed": 0, "image_size": 32, "families": 2, "types_per_family": 2, "classes_per_type": 4,
                "images_per_class": 12}


@pytest.fixture(scope="module")
def single_and_sharded(tmp_path_factory, small_objects):
    """The small dataset written once as a single file and once as shards of 7 rows."""
    table, info = small_objects
    folder = tmp_path_factory.mktemp("shards")
    write_manifest(table, folder / "single.parquet", info)
    write_manifest(table, folder / "sharded.parquet", info, shard_rows=7)
    return folder / "single.parquet", folder / "sharded.parquet", table


def test_shards_read_back_equal_to_the_single_file(single_and_sharded):
    single, sharded, table = single_and_sharded
    assert sharded.is_dir() and len(manifest_files(sharded)) == -(-table.num_rows // 7)
    assert read_manifest(sharded).equals(read_manifest(single))
    assert read_info(sharded) == read_info(single)
    assert manifest_columns(sharded) == manifest_columns(single)
    assert read_manifest(sharded, columns=["image_id", "label"]).equals(
        read_manifest(single, columns=["image_id", "label"]))


def test_reader_takes_any_rows_in_order_from_either_form(single_and_sharded):
    single, sharded, table = single_and_sharded
    positions = np.random.default_rng(0).permutation(table.num_rows)[:25]
    positions[3] = positions[4]  # a row asked twice
    expected = read_manifest(single, columns=["image_id", "image"]).take(pa.array(positions))
    for path in (single, sharded):
        got = ManifestReader(path, ["image_id", "image"]).read(positions)
        assert got.to_pydict() == expected.to_pydict()
    assert ManifestReader(sharded, ["image_id"]).read([]).num_rows == 0
    with pytest.raises(DataError, match=f"row {table.num_rows} out of range"):
        ManifestReader(sharded, ["image_id"]).read([table.num_rows])


def test_reader_reads_only_the_row_groups_it_needs_and_keeps_a_bounded_cache(single_and_sharded,
                                                                          monkeypatch):
    _, sharded, table = single_and_sharded
    opened: list[tuple[str, int]] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, index, *args, **kwargs):
        opened.append((self.metadata.row_group(index).num_rows, index))
        return real(self, index, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    reader = ManifestReader(sharded, ["image"], cache_bytes=1)  # holds one group at a time
    reader.read([0, 1, 2])
    assert len(opened) == 1  # rows 0..2 share the first shard's only group
    reader.read([8])
    reader.read([0])
    assert len(opened) == 3  # the first group was evicted and read again
    assert len(reader._cache) == 1


def test_images_by_id_read_only_their_rows(single_and_sharded):
    single, sharded, table = single_and_sharded
    ids = table.column("image_id").to_pylist()
    images = table.column("image").to_pylist()
    assert read_images(sharded, [ids[3], ids[-1], "no such id"]) == {ids[3]: images[3], ids[-1]: images[-1]}


def test_a_directory_without_shards_is_named(tmp_path):
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(DataError, match="empty.parquet is a directory without manifest shards"):
        read_info(tmp_path / "empty.parquet")


def test_directory_digest_follows_every_shard(single_and_sharded, tmp_path):
    _, sharded, _ = single_and_sharded
    before = sha256_file(sharded)
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in manifest_files(sharded):
        (copy / file.name).write_bytes(file.read_bytes())
    assert sha256_file(copy) == before
    last = manifest_files(copy)[-1]
    last.write_bytes(last.read_bytes()[:-1] + b"x")
    assert sha256_file(copy) != before


# ----------------------------------------------------------------------------- ingest on Ray Data


def test_ingest_on_ray_data_equals_ingest_in_one_process(tmp_path, ray_local):
    one = ingest("synthetic", TINY_OPTIONS, tmp_path / "one.parquet")
    many = ingest("synthetic", TINY_OPTIONS, tmp_path / "many.parquet", shard_rows=50)
    assert len(manifest_files(tmp_path / "one.parquet")) == 1
    assert [f.name for f in manifest_files(tmp_path / "many.parquet")] == [
        f"part-{i:05d}.parquet" for i in range(4)]  # 192 images in shards of 50
    assert read_manifest(tmp_path / "many.parquet").equals(read_manifest(tmp_path / "one.parquet"))
    assert (one.images, one.counts, one.resized) == (many.images, many.counts, many.resized)
    assert pq.ParquetFile(manifest_files(tmp_path / "many.parquet")[0]).metadata.row_group(0).num_rows <= 128


@pytest.fixture
def bad_folder(tmp_path):
    """Twelve good images and a bad one in each of three classes, so shards of 5 spread the bad
    files over several tasks."""
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            (root / name / f"good{i:02d}.png").write_bytes(png_bytes(10 * c + i))
        (root / name / "broken.png").write_bytes(b"not a png at all")
    return root


def test_failed_ray_ingest_names_every_bad_file_and_leaves_nothing(bad_folder, tmp_path, ray_local):
    out = tmp_path / "out" / "manifest.parquet"
    out.parent.mkdir()
    with pytest.raises(DataError) as error:
        ingest("folder", {"root": str(bad_folder)}, out, shard_rows=5)
    for name in ("cat", "dog", "eel"):
        assert str(bad_folder / name / "broken.png") in str(error.value)
    assert "3 bad file(s)" in str(error.value)
    assert list(out.parent.iterdir()) == []  # no manifest, no temporary shards


def test_skipping_ray_ingest_keeps_the_rest(bad_folder, tmp_path, ray_local):
    report = ingest("folder", {"root": str(bad_folder)}, tmp_path / "m.parquet", on_bad="skip",
                    shard_rows=5)
    assert report.images == 36 and report.quarantined == 3
    assert read_manifest(tmp_path / "m.parquet").num_rows == 36


def test_an_interrupted_ingest_leaves_the_previous_manifest(tmp_path, monkeypatch):
    out = tmp_path / "manifest.parquet"
    ingest("synthetic", TINY_OPTIONS, out)
    before = sha256_file(out)
    import dml.data.ingest as module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module._RowGroups, "flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest("synthetic", TINY_OPTIONS, out)
    assert sha256_file(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]


# ----------------------------------------------------------------------------- training input


@pytest.fixture(scope="module")
def sharded_training(tmp_path_factory, small_objects):
    """The small dataset as shards of 5 rows, with its splits."""
    from dml.data.splits import make_splits, write_splits

    table, info = small_objects
    folder = tmp_path_factory.mktemp("training")
    write_manifest(table, folder / "manifest.parquet", info, shard_rows=5)
    write_splits(make_splits(table, num_folds=3, seed=0), folder / "splits.parquet")
    return folder / "manifest.parquet", folder / "splits.parquet"


def _rank_loader(manifest, splits, rank: int):
    from torch.utils.data import DataLoader

    from dml.data.dataset import ManifestDataset
    from dml.data.samplers import MPerClassBatchSampler

    dataset = ManifestDataset(manifest, splits, split="train", train=True, relabel=True,
                              image_size=16, augment=[], cache_bytes=0)
    sampler = MPerClassBatchSampler(dataset.rows.labels, m=2, batch_size=4, rank=rank,
                                    world_size=2, seed=3)
    return dataset, sampler, DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate)


def test_a_training_worker_reads_only_the_rows_of_its_part_of_each_batch(sharded_training, monkeypatch):
    manifest, splits = sharded_training
    asked: list[int] = []
    real = ManifestReader.read

    def spy(self, positions):
        asked.extend(int(p) for p in positions)
        return real(self, positions)

    monkeypatch.setattr(ManifestReader, "read", spy)
    dataset, sampler, loader = _rank_loader(manifest, splits, rank=1)
    batches = sampler.global_batches(0)
    for _ in zip(range(3), loader):
        pass
    mine = batches[:3, 4:8].reshape(-1)  # rank 1's slice of each global batch of 8
    assert asked == dataset.rows.positions[mine].tolist()


def test_training_input_resumes_mid_epoch_identically(sharded_training):
    manifest, splits = sharded_training
    _, _, loader = _rank_loader(manifest, splits, rank=0)
    whole = [batch.images for batch in loader]
    _, sampler, loader = _rank_loader(manifest, splits, rank=0)
    head = [batch.images for _, batch in zip(range(2), loader)]
    _, resumed, loader = _rank_loader(manifest, splits, rank=0)
    resumed.load_state_dict(sampler.state_dict())
    tail = [batch.images for batch in loader]
    assert len(head + tail) == len(whole) > 2
    for got, want in zip(head + tail, whole):
        assert (got == want).all()
