"""benchmarks/real_sets/cards.py on a tiny deck tree in the package's layout (needs
rsvg-convert, Debian librsvg2-bin)."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from dml.data.sources.coco import CocoSource
from dml.data.sources.folder import FolderSource
from dml.data.splits import make_splits
from dml.errors import DataError
from real_sets import cards

RANKS = ["ace", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king"]
SUITS = ["club", "diamond", "heart", "spade"]
ALL_CLASSES = sorted(f"{r}_{s}" for r in RANKS for s in SUITS)
ATTRIBUTES = ["red", "face", "ace", "number", "broadway", "low", "many_pips", "even_pips",
              "odd_pips"]


def _card_svg(element_id: str, number: int, x: float, y: float, fill: str, stroke: str) -> str:
    """One card group: the card, its index, ``number`` in binary as dots (every card of a
    deck looks different), and an invisible rect far away that widens librsvg's bounding
    box (as on the real decks)."""
    rank, suit = element_id.split("_")
    colour = "red" if suit in ("heart", "diamond") else "black"
    dots = "".join(f'<rect x="{x + 8 + 9 * bit}" y="{y + 80}" width="6" height="6" '
                   f'fill="{colour}"/>' for bit in range(6) if number >> bit & 1)
    return (f'<g id="{element_id}"><rect x="{x}" y="{y}" width="70" height="100" rx="6" '
            f'fill="{fill}" stroke="{stroke}"/><text x="{x + 4}" y="{y + 20}" font-size="16" '
            f'fill="{colour}">{rank}</text><circle cx="{x + 35}" cy="{y + 50}" r="12" '
            f'fill="{colour}"/>{dots}<rect x="{x + 300}" y="{y + 20}" width="40" height="40" '
            f'fill="none"/></g>')


def _deck(root: Path, folder: str, ids: list[str], fill: str, stroke: str = "black") -> None:
    body = "".join(_card_svg(eid, i, 10 + (i % 13) * 80, 10 + (i // 13) * 110, fill, stroke)
                   for i, eid in enumerate(ids))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="1500" height="500">'
           f'<g id="back"><rect width="70" height="100" fill="blue"/></g>{body}</svg>')
    (root / folder).mkdir(parents=True)
    with gzip.open(root / folder / f"{folder[4:]}.svgz", "wt", encoding="utf-8") as handle:
        handle.write(svg)
    (root / folder / "index.desktop").write_text("[KDE Backdeck]\nName=test\n")


def _ids() -> list[str]:
    return [f"{'1' if r == 'ace' else r}_{s}" for r in RANKS for s in SUITS]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Decks aa-one and aa-two (one family), bb, cc-partial (lacks cards), future
    (excluded by name)."""
    root = tmp_path_factory.mktemp("carddecks")
    _deck(root, "svg-aa-one", _ids(), "white")
    _deck(root, "svg-aa-two", _ids(), "#fff8e0")
    _deck(root, "svg-bb", _ids(), "#f0f0ff", stroke="#333399")
    _deck(root, "svg-cc-partial", _ids()[:5], "white")
    _deck(root, "svg-future", _ids(), "white")
    return root


