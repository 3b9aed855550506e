"""The ``clipart`` builder on a tiny tree in openclipart-png's layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from real_sets import openclipart
from real_sets.common import MAX_SIDE


def _png(path: Path, color: tuple[int, ...], *, mode: str = "RGB",
         size: tuple[int, int] = (40, 30)) -> None:
    """A small image of one colour with a mark whose place depends on the colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA" if mode == "RGBA" else "RGB", size, color)
    image.putpixel((sum(color) % size[0], 1), (0, 0, 0, 255) if mode == "RGBA" else (0, 0, 0))
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.save(path)


def _library(root: Path) -> Path:
    """The tree (for min_images 3); the spread order reads ants, fruit, gradients, birds,
    vegetables, penguin."""
    _png(root / "animals/top_level.png", (1, 2, 3))                          # top level: out
    for i, name in enumerate(("a1", "a2", "a3", "a4")):
        _png(root / f"animals/birds/{name}.png", (200, 10 * i, 0, 128), mode="RGBA")
    (root / "animals/birds/a5.png").write_bytes((root / "animals/birds/a1.png").read_bytes())
    os.symlink("../ants/f1.png", root / "animals/birds/link.png")             # symlink: out
    for i in range(3):
        _png(root / f"animals/birds/penguin/p{i}.png", (0, 0, 50 + 40 * i))   # nested folder
    _png(root / "animals/ants/f1.png", (0, 120, 0), mode="P")                 # 2 distinct of 3
    _png(root / "animals/ants/f2.png", (0, 160, 0), mode="P")
    (root / "animals/ants/f3.png").write_bytes((root / "animals/ants/f2.png").read_bytes())
    for i in range(3):
        _png(root / f"food/fruit/r{i}.png", (90, 90, 10 * i), size=(600, 300))
    Image.new("1", (6400, 6400)).save(root / "food/fruit/huge.png")          # 41 Mpx: out
    (root / "food/fruit/broken.png").write_bytes(b"not a png")
    _png(root / "food/vegetables/g1.png", (30, 30, 30))
    (root / "food/vegetables/g0.png").write_bytes((root / "animals/ants/f1.png").read_bytes())
    _png(root / "food/vegetables/g2.png", (60, 60, 60))
    (root / "special/gradients").mkdir(parents=True)
    os.symlink("../../food/fruit/r0.png", root / "special/gradients/r.png")
    for i in range(4):
        _png(root / f"unsorted/misc/u{i}.png", (5, 5, 5 * i))                # unsorted: out
    return root


def _tree(folder: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(folder)): sorted(f.name for f in p.iterdir())
            for p in sorted(folder.glob("*/*"))}


def test_build_classes_counts_and_images(tmp_path: Path) -> None:
    source = _library(tmp_path / "png")
    out = tmp_path / "out"
    [built] = openclipart.build(source, out, min_images=3)
    images = out / "clipart" / "images"
    assert _tree(images) == {
        "animals/animals_birds": ["a1.png", "a2.png", "a3.png", "a4.png"],
        "animals/animals_birds_penguin": ["p0.png", "p1.png", "p2.png"],
        "food/food_fruit": ["r0.png", "r1.png", "r2.png"],
        "food/food_vegetables": ["g0.png", "g1.png", "g2.png"],  # g0's copy in ants: not kept
    }
    assert built.counts == {"classes": 4, "coarse_classes": 2, "images": 13,
                            "symlinks_skipped": 2, "duplicates": 2, "too_large": 1,
                            "undecodable": 1, "small_folders": 1}
    assert built.name == "clipart" and built.source == "folder"
    assert built.options == {"root": str(images), "folder_scales": ["coarse", "fine"]}
    assert built.split == {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0}
    assert built.protocol == {"name": "self_retrieval"}
    assert built.scales == ["fine", "coarse"]
    assert "\n" not in built.notes and "2 symlinks" in built.notes
    assert sorted(p.name for p in out.iterdir()) == ["clipart"]
    for path in images.rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and max(image.size) <= MAX_SIDE
    with Image.open(images / "food/food_fruit/r0.png") as image:
        assert image.size == (MAX_SIDE, MAX_SIDE // 2)
    with Image.open(images / "animals/animals_birds/a1.png") as image:  # alpha on white
        assert image.getpixel((39, 29)) == (227, 127, 127)


def test_caps_keep_the_first_classes_and_builds_repeat(tmp_path: Path) -> None:
    source = _library(tmp_path / "png")
    [built] = openclipart.build(source, tmp_path / "a", min_images=3, max_classes=2,
                                max_per_class=3)
    assert _tree(tmp_path / "a/clipart/images") == {
        "animals/animals_birds": ["a1.png", "a2.png", "a3.png"],
        "food/food_fruit": ["r0.png", "r1.png", "r2.png"],
    }
    assert built.counts["classes"] == 2 and built.counts["images"] == 6
    openclipart.build(source, tmp_path / "b", min_images=3)
    openclipart.build(source, tmp_path / "c", min_images=3)
    for path in (tmp_path / "c").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "c")).read_bytes()
    with pytest.raises(ValueError, match="max_per_class 2 is below min_images 3"):
        openclipart.build(source, tmp_path / "d", min_images=3, max_per_class=2)


def test_read_folder_images_reads_own_files_once(tmp_path: Path) -> None:
    source = _library(tmp_path / "png")
    dedup = openclipart.Deduplicator()
    images, counts = openclipart.read_folder_images(source / "animals/birds", dedup)
    assert [p.name for p, _ in images] == ["a1.png", "a2.png", "a3.png", "a4.png"]
    assert counts == {"symlinks_skipped": 1, "duplicates": 1, "too_large": 0, "undecodable": 0}
    images, counts = openclipart.read_folder_images(source / "animals/birds", dedup, limit=1)
    assert images == [] and counts["duplicates"] == 5


def test_bad_source_raises_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    (empty / "animals/birds").mkdir(parents=True)
    out = tmp_path / "out"
    message = f"^{re.escape(str(empty))}: no folder holds at least 20 images$"
    with pytest.raises(ValueError, match=message):
        openclipart.build(empty, out)
    assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(ValueError, match="missing: not a directory"):
        openclipart.build(tmp_path / "missing", out)
    source = _library(tmp_path / "png")

    def broken(image: Image.Image, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(openclipart, "save_png", broken)
    with pytest.raises(OSError, match="disk full"):
        openclipart.build(source, out, min_images=3)
    assert list(out.iterdir()) == []
