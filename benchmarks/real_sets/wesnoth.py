"""Battle for Wesnoth unit art (Debian ``wesnoth-1.16-data``) as two zero-shot image sets.

Source: ``data/core`` of the package. Unit types come from ``units/**/*.cfg`` (WML), their
sprites (72x72 RGBA, shown on white) from ``images/units/``, their drawn portraits from
``images/portraits/``.

Reading the WML (a small preprocessor, not Wesnoth's):

- macros defined in the same file (``#define NAME ARGS ... #enddef``) are expanded, with
  their arguments; every other macro call (``{DEFENSE_ANIM ...}``, ``{TRAIT_...}``) is
  dropped; ``#ifdef``/``#ifndef`` test the file's own definitions only (``__UNUSED__``
  blocks are skipped); comments are removed;
- a unit type is a top-level ``[unit_type]`` block; its ``id``, ``race``, ``image``,
  ``profile``, ``movement_type``, ``level``, ``alignment``, ``cost`` and ``advances_to`` are
  its own keys, completed from its ``[base_unit]`` when it has one; ``[attack]`` children
  give whether it has a ranged attack; image path functions (``~RIGHT()``, ``~CHAN(...)``)
  are stripped from paths;
- ``[female]``/``[male]`` children: their image's sprites and their portrait belong to the
  unit (the same unit type drawn as the other gender);
- ``[variation]`` children are other creatures or other gear (the Walking Corpse's zombie
  drake, the Giant Scorpion's sand scuttler): their images belong to no class, but they
  still claim their sprite files, so that ``zombie-drake-attack.png`` is not a Walking
  Corpse frame: a variation image ``<unit stem>-<word>...`` claims ``<unit stem>-<word>``
  (``zombie-bat-se-3`` claims every ``zombie-bat*``), any other its stem without a frame
  number.

Sprites of a unit: the ``.png`` files of its image's folder named ``<stem>.png``,
``<stem>-<anything>.png`` or ``<stem>+<anything>.png``, each file going to the longest
stem (of any unit, gender or variation image in that folder) it starts with; a unit image
stem wins over a variation's. A frame's
action is its name without the stem and without a trailing frame number
(``-attack-melee-3`` -> action ``-attack-melee``, frame 3; ``-idle2-1`` -> ``-idle2``, 1;
``-death3`` -> ``-death``, 3). Frames of one action are near-identical, which would make
retrieval trivial, so only the middle frame of each numbered action is kept (of frames
``1..n`` sorted by number, the ``(n - 1) // 2``-th from 0: frame 2 of 4, 7 of 14); an
unnumbered file (the base image, ``-defend``, ``-n``) is its own action. Then, in the order
base image first and the others by name, an image is dropped when its 16x16 grayscale
thumbnail differs from one already kept for the same unit by a mean absolute difference
below ``near_duplicate`` (default 0.02 of the 0-1 range: pairs below it differ by a
slightly moved limb, pairs above by a pose; in 1.16 it drops 237 of 1,573 middle frames),
and when its pixels repeat an image already kept for another unit type (every unit type
read, in id order; none do in 1.16).

Units left out: those whose image path has an image path function or a macro of another
file (White Horse, Dark Horse, Black Horse's ``{HORSE_BLACK_IPF}``: recolourings of another
unit's sprites), those whose image stem is also another unit's (the first id keeps it:
Great Troll, not Troll Warrior), those without sprite files, and those with fewer
than ``min_images`` (default 8) sprites after the frame rules. ``max_units`` (quick: 40)
keeps whole advancement lines, taking them race by race in turn (races and lines by name),
until the next line would exceed it.

Set ``wesnoth_units`` (zero-shot unit retrieval, self-retrieval; random class split): fine
class = unit type (folder ``safe_name(id)``), scales ``line`` (the advancement line: a
connected component of ``advances_to`` among the kept units, with an edge only between
units of one race so that lines nest in races -- the Dark Sorcerer -> Lich step is cut; a
line is named by its lowest-level unit, ties by id) and ``race`` (the cfg's ``race``).
Attributes (0/1 per unit, repeated on each of its images): ``alignment_<a>`` for lawful,
chaotic, neutral, liminal; ``level_0`` (level 0 or less), ``level_1``, ``level_2``,
``level_3plus``; ``cost_high`` (cost at least 30 gold); ``ranged`` (an own ``[attack]`` with
``range=ranged``); ``move_<type>`` for the ``MOVE_TYPES`` (6) most common movement types
among the kept units (ties by name). Each attribute is kept only when at least
``MIN_ATTRIBUTE_UNITS`` (3) kept units have it and as many lack it (in 1.16: no liminal or
level-0 unit is kept, and one of the 6 movement types is held by fewer than 3).

Set ``wesnoth_portraits`` (cross-domain, zero-shot by class): each unit's drawn portrait
(the unit's ``profile``, and its ``[female]``/``[male]`` profile when that is another file;
domain ``sketch``, stored at ``MAX_SIDE``) is a query against that unit's sprites (domain
``photo``, chosen as above). Units: those of the sprite rules above with at least
``min_sprites`` (default 4) sprites and a decodable portrait file of their own; a portrait
file named by several unit types (a shared drawing: Elvish Scout, Rider and Outrider's) is
left out of all of them, as it would be a query of several classes. With split method
``random`` the test classes' portraits are searched among the test classes' sprites;
``precision_ks`` [5]: a unit has 4 to 16 sprites, 5 at the median. The cross-domain
sampler finds both domains in every class.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dml.errors import DataError

from .common import (BuiltSet, Deduplicator, built_folder, open_small, safe_name, save_png,
                     unique_png_name, write_csv)

PACKAGE = "wesnoth-1.16-data"
DEFAULT_SOURCE = Path("/usr/share/games/wesnoth/1.16/data/core")

#: Default least number of sprites of a unit type in ``wesnoth_units``.
MIN_IMAGES = 8
#: Default least number of sprites of a unit type in ``wesnoth_portraits``.
MIN_SPRITES = 4
#: Default mean absolute grayscale difference (0-1) under which a sprite is a near-duplicate.
NEAR_DUPLICATE = 0.02
#: Side of the grayscale thumbnail compared by the near-duplicate rule.
THUMB_SIDE = 16
#: Units kept by a quick build.
QUICK_UNITS = 40
#: An attribute is kept when at least this many kept units have it and as many lack it.
MIN_ATTRIBUTE_UNITS = 3
#: How many of the most common movement types become ``move_<type>`` attributes.
MOVE_TYPES = 6
#: ``cost_high``: a unit costing at least this much gold.
HIGH_COST = 30
ALIGNMENTS = ("lawful", "chaotic", "neutral", "liminal")
SPLIT = {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0}
#: P@K of the portrait set: about the sprites of a unit (median 5, least 4 in the full set).
PRECISION_KS = [5]

_KEYS = ("id", "race", "image", "profile", "movement_type", "level", "alignment", "cost",
         "advances_to")
_TAG = re.compile(r"^\[(/?)\+?([A-Za-z_][A-Za-z0-9_]*)\]$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_,]*)\s*=\s*(.*)$", re.S)
_FRAME = re.compile(r"^(.*?)-?(\d+)$")
#: Left where a macro of another file was called: in an image path it marks a recolouring.
_UNKNOWN = "\x1a"


# -- WML -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitType:
    """What the sets need of one ``[unit_type]``."""

    id: str
    cfg: str                                  # the cfg file, relative to the source
    fields: dict[str, str]                    # its own top-level keys of _KEYS
    base: str | None = None                   # [base_unit] id
    gender_images: tuple[str, ...] = ()       # [female]/[male] image paths
    gender_profiles: tuple[str, ...] = ()     # [female]/[male] portrait paths
    variation_images: tuple[str, ...] = ()    # [variation] image paths
    ranged: bool = False
    recoloured: bool = False                  # its image has an image path function

    @property
    def race(self) -> str:
        return self.fields.get("race", "").strip() or "unknown"

    @property
    def image(self) -> str:
        return self.fields.get("image", "")

    @property
    def level(self) -> int:
        return _int(self.fields.get("level"), 1)

    @property
    def cost(self) -> int:
        return _int(self.fields.get("cost"), 0)

    @property
    def advances_to(self) -> list[str]:
        value = self.fields.get("advances_to", "")
        return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "null"]


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default


_DIRECTIVES = ("define", "enddef", "ifdef", "ifndef", "else", "endif", "undef")
_WORD = re.compile(r"[a-z]*")


def _strip_comments(text: str) -> str:
    """``text`` without ``#`` comments; a ``#`` inside a (possibly multi-line) string and the
    preprocessor directives stay."""
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            word = _WORD.match(text, i + 1)
            if (word.group(0) if word else "") not in _DIRECTIVES:
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _collect_macros(text: str) -> tuple[list[str], dict[str, tuple[list[str], str]]]:
    """The file's lines (comments removed) outside ``#define`` blocks and inactive ``#ifdef``
    blocks, and its macros (name -> (argument names, body))."""
    macros: dict[str, tuple[list[str], str]] = {}
    lines: list[str] = []
    active: list[bool] = []
    defining: tuple[str, list[str], list[str]] | None = None
    for line in _strip_comments(text).splitlines():
        stripped = line.strip()
        if defining is not None:
            if "#enddef" in line:
                name, args, body = defining
                body.append(line[:line.index("#enddef")])
                macros[name] = (args, "\n".join(body))
                defining = None
            else:
                defining[2].append(line)
            continue
        words = stripped.split()
        directive = words[0] if words else ""
        if directive in ("#ifdef", "#ifndef"):
            known = len(words) > 1 and words[1] in macros
            active.append(known if directive == "#ifdef" else not known)
        elif directive == "#else" and active:
            active[-1] = not active[-1]
        elif directive == "#endif" and active:
            active.pop()
        elif not all(active):
            continue
        elif directive == "#define" and len(words) > 1:
            defining = (words[1], words[2:], [])
        elif directive == "#undef":
            continue
        else:
            lines.append(line)
    return lines, macros


def _matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (len(text) when unclosed)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(text)


def _macro_args(text: str) -> list[str]:
    """Arguments of a macro call: words, ``"strings"`` and ``(groups)``."""
    args: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] in "\"(":
            close = {"\"": "\"", "(": ")"}[text[i]]
            end = text.find(close, i + 1)
            end = len(text) if end < 0 else end
            args.append(text[i + 1:end])
            i = end + 1
        elif text[i] == "{":
            end = _matching_brace(text, i)
            args.append(text[i:end + 1])
            i = end + 1
        else:
            end = i
            while end < len(text) and not text[end].isspace():
                end += 1
            args.append(text[i:end])
            i = end
    return args


def _expand(text: str, macros: dict[str, tuple[list[str], str]], depth: int = 0) -> str:
    """``text`` with the file's own macros expanded and every other macro call replaced by
    ``_UNKNOWN``."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        end = _matching_brace(text, start)
        if end == len(text):  # an unclosed brace: text
            out.append(text[start:])
            return "".join(out)
        name, rest = (text[start + 1:end].split(None, 1) + ["", ""])[:2]
        if name in macros and depth < 20:
            arg_names, body = macros[name]
            values = _macro_args(rest)
            for arg, value in zip(arg_names, values):
                body = body.replace("{" + arg + "}", value)
            out.append(_expand(body, macros, depth + 1))
        else:
            out.append(_UNKNOWN)
        i = end + 1


