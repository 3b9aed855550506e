"""The ``tuxpaint`` builder on tiny trees in the layouts of tuxpaint-stamps-default and
openclipart-png."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from dml.data.sources.folder import FolderSource
from dml.data.splits import make_splits

from real_sets import tuxpaint
from real_sets.common import MAX_SIDE

def _png(path: Path, *, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Path:
    """A small image of a colour drawn from its path (no two test images alike)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = tuple(hashlib.sha1(path.as_posix().encode()).digest()[:3])
    image = Image.new("RGBA", size, (*color, 200)) if mode == "RGBA" else \
        Image.new("RGB", size, color)
    image.save(path)
    return path


def _stamp(path: Path, **kwargs) -> None:
    """A stamp: its PNG and the side files Tux Paint keeps beside it."""
    _png(path, **kwargs)
    for suffix in (".txt", ".dat", "_desc_fr.ogg"):
        path.with_name(path.stem + suffix).write_text("side file")


def _stamps(root: Path) -> Path:
    for name in ("b1", "b2", "b3", "b4", "b7"):
        _stamp(root / f"animals/birds/{name}.png", mode="RGBA")
    _stamp(root / "animals/birds/b5_mirror.png")                      # mirror: out
    (root / "animals/birds/b6.svg").write_text("<svg/>")              # SVG only: out
    (root / "animals/birds/b7.svg").write_text("<svg/>")              # SVG beside b7.png
    _stamp(root / "animals/birds/toys/teddy.png")                     # toys: out
    _stamp(root / "animals/birds/cartoon/c1.png")
    _stamp(root / "animals/birds/cartoon/c2.png", size=(700, 500))
    _stamp(root / "animals/birds/cartoon/c3.png", mode="RGBA")
    _stamp(root / "animals/birds/owls/cartoon/c4.png")               # nested cartoon folder
    for i in range(4):
        _stamp(root / f"food/fruit/f{i}.png")
    for i in range(3):
        _stamp(root / f"food/fruit/cartoon/d{i}.png")
    (root / "food/fruit/cartoon/d3.png").write_bytes((root / "food/fruit/f0.png").read_bytes())
    for i in range(2):                                                # 2 photos: too few
        _stamp(root / f"food/vegetables/v{i}.png")
    for i in range(4):
        _stamp(root / f"food/vegetables/cartoon/w{i}.png")
    _stamp(root / "cartoon/tux/tux.png")                              # no category
    _stamp(root / "symbols/chess/king.png")                           # not in MAPPED
    return root


def _clipart(root: Path) -> Path:
    for name in ("k1", "k2", "k3"):
        _png(root / f"animals/birds/{name}.png", mode="RGBA")
    os.symlink("k1.png", root / "animals/birds/link.png")             # symlink: out
    _png(root / "animals/birds/penguin/k4.png")
    _png(root / "food/fruit/apple.png")
    _png(root / "food/vegetables/leek.png")
    return root


def _rows(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "images" / "annotations.csv", newline="") as handle:
        return [(row["path"], row["domain"]) for row in csv.DictReader(handle)]


