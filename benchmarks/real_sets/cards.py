"""KDE playing-card decks (Debian ``kdegames-card-data-kf5``) as two image sets: single cards
(zero-shot card retrieval) and hands of cards (multi-object retrieval on unseen designs).

Source: ``/usr/share/carddecks``; a deck is a folder ``svg-<name>/`` holding one ``.svgz``
(gzipped SVG) with every card as an element: ``1_spade`` (ace), ``2_spade`` .. ``10_spade``,
``jack_spade``, ``queen_spade``, ``king_spade``, for the suits ``club``, ``diamond``,
``heart``, ``spade``.

Rendering: ``rsvg-convert`` (Debian ``librsvg2-bin``) exports one element by id
(``--export-id``). Its output page is the element's bounding box as librsvg computes it,
which for most decks includes invisible parts of the sheet (a 4024x443 page around a
159x206 card), so the card is cut out of the transparent render by its alpha (pixels with
alpha above ``ALPHA_CUT``), rendered at ``OVERSAMPLE`` times the target size (a zoom fixed
per deck from its first card's size) and scaled down to ``CARD_HEIGHT`` px high (Lanczos).
Cards keep their own aspect ratio (0.6-0.8) and their rounded corners; single cards are
stored on white. Renders run ``workers`` (default 2) rsvg-convert processes at a time.

Decks (families): a deck's family is its folder name up to the first hyphen after ``svg-``.
On the 4:22.12.3 package (Debian 12) the 12 decks used are ancient-egyptians, dondorf,
gm-paris, jolly-royal, nicu-ornamental, nicu-white, oxygen, oxygen-air, oxygen-white,
penguins, standard, tigullio-international: 9 families, as the nicu decks (the same
drawings on a cream or a white card) and the three oxygen decks (the same silhouettes on
light or on dark red/black cards) each form one family. Left out (``EXCLUDED``, by looking
at renders):

- ``future``: landscape "Future Simple" tiles with hexadecimal rank digits and a bar code,
  no suit symbol and no pips: neither rank nor suit is drawn as on a playing card;
- ``xskat-german``: German suits (acorns, leaves, hearts, bells) and Unter/Ober courts, so
  the French suit and court labels of its element ids do not describe the pictures;
- ``konqi-modern``, ``xskat-french``: each card is an embedded 72x96 / 72x112 bitmap, not a
  drawing; rsvg-convert cannot export an ``<image>`` element ("has no dimensions").

Any other deck whose ``.svgz`` lacks one of the card ids, or one of whose cards does not
render, is left out too and named, with the reason, in the sets' notes.

``max_cards`` (quick: ``QUICK_MAX_CARDS`` = 26; full: all 52) renders only that many cards of
every deck, the same cards in each: ranks take turns (ace .. king, then again) and each rank
gets its suits in a seeded order, so 26 cards are two suits of every rank.

Set ``cards`` (self-retrieval, zero-shot: the card classes are split at random into train
and test classes): fine class ``<rank>_<suit>`` (``ace_spade``, ``10_heart``,
``king_club``; 52 classes, one image per deck: 12 per class), scale ``suit`` (club, diamond,
heart, spade). Attributes (0/1, functions of the card; the suit is a scale, not an
attribute): ``red`` (hearts, diamonds: 26 classes), ``face`` (jack, queen, king: 12),
``ace`` (4), ``number`` (2-10: 36), ``broadway`` (10, jack, queen, king, ace: 20), ``low``
(2-5: 16), ``many_pips`` (7-10: 16), ``even_pips`` (2, 4, 6, 8, 10: 20), ``odd_pips`` (ace,
3, 5, 7, 9: a pip on the card's centre: 20). An image whose pixels repeat another's is left
out (none on the package).

Set ``card_hands`` (multi-label retrieval with counts, a COCO tree the ``coco`` source reads:
``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``): ``hands``
images (default 600, quick 240) of 2-4 distinct cards of one deck on a table colour (one of
``TABLES``), each card with a soft shadow. A hand is either a fan (cards turned about a
pivot below them, 12-20 degrees apart, the whole fan tilted by up to 12 degrees) or a row
(cards side by side, 45-85% of a card width apart, each turned by up to 6 degrees); in both
each card lies on the one to its left, so every card's top-left rank index stays visible
(on the oxygen decks, ``INDEX_TOP_RIGHT``, whose index is in the top-right corner, each card
lies on the one to its right). Cards lie left to right in the order they were drawn (not
sorted). The composition is scaled to at most ``MAX_SIDE`` px (cards then about 90-160 px
high). The label is the multiset of ranks: 13 categories (``ace`` .. ``king``, ids 1-13),
one annotation per card with its category, ``bbox`` and ``segmentation`` of the whole turned
card (occluded parts included) and ``area`` its quadrilateral's area; two cards of one rank
(a pair, about one hand in five) make a count of 2. Extra keys the ``coco`` source does not
read: ``deck`` and ``layout`` on each image, ``card`` (``king_heart``) on each annotation.
Test hands (the val file, half the hands, rounded down) come only from ``test_families``
deck families (default 4; at most half the families) drawn with the seed, train hands only
from the others, so retrieval is tested on card designs never trained on (seed 0: test
families jolly, oxygen, penguins, standard; train families ancient, dondorf, gm, nicu,
tigullio); a hand's family is drawn uniformly among its side's families, then its deck
among the family's. Validation folds deal the train hands by image, so they hold train
designs only. Split: the files' train/test (method "given"), a quarter of the test hands as
queries and the rest as the gallery.

Everything is deterministic in ``seed`` (card choice, hands, families); renders do not
depend on the order of the worker processes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from dml.errors import DataError

from .common import MAX_SIDE, BuiltSet, Deduplicator, built_folder, save_png, write_csv

PACKAGE = "kdegames-card-data-kf5"
DEFAULT_SOURCE = Path("/usr/share/carddecks")
RSVG = "rsvg-convert"

#: Height of a stored single card, px.
CARD_HEIGHT = 160
#: Cards are rendered this many times larger than stored, then scaled down.
OVERSAMPLE = 1.5
#: A pixel belongs to the card when its alpha (0-255) is above this.
ALPHA_CUT = 8
#: Hands of a full and a quick build.
HANDS = 600
QUICK_HANDS = 240
#: Cards rendered per deck by a quick build.
QUICK_MAX_CARDS = 26
#: Deck families whose hands are the test hands.
TEST_FAMILIES = 4
#: rsvg-convert processes at a time.
WORKERS = 2
#: Seconds one rsvg-convert call may take.
RENDER_TIMEOUT = 120
HAND_SIZES = (2, 3, 4)

RANKS = ("ace", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king")
SUITS = ("club", "diamond", "heart", "spade")
#: Decks left out by name, with the reason (module docstring).
EXCLUDED = {
    "future": "no suit symbols or pips, hexadecimal rank digits",
    "xskat-german": "German suits and Unter/Ober courts",
    "konqi-modern": "cards are embedded bitmaps that rsvg-convert cannot export",
    "xskat-french": "cards are embedded bitmaps that rsvg-convert cannot export",
}
#: Decks that print the rank index in a card's top-right corner (the others: top-left).
INDEX_TOP_RIGHT = frozenset({"oxygen", "oxygen-air", "oxygen-white"})
#: Table colours behind a hand (felt greens, woods, slate, linen).
TABLES = ((39, 110, 70), (24, 74, 52), (120, 84, 54), (176, 138, 96), (82, 92, 112),
          (214, 204, 184))

CARDS_SPLIT = {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0}
CARDS_PROTOCOL = {"name": "self_retrieval"}
HANDS_SPLIT = {"method": "random", "test_fraction": 0.5, "query_fraction": 0.25,
               "num_folds": 3, "seed": 0}
HANDS_PROTOCOL = {"name": "multilabel", "map_ks": [100], "ndcg_ks": [10, 100]}

Card = tuple[str, str]  # (rank, suit)

_ID = re.compile(r'\bid="([A-Za-z0-9_]+)"')


def _rank_value(rank: str) -> int:
    return RANKS.index(rank) + 1


ATTRIBUTES: dict[str, Any] = {
    "red": lambda rank, suit: suit in ("diamond", "heart"),
    "face": lambda rank, suit: rank in ("jack", "queen", "king"),
    "ace": lambda rank, suit: rank == "ace",
    "number": lambda rank, suit: 2 <= _rank_value(rank) <= 10,
    "broadway": lambda rank, suit: rank in ("10", "jack", "queen", "king", "ace"),
    "low": lambda rank, suit: 2 <= _rank_value(rank) <= 5,
    "many_pips": lambda rank, suit: 7 <= _rank_value(rank) <= 10,
    "even_pips": lambda rank, suit: _rank_value(rank) in (2, 4, 6, 8, 10),
    "odd_pips": lambda rank, suit: _rank_value(rank) in (1, 3, 5, 7, 9),
}


# -- decks and cards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Deck:
    """One deck of the package: its name (folder without ``svg-``), file and family."""

    name: str
    svgz: Path
    family: str


def card_id(card: Card) -> str:
    """The card's element id in a deck's SVG: ``1_spade``, ``10_heart``, ``king_club``."""
    rank, suit = card
    return f"{'1' if rank == 'ace' else rank}_{suit}"


def class_name(card: Card) -> str:
    """The card's class (folder) name: ``ace_spade``, ``10_heart``, ``king_club``."""
    return f"{card[0]}_{card[1]}"