def _logical_lines(text: str) -> Iterable[str]:
    """Stripped lines, a quoted value spanning several lines joined into one."""
    pending: list[str] = []
    for line in text.splitlines():
        pending.append(line)
        if "".join(pending).count('"') % 2 == 0:
            yield " ".join(part.strip() for part in pending).strip()
            pending = []
    if pending:
        yield " ".join(part.strip() for part in pending).strip()


def _value(raw: str) -> str:
    """A WML value without translation mark, quotes and image path functions."""
    value = raw.strip()
    if value.startswith("_"):
        value = value[1:].strip()
    value = value.replace('"', "").replace(_UNKNOWN, "").strip()
    return value.split("~", 1)[0].strip()


def parse_units(text: str, cfg: str = "") -> list[UnitType]:
    """The ``[unit_type]`` blocks of one cfg file's text."""
    lines, macros = _collect_macros(text)
    body = _expand("\n".join(lines), macros)
    units: list[UnitType] = []
    stack: list[str] = []
    current: dict[str, Any] | None = None
    for line in _logical_lines(body):
        tag = _TAG.match(line)
        if tag:
            closing, name = tag.group(1) == "/", tag.group(2)
            if not closing:
                stack.append(name)
                if stack == ["unit_type"]:
                    current = {"fields": {}, "gender_images": [], "gender_profiles": [],
                               "variation_images": [], "ranged": False, "recoloured": False,
                               "base": None}
                continue
            if stack and stack[-1] == name:
                stack.pop()
            if name == "unit_type" and not stack and current is not None:
                if current["fields"].get("id"):
                    units.append(_unit(current, cfg))
                current = None
            continue
        key = _KEY.match(line)
        if not key or current is None:
            continue
        _take(current, stack, key.group(1), key.group(2))
    return units


