"""Ingest stores images for training: reduced to the short side, transparency composited,
small opaque images kept byte for byte, no PIL warning on the console."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import dml.data.ingest as ingest_module
from dml.config import parse_params
from dml.data.dataset import ManifestDataset
from dml.data.images import decode_rgb, flatten, store_image
from dml.data.ingest import ingest
from dml.data.manifest import read_manifest
from dml.data.synthetic.generator import generate
from dml.errors import ConfigError, DataError

WHITE = (255, 255, 255)
RED = (255, 0, 0)
INK = (200, 30, 60)
BLUE = (0, 0, 255)


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode in ("RGB", "L")
        return np.array(image.convert("RGB"))


def rgba_png() -> bytes:
    """8 x 8: the left half opaque INK, the right half fully transparent (dark underneath)."""
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[:, :4] = (*INK, 255)
    pixels[:, 4:] = (10, 20, 30, 0)
    return _encode(Image.fromarray(pixels, "RGBA"))


def palette_png() -> bytes:
    """4 x 4 palette image: index 0 (most pixels) transparent, index 1 opaque blue, index 2
    half transparent; the transparency is expressed in bytes (PIL warns on a plain RGB
    conversion)."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, *BLUE, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.putpixel((1, 1), 1)
    image.putpixel((2, 2), 2)
    return _encode(image, transparency=bytes([0, 255, 128]))


def gradient_png(width: int, height: int) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1).astype(np.uint8)
    return _encode(Image.fromarray(pixels), compress_level=1)


def small_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels))


def _tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _stored(out) -> dict[str, bytes]:
    table = read_manifest(out)
    return dict(zip(table.column("image_id").to_pylist(), table.column("image").to_pylist()))


@pytest.fixture
def sequential(monkeypatch):
    """Decode in the calling thread: a warning PIL raised would reach the test's filters."""
    monkeypatch.setattr(ingest_module, "_threads", lambda: 1)


@pytest.mark.parametrize("background, colour", [("white", WHITE), ("#ff0000", RED)])
def test_transparency_is_composited_onto_the_background(tmp_path, sequential, background,
                                                        colour):
    root = _tree(tmp_path / "images", {"clipart/rgba.png": rgba_png(),
                                       "clipart/palette.png": palette_png()})
    out = tmp_path / "m.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ingest("folder", {"root": str(root)}, out, background=background)
        stored = _stored(out)
        rgba = _pixels(stored["clipart/rgba.png"])
        palette = _pixels(stored["clipart/palette.png"])
        assert np.array_equal(decode_rgb(stored["clipart/palette.png"]), palette)
    assert report.flattened == 2 and report.resized == 0
    assert rgba.shape == (8, 8, 3)
    assert (rgba[:, :4] == INK).all() and (rgba[:, 4:] == colour).all()
    assert tuple(palette[0, 0]) == colour and tuple(palette[3, 3]) == colour
    assert tuple(palette[1, 1]) == BLUE
    half = palette[2, 2].astype(int)  # green at alpha 128 over the background
    assert np.abs(half - (np.array(colour) * 127 + np.array([0, 255, 0]) * 128) / 255).max() <= 1


def test_no_pil_warning_escapes_decoding(recwarn):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with Image.open(io.BytesIO(palette_png())) as image:
            image.convert("RGB")  # what a plain conversion does
    assert any("Transparency expressed in bytes" in str(w.message) for w in recwarn)
    recwarn.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store_image(palette_png(), short_side=256, background=WHITE)
        decode_rgb(palette_png())
        with Image.open(io.BytesIO(palette_png())) as image:
            image.load()
            assert flatten(image, WHITE).mode == "RGB"
    assert not recwarn.list