@pytest.fixture(scope="module")
def built(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("out")
    return out, cards.build(tree, out, hands=12, seed=0)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cards_set(built: tuple[Path, list]) -> None:
    out, sets = built
    assert [s.name for s in sets] == ["cards", "card_hands"]
    card_set = sets[0]
    root = out / "cards" / "images"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ALL_CLASSES
    for name in ALL_CLASSES:
        assert sorted(p.name for p in (root / name).iterdir()) == ["aa-one.png", "aa-two.png",
                                                                   "bb.png"]
    image = Image.open(root / "king_heart" / "bb.png")
    assert image.mode == "RGB" and image.height == cards.CARD_HEIGHT
    assert image.width == pytest.approx(cards.CARD_HEIGHT * 71 / 101, abs=3)  # cut to the card
    rows = _rows(out / "cards" / "images" / "annotations.csv")
    assert list(rows[0]) == ["path", "label_suit", *(f"attr_{a}" for a in ATTRIBUTES)]
    assert len(rows) == 156
    by_class = {row["path"].split("/")[0]: row for row in rows}
    for name, row in by_class.items():
        assert row["label_suit"] == name.split("_")[1]
    expected = {"ace_spade": "001010001", "10_heart": "100110110", "queen_diamond": "110010000",
                "3_club": "000101001", "8_club": "000100110", "jack_heart": "110010000"}
    for name, bits in expected.items():
        assert "".join(by_class[name][f"attr_{a}"] for a in ATTRIBUTES) == bits, name
    held = {a: sum(row[f"attr_{a}"] == "1" for row in by_class.values()) for a in ATTRIBUTES}
    assert held == {"red": 26, "face": 12, "ace": 4, "number": 36, "broadway": 20, "low": 16,
                    "many_pips": 16, "even_pips": 20, "odd_pips": 20}

    source = FolderSource(**card_set.options)
    assert source.classes == ALL_CLASSES
    assert source.scales == ["fine", "suit"]
    assert source.scale_names["suit"] == SUITS
    assert source.attribute_names == ATTRIBUTES
    assert card_set.source == "folder" and card_set.scales == ["fine", "suit"]
    assert card_set.attributes == ATTRIBUTES
    assert card_set.split == {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0}
    assert card_set.protocol == {"name": "self_retrieval"}
    assert card_set.counts == {"classes": 52, "images": 156, "decks": 3, "families": 2}
    assert "future" in card_set.notes and "cc-partial (no element 2_diamond" in card_set.notes
    assert card_set.dataset_entry()["options"]["root"] == str(root)


def test_card_hands_set(built: tuple[Path, list]) -> None:
    out, sets = built
    hand_set = sets[1]
    root = out / "card_hands"
    assert hand_set.source == "coco" and hand_set.options == {"root": str(root)}
    assert hand_set.scales == ["fine"]
    assert hand_set.protocol == {"name": "multilabel", "map_ks": [100], "ndcg_ks": [10, 100]}
    assert hand_set.split == {"method": "random", "test_fraction": 0.5, "query_fraction": 0.25,
                              "num_folds": 3, "seed": 0}
    files = {side: json.loads((root / "annotations" / f"instances_{side}2017.json").read_text())
             for side in ("train", "val")}
    decks = {"aa-one": "aa", "aa-two": "aa", "bb": "bb"}
    families = {}
    annotations = 0
    for side, data in files.items():
        assert data["categories"] == [{"id": i + 1, "name": r, "supercategory": "card"}
                                      for i, r in enumerate(RANKS)]
        assert len(data["images"]) == 6
        per_image = {image["id"]: [] for image in data["images"]}
        for ann in data["annotations"]:
            per_image[ann["image_id"]].append(ann)
            rank = ann["card"].split("_")[0]
            assert ann["category_id"] == RANKS.index(rank) + 1 and ann["iscrowd"] == 0
            x, y, w, h = ann["bbox"]
            assert w > 20 and h > 20 and ann["area"] > 0
        for image in data["images"]:
            anns = per_image[image["id"]]
            assert 2 <= len(anns) <= 4
            assert len({a["card"] for a in anns}) == len(anns)  # distinct cards of one deck
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert 0 <= x and x + w <= image["width"] and 0 <= y and y + h <= image["height"]
            picture = Image.open(root / f"{side}2017" / image["file_name"])
            assert picture.size == (image["width"], image["height"]) and picture.mode == "RGB"
            assert max(picture.size) <= 256
            families.setdefault(side, set()).add(decks[image["deck"]])
            annotations += len(anns)
    assert families["train"].isdisjoint(families["val"])
    assert families["train"] | families["val"] == {"aa", "bb"}
    assert hand_set.counts["cards"] == annotations
    assert hand_set.counts["train_images"] == 6 and hand_set.counts["test_images"] == 6
    assert hand_set.counts["categories"] == 13 and hand_set.counts["test_families"] == 1
    assert f"unseen families {families['val'].pop()};" in hand_set.notes

    source = CocoSource(**hand_set.options)
    records = list(source.records())
    assert source.class_names == RANKS
    assert Counter(r["split"] for r in records) == {"train": 6, "test": 6}
    val = {a["image_id"]: a for a in files["val"]["annotations"]}
    first = next(r for r in records if r["split"] == "test")
    image_id = int(Path(first["image_id"]).stem)
    counts = Counter(RANKS.index(a["card"].split("_")[0])
                     for a in files["val"]["annotations"] if a["image_id"] == image_id)
    assert image_id in val
    assert first["object_counts"] == [{"label": k, "count": n} for k, n in sorted(counts.items())]
    split = dict(hand_set.split)
    split.pop("method")
    table = pa.table({"image_id": [r["image_id"] for r in records],
                      "split": [r["split"] for r in records]})
    splits = make_splits(table, **split)
    roles = Counter(zip(splits.column("split").to_pylist(), splits.column("role").to_pylist()))
    assert roles == {("train", "both"): 6, ("test", "query"): 2, ("test", "gallery"): 4}
    assert b'"given"' in splits.schema.metadata[b"dml"]


def test_chosen_cards_and_hands_are_seeded() -> None:
    assert len(cards.chosen_cards(None, 0)) == 52
    quick = cards.chosen_cards(26, 0)
    assert len(quick) == 26 and Counter(r for r, _ in quick) == {r: 2 for r in RANKS}
    assert quick == cards.chosen_cards(26, 0) and quick != cards.chosen_cards(26, 1)
    assert [c[0] for c in cards.chosen_cards(3, 5)] == ["ace", "2", "3"]
    decks = [cards.Deck(name, Path(name), fam) for name, fam in
             (("a1", "a"), ("a2", "a"), ("b", "b"), ("c", "c"), ("d", "d"))]
    test = cards.pick_test_families([d.family for d in decks], 4, 0)
    assert len(test) == 2 and test == cards.pick_test_families(["d", "c", "b", "a"], 4, 0)
    hands = cards.deal_hands(decks, quick, 20, 0, test)
    assert hands == cards.deal_hands(decks, quick, 20, 0, test)
    fam = {d.name: d.family for d in decks}
    assert all((fam[h.deck] in test) == (h.side == "val") for h in hands)
    assert Counter(h.side for h in hands) == {"train": 10, "val": 10}


def test_compose_hand_keeps_cards_inside() -> None:
    card = Image.new("RGBA", (70, 100), (255, 255, 255, 255))
    for layout in ("fan", "row"):
        rng = np.random.default_rng(0)
        picture, quads = cards.compose_hand([card] * 4, layout, (0, 90, 0), rng)
        assert max(picture.size) <= 256 and len(quads) == 4
        xs = [v for q in quads for v in q[0::2]]
        ys = [v for q in quads for v in q[1::2]]
        assert min(xs) >= 0 and max(xs) <= picture.width
        assert min(ys) >= 0 and max(ys) <= picture.height


def _inside(quad: list[float], x: float, y: float) -> bool:
    """Whether (x, y) lies inside the convex quadrilateral ``quad``."""
    points = list(zip(quad[0::2], quad[1::2]))
    signs = [(bx - ax) * (y - ay) - (by - ay) * (x - ax)
             for (ax, ay), (bx, by) in zip(points, points[1:] + points[:1])]
    return all(v > 0 for v in signs) or all(v < 0 for v in signs)


@pytest.mark.parametrize("index_right", [False, True])
def test_overlapping_card_is_on_top(index_right: bool) -> None:
    red = Image.new("RGBA", (70, 100), (255, 0, 0, 255))
    blue = Image.new("RGBA", (70, 100), (0, 0, 255, 255))
    picture, (left, right) = cards.compose_hand([red, blue], "row", (0, 90, 0),
                                                np.random.default_rng(1), index_right)
    shared = [(x + 0.5, y + 0.5) for x in range(picture.width) for y in range(picture.height)
              if _inside(left, x + 0.5, y + 0.5) and _inside(right, x + 0.5, y + 0.5)]
    x, y = shared[len(shared) // 2]
    r, _, b = picture.getpixel((int(x), int(y)))
    assert (r > 200 and b < 50) if index_right else (b > 200 and r < 50)


def test_missing_renderer_is_one_line_error(tree: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cards, "RSVG", "no-such-rsvg-convert")
    with pytest.raises(DataError, match="no-such-rsvg-convert not found") as error:
        cards.build(tree, tmp_path / "out", hands=4)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_empty_source_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} has no svg-") as error:
        cards.build(tmp_path / "empty", tmp_path / "out")
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="nowhere"):
        cards.build(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failing_build_leaves_no_output(tree: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("composition failed")

    monkeypatch.setattr(cards, "compose_hand", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="composition failed"):
        cards.build(tree, out, hands=4, max_cards=4)
    assert list(out.iterdir()) == []