def _take(current: dict[str, Any], stack: list[str], key: str, raw: str) -> None:
    """Records one ``key=value`` of a unit type at tag path ``stack``."""
    where = stack[1:]
    if not where and key in _KEYS and key not in current["fields"]:
        if key == "image" and ("~" in raw or _UNKNOWN in raw):
            current["recoloured"] = True
        current["fields"][key] = _value(raw)
    elif where in (["female"], ["male"]) and key in ("image", "profile"):
        current["gender_" + key + "s"].append(_value(raw))
    elif where == ["variation"] and key == "image":
        current["variation_images"].append(_value(raw))
    elif where == ["base_unit"] and key == "id":
        current["base"] = _value(raw)
    elif where == ["attack"] and key == "range" and _value(raw) == "ranged":
        current["ranged"] = True


def _unit(current: dict[str, Any], cfg: str) -> UnitType:
    return UnitType(id=current["fields"]["id"], cfg=cfg, fields=dict(current["fields"]),
                    base=current["base"], gender_images=tuple(current["gender_images"]),
                    gender_profiles=tuple(current["gender_profiles"]),
                    variation_images=tuple(current["variation_images"]),
                    ranged=current["ranged"], recoloured=current["recoloured"])


def read_units(source: Path) -> list[UnitType]:
    """Every unit type of ``source/units/**/*.cfg`` (the first of an id or of a folder name
    ``safe_name(id)``, files by path), sorted by id, ``[base_unit]`` keys filled in; a
    DataError naming ``source`` when it has none."""
    files = sorted((source / "units").rglob("*.cfg")) if (source / "units").is_dir() else []
    units: dict[str, UnitType] = {}
    folders: set[str] = set()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for unit in parse_units(text, path.relative_to(source).as_posix()):
            if unit.id not in units and safe_name(unit.id) not in folders:
                units[unit.id] = unit
                folders.add(safe_name(unit.id))
    if not units:
        raise DataError(f"wesnoth: {source} has no [unit_type] in units/**/*.cfg "
                        f"(is {PACKAGE} installed?)")
    for name, unit in list(units.items()):
        base = units.get(unit.base or "")
        if base is not None:
            merged = {**base.fields, **unit.fields, "id": unit.id}
            units[name] = replace(unit, fields=merged, ranged=unit.ranged or base.ranged)
    return [units[name] for name in sorted(units)]