def test_a_large_image_is_stored_at_the_short_side_and_trains(tmp_path):
    root = _tree(tmp_path / "images", {"big/wide.png": gradient_png(4000, 3000),
                                       "small/tiny.png": small_png()})
    out = tmp_path / "m.parquet"
    report = ingest("folder", {"root": str(root)}, out)
    assert report.resized == 1 and report.flattened == 0 and report.images == 2
    table = read_manifest(out)
    assert table.column_names[:5] == ["image_id", "image", "path", "source_width",
                                      "source_height"]
    row = table.column("image_id").to_pylist().index("big/wide.png")
    assert table.column("source_width")[row].as_py() == 4000
    assert table.column("source_height")[row].as_py() == 3000
    with Image.open(io.BytesIO(table.column("image")[row].as_py())) as image:
        assert image.format == "PNG" and image.size == (341, 256) and image.mode == "RGB"

    dataset = ManifestDataset(out, train=True, image_size=32)
    assert dataset.images.image_array(row).shape == (256, 341, 3)
    image, index = dataset[row]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and index == row
    batch = dataset.collate([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 3, 32, 32) and torch.isfinite(batch.images).all()


def test_a_large_jpeg_is_decoded_reduced_and_stays_a_jpeg(tmp_path):
    pixels = np.asarray(Image.open(io.BytesIO(gradient_png(1600, 2400))))
    data = _encode(Image.fromarray(pixels), "JPEG", quality=90)
    stored = store_image(data, short_side=100, background=WHITE)
    assert (stored.width, stored.height, stored.resized, stored.flattened) == (1600, 2400, True,
                                                                                False)
    with Image.open(io.BytesIO(stored.data)) as image:
        assert image.format == "JPEG" and image.size == (100, 150)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    data = _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    stored = store_image(data, short_side=256, background=WHITE)
    assert (stored.width, stored.height, stored.resized) == (30, 40, False)
    upright = _pixels(stored.data)
    assert upright.shape == (40, 30, 3)
    assert upright[:15].mean() > 200 and upright[-15:].mean() < 50  # the white half on top


def test_a_small_opaque_image_is_stored_byte_for_byte(tmp_path):
    original = small_png()
    root = _tree(tmp_path / "images", {"a/x.png": original})
    report = ingest("folder", {"root": str(root)}, tmp_path / "m.parquet")
    assert _stored(tmp_path / "m.parquet")["a/x.png"] == original
    assert report.resized == report.flattened == 0
    table = read_manifest(tmp_path / "m.parquet")
    assert table.column("source_width").to_pylist() == [32]
    assert table.column("source_height").to_pylist() == [32]


def test_synthetic_images_are_stored_unchanged(tmp_path):
    options = {"images_per_class": 1, "classes_per_type": 2, "domains": ["photo", "sketch"]}
    report = ingest("synthetic", options, tmp_path / "m.parquet")
    table, _ = generate(images_per_class=1, classes_per_type=2, domains=("photo", "sketch"))
    assert read_manifest(tmp_path / "m.parquet").column("image").equals(table.column("image"))
    assert report.resized == report.flattened == 0


def test_decompression_bomb_error_is_a_bad_file_and_the_warning_is_silent(
        tmp_path, monkeypatch, sequential, recwarn):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns above 1000, fails above 2000
    between = _encode(Image.new("RGB", (40, 40), INK))
    above = _encode(Image.new("RGB", (50, 50), INK))
    root = _tree(tmp_path / "images", {"a/between.png": between})
    ingest("folder", {"root": str(root)}, tmp_path / "m.parquet")
    assert _stored(tmp_path / "m.parquet")["a/between.png"] == between
    assert not recwarn.list

    _tree(root, {"a/above.png": above})
    with pytest.raises(DataError, match=r"above.png: too large to decode safely \(Image size "
                                        r"\(2500 pixels\) exceeds limit"):
        ingest("folder", {"root": str(root)}, tmp_path / "m.parquet", where="datasets.mine")
    assert not recwarn.list


def test_threads_give_the_same_manifest(tmp_path, monkeypatch):
    truncated = gradient_png(300, 200)
    root = _tree(tmp_path / "images", {
        "a/rgba.png": rgba_png(), "a/palette.png": palette_png(), "b/big.png":
        gradient_png(900, 600), "b/small.png": small_png(), "b/cut.png": truncated[:200],
        **{f"c/{i}.png": gradient_png(300 + i, 280) for i in range(8)},
    })
    tables, reports = [], []
    filters = list(warnings.filters)
    for threads in (1, 3):
        monkeypatch.setattr(ingest_module, "_threads", lambda threads=threads: threads)
        out = tmp_path / f"m{threads}.parquet"
        reports.append(ingest("folder", {"root": str(root)}, out, on_bad="skip",
                              short_side=256).to_dict())
        tables.append(read_manifest(out))
        assert warnings.filters == filters  # the threads' warning filters are undone
    assert tables[0].equals(tables[1])
    assert [b["file"] for b in reports[0]["bad_files"]] == [str(root / "b/cut.png")]
    for report in reports:
        report.pop("manifest")
    assert reports[0] == reports[1]
    assert reports[0]["resized"] == 9 and reports[0]["flattened"] == 2


def test_configuration_errors_name_the_dataset_keys(tmp_path):
    root = _tree(tmp_path / "images", {"a/x.png": small_png()})
    out = tmp_path / "m.parquet"
    with pytest.raises(ConfigError, match=r"^datasets\.mine\.images\.background: 'nope' is not "
                                          "a colour"):
        ingest("folder", {"root": str(root)}, out, background="nope", where="datasets.mine")
    with pytest.raises(ConfigError, match=r"^datasets\.mine\.images\.short_side: 4 "):
        ingest("folder", {"root": str(root)}, out, short_side=4, where="datasets.mine")
    with pytest.raises(ConfigError, match=r"^datasets\.mine\.on_bad: 'ignore' is not one of"):
        ingest("folder", {"root": str(root)}, out, on_bad="ignore", where="datasets.mine")
    assert not out.exists()

    with pytest.raises(ConfigError, match=r"datasets\.mine\.images\.background: '#12345' is "
                                          "not a colour"):
        parse_params({"datasets": {"mine": {"images": {"background": "#12345"}}}})
    with pytest.raises(ConfigError, match=r"datasets\.mine\.images\.short_side"):
        parse_params({"datasets": {"mine": {"images": {"short_side": 4}}}})
    images = parse_params({"datasets": {"mine": {}}}).datasets["mine"].images
    assert (images.short_side, images.background) == (256, "white")


def test_the_bad_file_hint_names_the_dataset_key(tmp_path):
    root = _tree(tmp_path / "images", {"a/x.png": small_png(), "a/broken.png": b"not a png"})
    with pytest.raises(DataError, match=r"set datasets\.mine\.on_bad: skip to leave them out"):
        ingest("folder", {"root": str(root)}, tmp_path / "m.parquet", where="datasets.mine")