def chosen_cards(max_cards: int | None, seed: int) -> list[Card]:
    """The cards rendered of every deck: all 52 in rank-major order, or ``max_cards`` of them
    with the ranks taking turns and each rank's suits in a seeded order."""
    if max_cards is None or max_cards >= len(RANKS) * len(SUITS):
        return [(rank, suit) for rank in RANKS for suit in SUITS]
    if max_cards < 1:
        raise DataError(f"cards: max_cards {max_cards} must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    orders = [[SUITS[i] for i in rng.permutation(len(SUITS))] for _ in RANKS]
    turns = [(rank, orders[r][turn]) for turn in range(len(SUITS))
             for r, rank in enumerate(RANKS)]
    picked = set(turns[:max_cards])
    return [(rank, suit) for rank in RANKS for suit in SUITS if (rank, suit) in picked]


def _family(name: str) -> str:
    return name.split("-", 1)[0]


def find_decks(source: Path) -> list[Deck]:
    """Every ``svg-<name>/`` deck of ``source`` with a ``.svgz`` (the first by name), sorted;
    a DataError naming ``source`` when there is none."""
    decks: list[Deck] = []
    if source.is_dir():
        for folder in sorted(source.glob("svg-*")):
            files = sorted(folder.glob("*.svgz")) if folder.is_dir() else []
            if files:
                name = folder.name[len("svg-"):]
                decks.append(Deck(name=name, svgz=files[0], family=_family(name)))
    if not decks:
        raise DataError(f"cards: {source} has no svg-*/ deck with a .svgz file "
                        f"(is {PACKAGE} installed?)")
    return decks


def missing_ids(deck: Deck, cards: Sequence[Card]) -> list[str]:
    """The ids of ``cards`` that the deck's SVG lacks (all of them when it cannot be read)."""
    try:
        with gzip.open(deck.svgz, "rt", encoding="utf-8", errors="replace") as handle:
            ids = set(_ID.findall(handle.read()))
    except (OSError, EOFError):
        ids = set()
    return [card_id(card) for card in cards if card_id(card) not in ids]


# -- rendering ---------------------------------------------------------------------------------


def check_renderer() -> str:
    """The path of ``RSVG``; a DataError naming it when it is not installed."""
    path = shutil.which(RSVG)
    if path is None:
        raise DataError(f"cards: {RSVG} not found on PATH (apt-get install librsvg2-bin)")
    return path


def rsvg_png(svgz: Path, element_id: str, zoom: float = 1.0) -> Image.Image:
    """The element ``element_id`` of ``svgz`` rendered by rsvg-convert at ``zoom``, RGBA on
    transparent; a DataError with rsvg-convert's first line when it fails."""
    command = [RSVG, "--export-id", element_id, "--zoom", f"{zoom:.6f}", str(svgz)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=RENDER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"cards: {RSVG} could not render {element_id} of {svgz}: {exc}") from None
    if done.returncode != 0 or not done.stdout:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
        raise DataError(f"cards: {RSVG} could not render {element_id} of {svgz}: {lines[0]}")
    with Image.open(io.BytesIO(done.stdout)) as image:
        return image.convert("RGBA")


def _ink_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    return image.getchannel("A").point(lambda a: 255 if a > ALPHA_CUT else 0).getbbox()


def deck_zoom(svgz: Path, element_id: str, height: int = CARD_HEIGHT) -> float:
    """The zoom at which the card ``element_id`` is ``OVERSAMPLE * height`` px high."""
    box = _ink_box(rsvg_png(svgz, element_id))
    if box is None:
        raise DataError(f"cards: {element_id} of {svgz} renders empty")
    return OVERSAMPLE * height / (box[3] - box[1])


def render_card(svgz: Path, element_id: str, height: int = CARD_HEIGHT,
                zoom: float | None = None) -> Image.Image:
    """The card ``element_id`` of ``svgz``, cut out by its alpha and ``height`` px high,
    RGBA (transparent around its rounded corners). ``zoom``: the render's zoom (default:
    :func:`deck_zoom` of this card)."""
    zoom = deck_zoom(svgz, element_id, height) if zoom is None else zoom
    image = rsvg_png(svgz, element_id, zoom)
    box = _ink_box(image)
    if box is None:
        raise DataError(f"cards: {element_id} of {svgz} renders empty")
    card = image.crop(box)
    width = max(1, round(card.width * height / card.height))
    return card.resize((width, height), Image.Resampling.LANCZOS)


def on_white(card: Image.Image) -> Image.Image:
    """An RGBA card composited on white, RGB."""
    background = Image.new("RGBA", card.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, card).convert("RGB")


def _render_deck(deck: Deck, cards: Sequence[Card], pool: ThreadPoolExecutor
                 ) -> dict[Card, Image.Image]:
    zoom = deck_zoom(deck.svgz, card_id(cards[0]))
    jobs = {card: pool.submit(render_card, deck.svgz, card_id(card), CARD_HEIGHT, zoom)
            for card in cards}
    return {card: job.result() for card, job in jobs.items()}


def render_decks(decks: Sequence[Deck], cards: Sequence[Card], workers: int = WORKERS
                 ) -> tuple[dict[str, dict[Card, Image.Image]], dict[str, str]]:
    """(deck name -> card -> RGBA card, deck name -> why it was left out) of ``decks``: a
    deck in ``EXCLUDED``, lacking a card id, or with a card that does not render is left
    out. ``workers`` rsvg-convert processes run at a time."""
    renders: dict[str, dict[Card, Image.Image]] = {}
    left_out: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for deck in decks:
            if deck.name in EXCLUDED:
                left_out[deck.name] = EXCLUDED[deck.name]
                continue
            missing = missing_ids(deck, cards)
            if missing:
                left_out[deck.name] = f"no element {', '.join(missing[:3])}" + (
                    f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                continue
            try:
                renders[deck.name] = _render_deck(deck, cards, pool)
            except DataError as exc:
                left_out[deck.name] = str(exc).removeprefix("cards: ")
    return renders, left_out


# -- the cards set -----------------------------------------------------------------------------


def card_row(path: str, card: Card) -> list[Any]:
    """The annotations CSV row of one card image: path, suit, the attributes."""
    rank, suit = card
    return [path, suit, *(int(bool(test(rank, suit))) for test in ATTRIBUTES.values())]


def write_cards(folder: Path, final: Path, decks: Sequence[Deck],
                renders: dict[str, dict[Card, Image.Image]], cards: Sequence[Card],
                notes: str) -> BuiltSet:
    """The ``cards`` set in ``folder`` (to become ``final``): images/<class>/<deck>.png and
    images/annotations.csv (inside the root, so that DVC's watch on the root covers it)."""
    seen = Deduplicator()
    rows: list[list[Any]] = []
    repeats = 0
    for card in cards:
        for deck in decks:
            image = on_white(renders[deck.name][card])
            if seen.seen(image):
                repeats += 1
                continue
            path = f"{class_name(card)}/{deck.name}.png"
            save_png(image, folder / "images" / path)
            rows.append(card_row(path, card))
    header = ["path", "label_suit", *(f"attr_{name}" for name in ATTRIBUTES)]
    write_csv(folder / "images" / "annotations.csv", header, rows)
    extra = f"; {repeats} repeated image(s) left out" if repeats else ""
    return BuiltSet(
        name="cards", source="folder",
        options={"root": str(final / "images"), "annotations_csv": str(final / "images" / "annotations.csv")},
        split=dict(CARDS_SPLIT), protocol=dict(CARDS_PROTOCOL), scales=["fine", "suit"],
        attributes=list(ATTRIBUTES),
        counts={"classes": len({class_name(c) for c in cards}), "images": len(rows),
                "decks": len(decks), "families": len({d.family for d in decks})},
        notes=notes + extra)


# -- hands -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hand:
    """One dealt hand: its number, side (train / val), deck and cards (bottom to top)."""

    number: int
    side: str
    deck: str
    cards: tuple[Card, ...]
    layout: str
    table: tuple[int, int, int]
    seed: tuple[int, ...]


def pick_test_families(families: Sequence[str], wanted: int, seed: int) -> list[str]:
    """The seeded choice of ``min(wanted, len(families) // 2)`` test families, sorted; a
    DataError when there are fewer than 2 families."""
    families = sorted(set(families))
    if len(families) < 2:
        raise DataError(f"cards: card_hands needs decks of at least 2 families, there are "
                        f"{len(families)} ({', '.join(families) or 'none'})")
    count = max(1, min(int(wanted), len(families) // 2))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    return sorted(families[i] for i in rng.choice(len(families), count, replace=False))


def deal_hands(decks: Sequence[Deck], cards: Sequence[Card], hands: int, seed: int,
               test: Sequence[str]) -> list[Hand]:
    """``hands`` hands: the first ``hands - hands // 2`` train hands from the families not in
    ``test``, then ``hands // 2`` val hands from the ``test`` families."""
    sides = {"train": sorted({d.family for d in decks} - set(test)), "val": sorted(test)}
    dealt: list[Hand] = []
    n_val = hands // 2
    for number in range(hands):
        side = "train" if number < hands - n_val else "val"
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, number]))
        family = sides[side][int(rng.integers(len(sides[side])))]
        members = [d for d in decks if d.family == family]
        deck = members[int(rng.integers(len(members)))]
        size = int(rng.choice(HAND_SIZES))
        picked = rng.choice(len(cards), min(size, len(cards)), replace=False)
        dealt.append(Hand(number=number + 1, side=side, deck=deck.name,
                          cards=tuple(cards[int(i)] for i in picked),
                          layout=str(rng.choice(["fan", "row"])),
                          table=TABLES[int(rng.integers(len(TABLES)))],
                          seed=(int(seed), 3, number)))
    return dealt


def _turn(point: tuple[float, float], degrees: float) -> tuple[float, float]:
    """``point`` turned clockwise on screen (y down) by ``degrees`` about the origin."""
    a = math.radians(degrees)
    x, y = point
    return x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)