# -- sprites ---------------------------------------------------------------------------------


def _stem(image: str) -> tuple[str, str] | None:
    """(folder, stem) of a ``units/...png`` image path relative to ``images/``."""
    if not image.startswith("units/") or not image.endswith(".png"):
        return None
    folder, _, name = image.rpartition("/")
    return folder, name[: -len(".png")]


def sprite_owners(units: Sequence[UnitType]) -> dict[tuple[str, str], str | None]:
    """(folder, stem) -> the unit id whose sprites the stem names (None: a variation's).

    A unit image stem already owned by an earlier unit (by id) stays with that unit;
    recoloured units own nothing."""
    owners: dict[tuple[str, str], str | None] = {}
    for unit in units:
        own = _stem(unit.image)
        for image in unit.variation_images:
            key = _stem(image)
            if key is not None:
                owners.setdefault((key[0], _variation_stem(own[1] if own else "", key[1])), None)
    for unit in units:
        if unit.recoloured:
            continue
        for image in (unit.image, *unit.gender_images):
            key = _stem(image)
            if key is not None and owners.get(key) is None:
                owners[key] = unit.id
    return owners


def _variation_stem(unit_stem: str, stem: str) -> str:
    """The stem a variation's image claims: the unit's stem and the next word
    (``zombie-bat-se-3`` of ``zombie`` -> ``zombie-bat``), else the image's stem without a
    frame number."""
    if unit_stem and stem.startswith(unit_stem + "-"):
        return unit_stem + "-" + stem[len(unit_stem) + 1:].split("-")[0]
    frame = _FRAME.match(stem)
    return frame.group(1) if frame and frame.group(1) else stem