def test_build_with_clipart(tmp_path: Path) -> None:
    source, clipart = _stamps(tmp_path / "stamps"), _clipart(tmp_path / "png")
    out = tmp_path / "out"
    [built] = tuxpaint.build(source, out, clipart=clipart, max_drawings=10)
    folder = out / "tuxpaint"
    assert _rows(folder) == [
        ("birds/photo-b1.png", "photo"), ("birds/photo-b2.png", "photo"),
        ("birds/photo-b3.png", "photo"), ("birds/photo-b4.png", "photo"),
        ("birds/photo-b7.png", "photo"),
        ("birds/sketch-cartoon_c1.png", "sketch"), ("birds/sketch-cartoon_c2.png", "sketch"),
        ("birds/sketch-cartoon_c3.png", "sketch"),
        ("birds/sketch-clipart_animals_birds_k1.png", "sketch"),
        ("birds/sketch-clipart_animals_birds_k2.png", "sketch"),
        ("birds/sketch-clipart_animals_birds_k3.png", "sketch"),
        ("birds/sketch-clipart_animals_birds_penguin_k4.png", "sketch"),
        ("birds/sketch-owls_cartoon_c4.png", "sketch"),
        ("fruit/photo-f0.png", "photo"), ("fruit/photo-f1.png", "photo"),
        ("fruit/photo-f2.png", "photo"), ("fruit/photo-f3.png", "photo"),
        ("fruit/sketch-cartoon_d0.png", "sketch"), ("fruit/sketch-cartoon_d1.png", "sketch"),
        ("fruit/sketch-cartoon_d2.png", "sketch"),
        ("fruit/sketch-clipart_food_fruit_apple.png", "sketch"),
    ]
    files = sorted(p.relative_to(folder / "images").as_posix()
                   for p in (folder / "images").rglob("*.png"))
    assert files == sorted(path for path, _ in _rows(folder))
    assert built.counts == {
        "classes": 2, "images": 21, "photos": 9, "drawings": 12, "clipart_drawings": 5,
        "symlinks_skipped": 1, "mirrors_skipped": 1, "svg_skipped": 1, "duplicates": 1,
        "too_large": 0, "undecodable": 0, "small_categories": 1}
    assert built.name == "tuxpaint" and built.source == "folder"
    assert built.options == {"root": str(folder / "images"),
                             "annotations_csv": str(folder / "images" / "annotations.csv")}
    assert built.split == {"method": "held_out_queries", "queries_per_class": 1,
                           "query_domain": "sketch", "num_folds": 3, "seed": 0}
    assert built.protocol["name"] == "cross_domain" and built.protocol["flip"] is True
    assert built.scales == ["fine"] and "\n" not in built.notes
    for path in (folder / "images").rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and max(image.size) <= MAX_SIDE
    records = list(FolderSource(**built.options).records())  # the folder source reads it
    table = pa.table({"image_id": [r["image_id"] for r in records],
                      "label": [r["label"] for r in records],
                      "domain": [r["domain"] for r in records]})
    split = {k: v for k, v in built.split.items() if k != "method"}
    splits = make_splits(table, method="held_out_queries", **split)
    assert splits.column("role").to_pylist().count("query") == 2


def test_package_drawings_only_default_clipart_and_caps(tmp_path: Path, monkeypatch) -> None:
    source, clipart = _stamps(tmp_path / "stamps"), _clipart(tmp_path / "png")
    [built] = tuxpaint.build(source, tmp_path / "a", clipart=None)
    assert {path.split("/")[0] for path, _ in _rows(tmp_path / "a/tuxpaint")} == {"birds"}
    assert (built.counts["classes"], built.counts["photos"], built.counts["drawings"],
            built.counts["clipart_drawings"], built.counts["small_categories"]) == (1, 5, 4, 0, 2)
    assert built.split["queries_per_class"] == 1
    monkeypatch.setattr(tuxpaint.openclipart, "DEFAULT_SOURCE", tmp_path / "absent")
    [same] = tuxpaint.build(source, tmp_path / "b")
    assert same.counts == built.counts
    monkeypatch.setattr(tuxpaint.openclipart, "DEFAULT_SOURCE", clipart)
    runs = []
    for name in ("c", "d"):
        [capped] = tuxpaint.build(source, tmp_path / name, max_photos=4, max_drawings=2)
        runs.append(_rows(tmp_path / name / "tuxpaint"))
    assert runs[0] == runs[1]  # seeded choices
    assert (capped.counts["classes"], capped.counts["photos"], capped.counts["drawings"],
            capped.counts["clipart_drawings"]) == (2, 8, 4 + 2 + 3 + 1, 3)
    [quick] = tuxpaint.build(source, tmp_path / "e", quick=True)
    assert quick.counts["clipart_drawings"] == 5 and "<= 8 openclipart-png" in quick.notes


def test_bad_source_raises_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "stamps"
    (empty / "animals/birds").mkdir(parents=True)
    out = tmp_path / "out"
    message = (f"^{re.escape(str(empty))}: no category of MAPPED holds at least 4 photos and 4 "
               "drawings$")
    with pytest.raises(ValueError, match=message):
        tuxpaint.build(empty, out, clipart=None)
    assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(ValueError, match="nowhere: clip-art folder not found"):
        tuxpaint.build(empty, out, clipart=tmp_path / "nowhere")
    source = _stamps(tmp_path / "full")
    with pytest.raises(ValueError, match="animals/animals/birds: clip-art folder named by MAPPED"):
        tuxpaint.build(source, out, clipart=_clipart(tmp_path / "png") / "animals")
    assert list(out.iterdir()) == []