def hand_layout(sizes: Sequence[tuple[int, int]], layout: str, rng: np.random.Generator
                ) -> list[tuple[tuple[float, float], float]]:
    """(centre, clockwise turn in degrees) of each card of sizes (w, h), left to right."""
    height = max(h for _, h in sizes)
    width = max(w for w, _ in sizes)
    n = len(sizes)
    if layout == "fan":
        step = float(rng.uniform(12, 20))
        tilt = float(rng.uniform(-12, 12))
        below = float(rng.uniform(0.1, 0.5)) * height  # pivot to the cards' bottom edge
        placed = []
        for i in range(n):
            angle = tilt + (i - (n - 1) / 2) * step
            placed.append((_turn((0.0, -(below + height / 2)), angle), angle))
        return placed
    gap = float(rng.uniform(0.45, 0.85)) * width
    return [((i * gap, float(rng.uniform(-0.08, 0.08)) * height), float(rng.uniform(-6, 6)))
            for i in range(n)]


def _corners(centre: tuple[float, float], size: tuple[int, int], angle: float
             ) -> list[tuple[float, float]]:
    w, h = size
    cx, cy = centre
    return [(cx + dx, cy + dy) for dx, dy in
            (_turn(p, angle) for p in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2),
                                       (-w / 2, h / 2)))]