def _claims(name: str, stem: str) -> bool:
    return name == stem + ".png" or (name.startswith(stem) and name[len(stem)] in "-+")


def unit_sprites(images: Path, owners: dict[tuple[str, str], str | None]) -> dict[str, list[Path]]:
    """unit id -> its sprite files (each file to the longest stem of its folder it starts
    with), sorted by path."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for folder, stem in owners:
        by_folder[folder].append(stem)
    sprites: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(by_folder):
        directory = images / folder
        if not directory.is_dir():
            continue
        stems = sorted(by_folder[folder], key=len, reverse=True)
        for path in sorted(directory.glob("*.png")):
            stem = next((s for s in stems if _claims(path.name, s)), None)
            owner = owners.get((folder, stem)) if stem is not None else None
            if owner is not None:
                sprites[owner].append(path)
    return {unit: sorted(paths) for unit, paths in sprites.items()}


def middle_frames(paths: Sequence[Path], stems: Iterable[str]) -> list[Path]:
    """The base images and the middle frame of each numbered action (module doc), sorted."""
    stems = sorted(stems, key=len, reverse=True)
    actions: dict[tuple[str, str], list[tuple[int, Path]]] = defaultdict(list)
    kept: list[Path] = []
    for path in paths:
        name = path.name[: -len(".png")]
        stem = next((s for s in stems if name == s or (name.startswith(s) and name[len(s)] in "-+")), "")
        frame = _FRAME.match(name[len(stem):])
        if frame is None:
            kept.append(path)
        else:
            actions[(stem, frame.group(1))].append((int(frame.group(2)), path))
    for frames in actions.values():
        frames.sort()
        kept.append(frames[(len(frames) - 1) // 2][1])
    return sorted(kept)


def _thumb(image: Image.Image) -> np.ndarray:
    small = image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@dataclass
class Sprites:
    """The sprites kept for each unit, as images, with what the rules dropped."""

    images: dict[str, list[tuple[str, Image.Image]]] = field(default_factory=dict)
    frames_dropped: int = 0
    near_duplicates: int = 0
    repeats: int = 0


def choose_sprites(units: Sequence[UnitType], images: Path, near_duplicate: float) -> Sprites:
    """Each unit's sprites after the frame, near-duplicate and repeat rules (module doc)."""
    owners = sprite_owners(units)
    files = unit_sprites(images, owners)
    stems_of: dict[str, list[str]] = defaultdict(list)
    for (_, stem), owner in owners.items():
        if owner is not None:
            stems_of[owner].append(stem)
    out = Sprites()
    repeats = Deduplicator()
    for unit in units:
        paths = files.get(unit.id, [])
        chosen = middle_frames(paths, stems_of[unit.id])
        out.frames_dropped += len(paths) - len(chosen)
        base = images / unit.image
        chosen.sort(key=lambda p: (p != base, p.name))
        kept: list[tuple[str, Image.Image]] = []
        thumbs: list[np.ndarray] = []
        for path in chosen:
            image = open_small(path)
            if image is None:
                continue
            thumb = _thumb(image)
            if any(float(np.abs(thumb - t).mean()) < near_duplicate for t in thumbs):
                out.near_duplicates += 1
                continue
            if repeats.seen(image):
                out.repeats += 1
                continue
            thumbs.append(thumb)
            kept.append((path.name[: -len(".png")], image))
        if kept:
            out.images[unit.id] = kept
    return out


