"""The Wesnoth builder on a tiny tree in the package's own layout (no package needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dml.data.sources.folder import FolderSource
from dml.errors import DataError
from real_sets import wesnoth
from real_sets.common import MAX_SIDE

SPEARMAN = '''#textdomain wesnoth-units
[unit_type]
    id=Spearman
    name= _ "Spearman"
    race=human
    image="units/human-loyalists/spearman.png"
    profile="portraits/humans/spearman.png~RIGHT()"
    movement_type=smallfoot
    level=1
    alignment=lawful
    advances_to=Pikeman
    cost=14 # cheap
    description= _ "Two lines,
[not_a_tag]
the second."
    {DEFENSE_ANIM "units/human-loyalists/spearman-defend.png" {SOUND_LIST:HUMAN_HIT} }
    [attack]
        name=javelin
        range=ranged
    [/attack]
    [female]
        image="units/human-loyalists/spearman+female.png"
        profile="portraits/humans/spearman+female.png"
    [/female]
    [variation]
        variation_id=zombie
        image="units/human-loyalists/spearman-zombie.png"
    [/variation]
[/unit_type]
'''

PIKEMAN = '''[unit_type]
    id=Pikeman
    race=human
    image="units/human-loyalists/pikeman.png"
    profile="portraits/humans/pikeman.png"
    movement_type=smallfoot
    level=2
    alignment=lawful
    advances_to=Halberdier
    cost=25
    [attack]
        range=melee
    [/attack]
[/unit_type]
[unit_type]
    id=Dark Pikeman
    race=human
    image="units/human-loyalists/pikeman.png~CS(-50,-50,-50)"
    level=2
    advances_to=null
[/unit_type]
'''

HALBERDIER = '''[unit_type]
    id=Halberdier
    race=undead
    image="units/human-loyalists/pikeman-halberd.png"
    profile="portraits/humans/pikeman.png"
    movement_type=armoredfoot
    level=3
    alignment=neutral
    advances_to=null
    cost=40
[/unit_type]
[unit_type]
    id=Peasant
    race=human
    image="units/human-loyalists/peasant.png"
    profile="portraits/humans/peasant.png"
    level=0
    alignment=lawful
    advances_to=Spearman
[/unit_type]
'''

GRUNT = '''#define GRUNT_PATH
units/orcs/#enddef
#ifdef __UNUSED__
[unit_type]
    id=Ghost Grunt
[/unit_type]
#endif
[unit_type]
    id=Orcish Grunt
    race=orc
    image="{GRUNT_PATH}grunt.png"
    profile="portraits/orcs/grunt.png~FL()"
    movement_type=orcishfoot
    level=1
    alignment=chaotic
    advances_to=Orcish Warrior
    cost=12
    {TRAIT_SOMETHING}
[/unit_type]
'''

#: Sprite positions: each a block far enough from the others not to be a near-duplicate.
_SPOTS = [(x, y) for y in (2, 26, 50) for x in (2, 26, 50)]


def _sprite(path: Path, spot: int, color: tuple[int, int, int] = (0, 0, 0), nudge: int = 0) -> None:
    """A 72x72 RGBA sprite: a 20x20 block at ``_SPOTS[spot]`` (and a second one for spots
    beyond 8), ``nudge`` moving one pixel's colour (a near-duplicate)."""
    image = Image.new("RGBA", (72, 72), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    x, y = _SPOTS[spot % 9]
    draw.rectangle([x, y, x + 19, y + 19], fill=(*color, 255))
    if spot >= 9:
        x, y = _SPOTS[(spot * 5) % 9]
        draw.rectangle([x, y, x + 9, y + 9], fill=(*color, 255))
    if nudge:
        image.putpixel((x, y), (255, 255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _portrait(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (400, 500), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([50, 50, 350, 450], fill=(*color, 255))
    image.save(path)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    """``data/core`` of a tiny package: four kept unit types, one recolouring, one with a
    single sprite."""
    root = tmp_path / "core"
    for name, text in [("humans/Spearman.cfg", SPEARMAN), ("humans/Pikeman.cfg", PIKEMAN),
                       ("humans/Halberdier.cfg", HALBERDIER), ("orcs/Grunt.cfg", GRUNT)]:
        (root / "units" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "units" / name).write_text(text, encoding="utf-8")
    loyal = root / "images/units/human-loyalists"
    _sprite(loyal / "spearman.png", 0)
    for n in range(1, 5):
        _sprite(loyal / f"spearman-attack-melee-{n}.png", n)
    _sprite(loyal / "spearman-defend.png", 5)
    _sprite(loyal / "spearman-n.png", 0, nudge=1)             # near-duplicate of spearman.png
    _sprite(loyal / "spearman+female.png", 6)
    for n in range(1, 4):
        _sprite(loyal / f"spearman+female-attack-melee-{n}.png", 6 + n)
    _sprite(loyal / "spearman-zombie.png", 10, (0, 128, 0))   # the variation's
    _sprite(loyal / "spearman-zombie-attack-1.png", 11, (0, 128, 0))
    _sprite(loyal / "pikeman.png", 0, (0, 0, 200))
    for n in range(1, 4):
        _sprite(loyal / f"pikeman-attack{n}.png", n, (0, 0, 200))
    _sprite(loyal / "pikeman-defend.png", 5, (0, 0, 200))
    _sprite(loyal / "pikeman-n.png", 6, (0, 0, 200))
    _sprite(loyal / "pikeman-death.png", 7, (200, 0, 0))      # the grunt's image again
    _sprite(loyal / "pikeman-halberd.png", 0, (90, 90, 0))
    for n in range(1, 3):
        _sprite(loyal / f"pikeman-halberd-attack-{n}.png", n, (90, 90, 0))
    _sprite(loyal / "pikeman-halberd-defend.png", 5, (90, 90, 0))
    _sprite(loyal / "pikeman-halberd-n.png", 6, (90, 90, 0))
    _sprite(loyal / "peasant.png", 0, (9, 9, 9))
    orcs = root / "images/units/orcs"
    _sprite(orcs / "grunt.png", 7, (200, 0, 0))
    for n in range(1, 6):
        _sprite(orcs / f"grunt-attack-{n}.png", n, (200, 0, 0))
    for n in range(1, 3):
        _sprite(orcs / f"grunt-idle-{n}.png", 5 + n, (200, 0, 0))
    _sprite(orcs / "grunt-defend.png", 8, (200, 0, 0))
    portraits = root / "images/portraits"
    _portrait(portraits / "humans/spearman.png", (0, 0, 0))
    _portrait(portraits / "humans/spearman+female.png", (50, 0, 0))
    _portrait(portraits / "humans/pikeman.png", (0, 0, 200))   # shared: Pikeman, Halberdier
    _portrait(portraits / "orcs/grunt.png", (200, 0, 0))
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


EXPECTED_FILES = {
    "spearman": ["spearman+female-attack-melee-2.png", "spearman+female.png",
                 "spearman-attack-melee-2.png", "spearman-defend.png", "spearman.png"],
    "pikeman": ["pikeman-attack2.png", "pikeman-defend.png", "pikeman-n.png", "pikeman.png"],
    "halberdier": ["pikeman-halberd-attack-1.png", "pikeman-halberd-defend.png",
                   "pikeman-halberd-n.png", "pikeman-halberd.png"],
    "orcish_grunt": ["grunt-attack-3.png", "grunt-defend.png", "grunt-idle-1.png", "grunt.png"],
}
ATTRIBUTES = ["alignment_lawful", "alignment_chaotic", "alignment_neutral", "level_1", "level_2",
              "level_3plus", "cost_high", "ranged", "move_armoredfoot", "move_orcishfoot",
              "move_smallfoot"]
#: unit folder -> (line, race, attribute values in ATTRIBUTES order)
EXPECTED_UNITS = {
    "halberdier": ("halberdier", "undead", "00100110100"),
    "orcish_grunt": ("orcish_grunt", "orc", "01010000010"),
    "pikeman": ("spearman", "human", "10001000001"),
    "spearman": ("spearman", "human", "10010001001"),
}


def test_parse_units_reads_fields_macros_and_children(source: Path) -> None:
    units = {u.id: u for u in wesnoth.read_units(source)}
    assert sorted(units) == ["Dark Pikeman", "Halberdier", "Orcish Grunt", "Peasant", "Pikeman",
                             "Spearman"]
    spearman = units["Spearman"]
    assert spearman.fields["profile"] == "portraits/humans/spearman.png"
    assert spearman.cost == 14 and spearman.level == 1 and spearman.ranged
    assert spearman.advances_to == ["Pikeman"]
    assert spearman.gender_images == ("units/human-loyalists/spearman+female.png",)
    assert spearman.variation_images == ("units/human-loyalists/spearman-zombie.png",)
    assert units["Orcish Grunt"].image == "units/orcs/grunt.png"
    assert units["Dark Pikeman"].recoloured and not units["Pikeman"].recoloured
    assert units["Halberdier"].advances_to == [] and not units["Pikeman"].ranged


def test_build_writes_both_sets(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wesnoth, "MIN_ATTRIBUTE_UNITS", 1)
    out = tmp_path / "out"
    units_set, portraits_set = wesnoth.build(source, out, min_images=4, min_sprites=4)

    root = out / "wesnoth_units" / "images"
    assert {d.name: sorted(p.name for p in d.iterdir()) for d in root.iterdir() if d.is_dir()} == EXPECTED_FILES
    assert units_set.name == "wesnoth_units" and units_set.source == "folder"
    assert units_set.options == {"root": str(root),
                                 "annotations_csv": str(out / "wesnoth_units/images/annotations.csv")}
    assert units_set.split == {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0}
    assert units_set.protocol == {"name": "self_retrieval"}
    assert units_set.scales == ["fine", "line", "race"]
    assert units_set.attributes == ATTRIBUTES
    assert units_set.counts == {"classes": 4, "images": 17, "lines": 3, "races": 3,
                                "attributes": len(ATTRIBUTES)}
    assert "1 near-duplicates" in units_set.notes and "1 repeats" in units_set.notes

    rows = _rows(out / "wesnoth_units" / "images" / "annotations.csv")
    assert list(rows[0]) == ["path", "label_line", "label_race", *(f"attr_{a}" for a in ATTRIBUTES)]
    assert [r["path"] for r in rows] == sorted(f"{d}/{f}" for d, files in EXPECTED_FILES.items()
                                               for f in files)
    for row in rows:
        line, race, bits = EXPECTED_UNITS[row["path"].split("/")[0]]
        assert (row["label_line"], row["label_race"]) == (line, race)
        assert "".join(row[f"attr_{a}"] for a in ATTRIBUTES) == bits
    with Image.open(root / "spearman" / "spearman.png") as image:
        assert image.mode == "RGB" and image.size == (72, 72)
        assert image.getpixel((40, 40)) == (255, 255, 255)     # transparency on white
    source_info = FolderSource(**units_set.options).info()
    assert source_info.scales == ["fine", "line", "race"]
    assert source_info.class_names["line"] == ["halberdier", "orcish_grunt", "spearman"]

    proot = out / "wesnoth_portraits" / "images"
    assert portraits_set.name == "wesnoth_portraits"
    assert portraits_set.protocol == {"name": "cross_domain", "precision_ks": [5], "flip": True}
    assert portraits_set.split == units_set.split
    assert portraits_set.counts == {"classes": 2, "images": 12, "sketches": 3, "photos": 9}
    prows = _rows(out / "wesnoth_portraits" / "images" / "annotations.csv")
    sketches = [r["path"] for r in prows if r["domain"] == "sketch"]
    assert sketches == ["orcish_grunt/portrait-grunt.png", "spearman/portrait-spearman+female.png",
                        "spearman/portrait-spearman.png"]
    photos = sorted(r["path"] for r in prows if r["domain"] == "photo")
    assert photos == sorted(f"{d}/{f}" for d in ("orcish_grunt", "spearman")
                            for f in EXPECTED_FILES[d])
    with Image.open(proot / "spearman" / "portrait-spearman.png") as image:
        assert image.size == (round(400 * MAX_SIDE / 500), MAX_SIDE)
    assert FolderSource(**portraits_set.options).info().class_names["fine"] == ["orcish_grunt",
                                                                              "spearman"]
    assert sorted(p.name for p in out.iterdir()) == ["wesnoth_portraits", "wesnoth_units"]


def test_build_defaults_and_caps(source: Path, tmp_path: Path) -> None:
    # Default attribute threshold: 4 units cannot have an attribute held by 3 and lacked by 3.
    units_set, _ = wesnoth.build(source, tmp_path / "a", min_images=4)
    assert units_set.attributes == []
    assert list(_rows(tmp_path / "a/wesnoth_units/images/annotations.csv")[0]) == [
        "path", "label_line", "label_race"]
    # max_units keeps whole lines, race by race: human (spearman), orc, undead, ...
    # (the spearman line's 2 units, then the orc's; the undead's would make 4).
    capped, portraits_set = wesnoth.build(source, tmp_path / "b", min_images=4, max_units=3)
    assert sorted(p.name for p in (tmp_path / "b/wesnoth_units/images").iterdir() if p.is_dir()) == [
        "orcish_grunt", "pikeman", "spearman"]
    assert capped.counts["classes"] == 3 and "1 beyond max_units=3" in capped.notes
    assert portraits_set.counts["classes"] == 2
    # The default 8 sprites per unit are more than the tiny tree has.
    with pytest.raises(DataError, match="no unit type") as caught:
        wesnoth.build(source, tmp_path / "c", min_sprites=99)
    assert str(source) in str(caught.value)
    assert not (tmp_path / "c").exists()


def test_bad_options_and_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        wesnoth.build(empty, out)
    assert str(empty) in str(caught.value) and "\n" not in str(caught.value)
    assert not out.exists() or not any(out.iterdir())
    (empty / "units").mkdir()
    (empty / "units" / "a.cfg").write_text(GRUNT, encoding="utf-8")    # no images/
    with pytest.raises(DataError, match="has no sprite") as caught:
        wesnoth.build(empty, out)
    assert "\n" not in str(caught.value)
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match="unknown option"):
        wesnoth.build(empty, out, min_image=3)