def _shadow(card: Image.Image) -> Image.Image:
    alpha = card.getchannel("A").point(lambda a: a * 0.4)
    shadow = Image.new("RGBA", card.size, (0, 0, 0, 0))
    shadow.putalpha(alpha)
    return shadow.filter(ImageFilter.GaussianBlur(2))


def compose_hand(images: Sequence[Image.Image], layout: str, table: tuple[int, int, int],
                 rng: np.random.Generator, index_right: bool = False
                 ) -> tuple[Image.Image, list[list[float]]]:
    """The hand's picture (RGB, longest side at most ``MAX_SIDE``) and each card's turned
    quadrilateral ``[x1, y1, .., x4, y4]`` in it, cards placed left to right and each drawn
    over its left neighbour (``index_right``: over its right neighbour)."""
    places = hand_layout([im.size for im in images], layout, rng)
    quads = [_corners(centre, im.size, angle) for im, (centre, angle) in zip(images, places)]
    margin = float(rng.uniform(0.06, 0.15)) * max(im.height for im in images)
    left = min(x for quad in quads for x, _ in quad) - margin
    top = min(y for quad in quads for _, y in quad) - margin
    right = max(x for quad in quads for x, _ in quad) + margin
    bottom = max(y for quad in quads for _, y in quad) + margin
    canvas = Image.new("RGBA", (math.ceil(right - left), math.ceil(bottom - top)), (*table, 255))
    order = list(zip(images, places))
    for image, (centre, angle) in (order[::-1] if index_right else order):
        turned = image.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True)
        x = round(centre[0] - left - turned.width / 2)
        y = round(centre[1] - top - turned.height / 2)
        shadow = _shadow(turned)
        canvas.alpha_composite(shadow, (x + 2, y + 3))
        canvas.alpha_composite(turned, (x, y))
    scale = min(1.0, MAX_SIDE / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((max(1, round(canvas.width * scale)),
                                max(1, round(canvas.height * scale))), Image.Resampling.LANCZOS)
    polygons = [[round(v, 2) for x, y in quad for v in ((x - left) * scale, (y - top) * scale)]
                for quad in quads]
    return canvas.convert("RGB"), polygons


def _annotation(ident: int, image_id: int, card: Card, polygon: list[float]) -> dict[str, Any]:
    xs, ys = polygon[0::2], polygon[1::2]
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
    return {"id": ident, "image_id": image_id, "category_id": RANKS.index(card[0]) + 1,
            "iscrowd": 0, "bbox": [round(min(xs), 2), round(min(ys), 2),
                                   round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
            "area": round(area, 2), "segmentation": [polygon], "card": class_name(card)}


def categories() -> list[dict[str, Any]]:
    """The 13 rank categories, ids 1 (ace) to 13 (king)."""
    return [{"id": i + 1, "name": rank, "supercategory": "card"} for i, rank in enumerate(RANKS)]


def write_hands(folder: Path, final: Path, hands: Sequence[Hand],
                renders: dict[str, dict[Card, Image.Image]], test: Sequence[str],
                decks: Sequence[Deck], notes: str) -> BuiltSet:
    """The ``card_hands`` COCO tree in ``folder`` (to become ``final``)."""
    files: dict[str, dict[str, list[dict[str, Any]]]] = {
        side: {"images": [], "annotations": []} for side in ("train", "val")}
    annotation_id = 0
    for hand in hands:
        rng = np.random.default_rng(np.random.SeedSequence(list(hand.seed)))
        images = [renders[hand.deck][card] for card in hand.cards]
        picture, polygons = compose_hand(images, hand.layout, hand.table, rng,
                                         index_right=hand.deck in INDEX_TOP_RIGHT)
        file_name = f"{hand.number:06d}.png"
        save_png(picture, folder / f"{hand.side}2017" / file_name)
        entry = files[hand.side]
        entry["images"].append({"id": hand.number, "file_name": file_name,
                                "width": picture.width, "height": picture.height,
                                "deck": hand.deck, "layout": hand.layout})
        for card, polygon in zip(hand.cards, polygons):
            annotation_id += 1
            entry["annotations"].append(_annotation(annotation_id, hand.number, card, polygon))
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for side, entry in files.items():
        (folder / f"{side}2017").mkdir(parents=True, exist_ok=True)
        payload = {"info": {"description": f"hands of playing cards from {PACKAGE}",
                            "version": "1.0"},
                   "licenses": [], "images": entry["images"],
                   "annotations": entry["annotations"], "categories": categories()}
        with open(folder / "annotations" / f"instances_{side}2017.json", "w",
                  encoding="utf-8") as handle:
            json.dump(payload, handle)
    families = {d.family for d in decks if d.name in {h.deck for h in hands}}
    sizes = Counter(len(h.cards) for h in hands)
    return BuiltSet(
        name="card_hands", source="coco", options={"root": str(final)},
        split=dict(HANDS_SPLIT), protocol=dict(HANDS_PROTOCOL), scales=["fine"],
        counts={"images": len(hands), "train_images": len(files["train"]["images"]),
                "test_images": len(files["val"]["images"]), "categories": len(RANKS),
                "cards": annotation_id, "decks": len({h.deck for h in hands}),
                "families": len(families), "test_families": len(test),
                **{f"hands_of_{n}": sizes[n] for n in HAND_SIZES}},
        notes=f"test hands from unseen families {', '.join(test)}; " + notes)


# -- build -------------------------------------------------------------------------------------


def _options(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    known = {"hands": QUICK_HANDS if quick else HANDS, "seed": 0,
             "max_cards": QUICK_MAX_CARDS if quick else None,
             "test_families": TEST_FAMILIES, "workers": WORKERS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"cards: unknown option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(known)}")
    known.update(options)
    if int(known["hands"]) < 2:
        raise DataError(f"cards: hands {known['hands']} must be at least 2")
    return known


def _left_out_note(left_out: dict[str, str]) -> str:
    if not left_out:
        return "no deck left out"
    listed = "; ".join(f"{name} ({why})" for name, why in sorted(left_out.items()))
    return f"decks left out: {listed}"


def build(source: Path, out: Path, *, quick: bool = False, **options: Any) -> list[BuiltSet]:
    """Builds ``cards`` and ``card_hands`` (module docstring) under ``out``; options:
    ``hands``, ``seed``, ``max_cards``, ``test_families``, ``workers``."""
    source, out = Path(source), Path(out)
    opts = _options(quick, options)
    check_renderer()
    decks = find_decks(source)
    cards = chosen_cards(opts["max_cards"], int(opts["seed"]))
    renders, left_out = render_decks(decks, cards, int(opts["workers"]))
    used = [d for d in decks if d.name in renders]
    if len(used) < 2:
        raise DataError(f"cards: fewer than 2 usable decks under {source}; "
                        + _left_out_note(left_out))
    test = pick_test_families([d.family for d in used], int(opts["test_families"]),
                              int(opts["seed"]))
    hands = deal_hands(used, cards, int(opts["hands"]), int(opts["seed"]), test)
    notes = _left_out_note(left_out)
    with contextlib.ExitStack() as stack:
        cards_folder = stack.enter_context(built_folder(out / "cards"))
        hands_folder = stack.enter_context(built_folder(out / "card_hands"))
        built = [write_cards(cards_folder, out / "cards", used, renders, cards, notes),
                 write_hands(hands_folder, out / "card_hands", hands, renders, test, used,
                             notes)]
    return built