# -- classes, lines and attributes -----------------------------------------------------------


def advancement_lines(units: Sequence[UnitType]) -> dict[str, str]:
    """unit id -> its line's name: connected components of ``advances_to`` among ``units``,
    edges only within a race, each named by ``safe_name`` of its lowest-level unit (ties by
    id)."""
    by_id = {unit.id: unit for unit in units}
    parent = {unit.id: unit.id for unit in units}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for unit in units:
        for target in unit.advances_to:
            other = by_id.get(target)
            if other is not None and other.race == unit.race:
                parent[root(other.id)] = root(unit.id)
    members: dict[str, list[UnitType]] = defaultdict(list)
    for unit in units:
        members[root(unit.id)].append(unit)
    lines = {}
    for group in members.values():
        first = min(group, key=lambda u: (u.level, u.id))
        for unit in group:
            lines[unit.id] = safe_name(first.id)
    return lines


def cap_units(units: Sequence[UnitType], max_units: int | None) -> list[UnitType]:
    """At most ``max_units`` of ``units`` in whole advancement lines, taken race by race in
    turn (races and lines by name), each line that still fits; all when None."""
    if max_units is None or len(units) <= max_units:
        return list(units)
    lines = advancement_lines(units)
    by_race: dict[str, dict[str, list[UnitType]]] = defaultdict(lambda: defaultdict(list))
    for unit in units:
        by_race[unit.race][lines[unit.id]].append(unit)
    queues = [[by_race[race][line] for line in sorted(by_race[race])] for race in sorted(by_race)]
    order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    kept: list[UnitType] = []
    for group in order:
        if len(kept) + len(group) <= max_units:
            kept.extend(group)
    return sorted(kept, key=lambda u: u.id)


def unit_attributes(units: Sequence[UnitType]) -> dict[str, dict[str, int]]:
    """attribute name -> unit id -> 0/1 (module doc), only attributes at least
    ``MIN_ATTRIBUTE_UNITS`` units have and as many lack."""
    def level_bucket(level: int) -> str:
        return "level_3plus" if level >= 3 else f"level_{max(level, 0)}"

    moves = defaultdict(int)
    for unit in units:
        moves[unit.fields.get("movement_type", "").strip()] += 1
    common = sorted((name for name in moves if name), key=lambda n: (-moves[n], n))[:MOVE_TYPES]
    tests = {f"alignment_{a}": (lambda u, a=a: u.fields.get("alignment", "").strip() == a)
             for a in ALIGNMENTS}
    tests.update({name: (lambda u, name=name: level_bucket(u.level) == name)
                  for name in ("level_0", "level_1", "level_2", "level_3plus")})
    tests["cost_high"] = lambda u: u.cost >= HIGH_COST
    tests["ranged"] = lambda u: u.ranged
    tests.update({f"move_{safe_name(m)}": (lambda u, m=m: u.fields.get("movement_type", "").strip() == m)
                  for m in sorted(common)})
    out = {}
    for name, test in tests.items():
        values = {unit.id: int(bool(test(unit))) for unit in units}
        held = sum(values.values())
        if held >= MIN_ATTRIBUTE_UNITS and len(units) - held >= MIN_ATTRIBUTE_UNITS:
            out[name] = values
    return out


