"""The retrieval grid (dml.report.grid): every tile framed by its relevance, captioned with
class names and scores, a legend; and the evaluate stage's grid of a run."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dml.evaluate.protocols import EvalRows, build_protocol
from dml.report.grid import OTHER_CLASS, PAD, SAME_CLASS, retrieval_grid

REPO = Path(__file__).resolve().parents[1]
QUERIES = [(200, 0, 0), (0, 0, 200)]  # each tile one colour: where a tile is drawn, its colour shows
RESULTS = [(0, 200, 0), (90, 90, 90)]


def tile(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png)).convert("RGB")


def draw(correct: np.ndarray, **kwargs) -> Image.Image:
    return image(retrieval_grid([tile(c) for c in QUERIES], [[tile(c) for c in RESULTS] for _ in QUERIES],
                                correct, cell=40, **kwargs))


def test_grid_captions_show_class_names_scores_and_a_legend():
    wrong = np.zeros((2, 2), dtype=bool)  # every result red: green can only be the legend's
    plain = draw(wrong)
    names = dict(query_names=["circle", "star"], result_names=[["circle", "ring"], ["star", "tee"]])
    named = draw(wrong, **names)
    scored = draw(wrong, scores=np.array([[0.9, 0.5], [0.8, 0.1]]), **names)
    assert named.width == plain.width
    assert named.height > plain.height and scored.height > named.height  # a caption strip per row grows
    other = draw(wrong, query_names=["square", "plus"], result_names=[["hexagon", "ring"], ["cross", "tee"]])
    assert other.size == named.size
    assert np.any(np.asarray(other) != np.asarray(named))  # the names are drawn
    pixels = np.asarray(plain).reshape(-1, 3)
    assert (pixels == SAME_CLASS).all(1).any() and (pixels == OTHER_CLASS).all(1).any()
    with pytest.raises(ValueError, match="both"):
        retrieval_grid([tile(c) for c in QUERIES], [[tile(c) for c in RESULTS] for _ in QUERIES], wrong,
                       query_names=["circle", "star"])


def test_every_tile_is_drawn_and_framed_by_its_relevance():
    cell = 40
    correct = np.array([[True, False], [False, True]])
    pixels = np.asarray(draw(correct))
    assert pixels.shape[1] >= 3 * (cell + PAD) + PAD  # wider where the legend needs it
    for r, query in enumerate(QUERIES):
        for c, colour in enumerate([query, *RESULTS]):
            left, top = PAD + c * (cell + PAD), PAD + r * (cell + PAD)
            assert tuple(pixels[top + cell // 2, left + cell // 2]) == colour, (r, c)  # the tile, enlarged
            if c:  # a result's frame, inside its tile
                frame = SAME_CLASS if correct[r, c - 1] else OTHER_CLASS
                assert tuple(pixels[top + cell // 2, left + 1]) == frame, (r, c)
                assert tuple(pixels[top + 1, left + cell // 2]) == frame, (r, c)
    assert np.any(pixels != np.asarray(draw(~correct)))  # relevant and irrelevant frames differ


def test_long_or_unbreakable_names_keep_the_grid_shape():
    wrong = np.zeros((2, 2), dtype=bool)
    short = draw(wrong, query_names=["a", "b"], result_names=[["c", "d"], ["e", "f"]])
    long = "circle-red-solid-ar100-" * 20
    for name in (long, "x" * 300, "Black_footed_Albatross/with a space"):
        drawn = draw(wrong, query_names=[name, "b"], result_names=[[name, "d"], ["e", name]])
        assert drawn.width == short.width
        assert drawn.height > short.height  # more lines, as many as name_lines allows
        assert drawn.size == draw(wrong, query_names=[name, name], result_names=[[name, name], [name, name]]).size


def load_stage(path: Path):
    spec = importlib.util.spec_from_file_location(f"stage_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_names_the_grid_tiles_by_class_and_scores_them(tiny_data, tmp_path):
    from dml.data.manifest import read_info
    from dml.evaluate.experiment import pair_scores

    evaluate = load_stage(REPO / "pipelines" / "evaluate.py")
    table = pq.read_table(tiny_data["manifest"], columns=["image_id", "label"]).to_pydict()
    n = len(table["image_id"])
    rows = EvalRows(ids=np.asarray(table["image_id"], dtype=object), split=np.full(n, "test", dtype=object),
                    role=np.full(n, "both", dtype=object), domain=np.full(n, "photo", dtype=object),
                    labels={"fine": np.asarray(table["label"])})
    names = evaluate.class_names(rows, tiny_data["manifest"])
    catalogue = read_info(tiny_data["manifest"]).class_names["fine"]
    assert names[table["image_id"][0]] == catalogue[table["label"][0]]
    assert evaluate.class_names(EvalRows(rows.ids, rows.split, rows.role, rows.domain), tiny_data["manifest"]) is None
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    ids = list(rows.ids)
    cosine = pair_scores(rows, vectors, "cosine", ids[:2], [ids[2:5], ids[5:8]])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert cosine.shape == (2, 3) and cosine[1, 0] == pytest.approx(float(unit[1] @ unit[5]), abs=1e-6)
    distance = pair_scores(rows, vectors, "euclidean", ids[:1], [ids[1:2]])
    assert distance[0, 0] == pytest.approx(float(np.linalg.norm(vectors[0] - vectors[1])), abs=1e-5)
    evaluate.write_grid(tmp_path / "grid.png", rows, vectors, build_protocol({"name": "self_retrieval"}),
                        tiny_data["manifest"], n_queries=3, top_k=4)
    with Image.open(tmp_path / "grid.png") as grid:
        cell = 80  # the default tile, plus its caption strip and the legend below the rows
        assert grid.width == 5 * (cell + 4) + 4 and grid.height > 3 * (cell + 4) + 3 * 2 * 10