def portraits(units: Sequence[UnitType], all_units: Sequence[UnitType],
              images: Path) -> dict[str, list[tuple[str, Image.Image]]]:
    """unit id -> its portraits as ``("portrait-<file stem>", image)``: its profile, then its
    gender profiles, each file once; a file named by several unit types of ``all_units``,
    missing or undecodable is left out."""
    def named(unit: UnitType) -> list[str]:
        paths = [unit.fields.get("profile", ""), *unit.gender_profiles]
        return list(dict.fromkeys(p for p in paths if p))

    users: dict[str, int] = defaultdict(int)
    for unit in all_units:
        for path in named(unit):
            users[path] += 1
    out = {}
    for unit in units:
        faces = []
        for path in named(unit):
            image = open_small(images / path) if users[path] == 1 else None
            if image is not None:
                faces.append((f"portrait-{Path(path).stem}", image))
        if faces:
            out[unit.id] = faces
    return out


# -- output ----------------------------------------------------------------------------------


def _file_name(stem: str, taken: set[str]) -> str:
    """``<stem>.png`` made safe and unique among ``taken`` (which it joins)."""
    return unique_png_name(re.sub(r"[^A-Za-z0-9+_.-]", "_", stem), taken)


def _write_images(root: Path, folder: str, images: Iterable[tuple[str, Image.Image]]) -> list[str]:
    """Saves ``(stem, image)`` pairs under ``root/folder``; their paths relative to ``root``."""
    taken: set[str] = set()
    paths = []
    for stem, image in images:
        name = _file_name(stem, taken)
        save_png(image, root / folder / name)
        paths.append(f"{folder}/{name}")
    return paths


def write_units_set(out: Path, units: Sequence[UnitType], sprites: Sprites, notes: str) -> BuiltSet:
    """``out/wesnoth_units``: sprites by unit type, lines, races and attributes."""
    name = "wesnoth_units"
    lines = advancement_lines(units)
    attributes = unit_attributes(units)
    rows = []
    with built_folder(out / name) as tmp:
        for unit in units:
            for path in _write_images(tmp / "images", safe_name(unit.id), sprites.images[unit.id]):
                rows.append([path, lines[unit.id], unit.race,
                             *(attributes[a][unit.id] for a in attributes)])
        write_csv(tmp / "images" / "annotations.csv",
                  ["path", "label_line", "label_race", *(f"attr_{a}" for a in attributes)],
                  sorted(rows))
    return BuiltSet(
        name=name, source="folder",
        options={"root": str(out / name / "images"),
                 "annotations_csv": str(out / name / "images" / "annotations.csv")},
        split=dict(SPLIT), protocol={"name": "self_retrieval"},
        scales=["fine", "line", "race"], attributes=list(attributes),
        counts={"classes": len(units), "images": len(rows), "lines": len(set(lines.values())),
                "races": len({u.race for u in units}), "attributes": len(attributes)},
        notes=notes)


def write_portraits_set(out: Path, units: Sequence[UnitType], sprites: Sprites,
                        drawn: dict[str, list[tuple[str, Image.Image]]], notes: str) -> BuiltSet:
    """``out/wesnoth_portraits``: each unit's portraits (sketch) and sprites (photo)."""
    name = "wesnoth_portraits"
    rows = []
    with built_folder(out / name) as tmp:
        for unit in units:
            faces = drawn[unit.id]
            written = _write_images(tmp / "images", safe_name(unit.id),
                                    [*faces, *sprites.images[unit.id]])
            rows += [[p, "sketch" if i < len(faces) else "photo"] for i, p in enumerate(written)]
        write_csv(tmp / "images" / "annotations.csv", ["path", "domain"], sorted(rows))
    sketches = sum(1 for _, domain in rows if domain == "sketch")
    return BuiltSet(
        name=name, source="folder",
        options={"root": str(out / name / "images"),
                 "annotations_csv": str(out / name / "images" / "annotations.csv")},
        split=dict(SPLIT),
        protocol={"name": "cross_domain", "precision_ks": list(PRECISION_KS), "flip": True},
        counts={"classes": len(units), "images": len(rows), "sketches": sketches,
                "photos": len(rows) - sketches},
        notes=notes)


# -- build -----------------------------------------------------------------------------------


def build(source: Path, out: Path, *, quick: bool = False, **options: Any) -> list[BuiltSet]:
    """Builds ``wesnoth_units`` and ``wesnoth_portraits`` from ``source`` (``data/core`` of
    the package) under ``out``. Options: ``min_images`` (8), ``min_sprites`` (4),
    ``near_duplicate`` (0.02), ``max_units`` (quick: 40, else all)."""
    allowed = {"min_images", "min_sprites", "near_duplicate", "max_units"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"wesnoth: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    min_images = int(options.get("min_images", MIN_IMAGES))
    min_sprites = int(options.get("min_sprites", MIN_SPRITES))
    near_duplicate = float(options.get("near_duplicate", NEAR_DUPLICATE))
    max_units = options.get("max_units", QUICK_UNITS if quick else None)
    source, out = Path(source), Path(out)
    images = source / "images"
    all_units = read_units(source)
    sprites = choose_sprites(all_units, images, near_duplicate)
    if not sprites.images:
        raise DataError(f"wesnoth: {images / 'units'} has no sprite of any unit type in "
                        f"{source / 'units'}")
    count = {unit.id: len(sprites.images.get(unit.id, [])) for unit in all_units}
    rules = (f"middle frame of each animation; dropped {sprites.frames_dropped} other frames, "
             f"{sprites.near_duplicates} near-duplicates (<{near_duplicate:g} mean gray "
             f"difference at {THUMB_SIDE}px), {sprites.repeats} repeats of another unit's sprite")
    recoloured = sum(1 for unit in all_units if unit.recoloured or not count[unit.id])
    built = []
    for_units = [u for u in all_units if count[u.id] >= min_images]
    if for_units:
        kept = cap_units(for_units, max_units)
        notes = (f"{len(kept)} of {len(all_units)} unit types: {rules}; left out "
                 f"{recoloured} recoloured/sprite-less, {len(all_units) - recoloured - len(for_units)} "
                 f"with < {min_images} sprites"
                 + (f", {len(for_units) - len(kept)} beyond max_units={max_units}" if len(kept) < len(for_units) else ""))
        built.append(write_units_set(out, kept, sprites, notes))
    candidates = [u for u in all_units if count[u.id] >= min_sprites]
    drawn = portraits(candidates, all_units, images)
    for_portraits = [u for u in candidates if u.id in drawn]
    if for_portraits:
        kept = cap_units(for_portraits, max_units)
        notes = (f"{len(kept)} of {len(all_units)} unit types: {rules}; left out units with "
                 f"< {min_sprites} sprites ({len(all_units) - len(candidates)}), without a "
                 f"readable portrait of their own ({len(candidates) - len(for_portraits)})"
                 + (f", {len(for_portraits) - len(kept)} beyond max_units={max_units}" if len(kept) < len(for_portraits) else ""))
        built.append(write_portraits_set(out, kept, sprites, drawn, notes))
    if not built:
        raise DataError(f"wesnoth: no unit type of {source} has {min(min_images, min_sprites)} "
                        "sprites")
    return built
