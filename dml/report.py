"""Comparison tables over experiments and retrieval grids for looking at results."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

FLOAT_COLUMNS = (
    ("R@1", "recall@1"),
    ("R@2", "recall@2"),
    ("R@4", "recall@4"),
    ("R@8", "recall@8"),
    ("MAP@R", "map@r"),
    ("RP", "r_precision"),
    ("mAP", "map"),
    ("NMI", "nmi"),
)
QUANTIZED_COLUMNS = (("R@1", "recall@1"), ("MAP@R", "map@r"), ("RP", "r_precision"), ("mAP", "map"))


def _fmt(value: object) -> str:
    return f"{100 * value:.1f}" if isinstance(value, float) else "–"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_table(results: Mapping[str, Mapping]) -> str:
    """Markdown: one row per experiment (float figures, then each quantized index's), then
    one row per experiment and index with every retrieval figure. Percentages, 1 decimal.
    """
    names = sorted(results)
    indexes = sorted({q for name in names for q in results[name].get("quantized", {})})
    header = ["experiment", "loss", *[c for c, _ in FLOAT_COLUMNS], "B/vec"]
    header += [f"{q} R@1 / MAP@R (B/vec)" for q in indexes]
    rows = []
    for name in names:
        res = results[name]
        row = [name, res.get("loss", "?")]
        row += [_fmt(res["float"].get(key)) for _, key in FLOAT_COLUMNS]
        row.append(str(res.get("bytes_per_vector", "?")))
        for q in indexes:
            m = res.get("quantized", {}).get(q)
            row.append(
                f"{_fmt(m.get('recall@1'))} / {_fmt(m.get('map@r'))} ({m.get('bytes_per_vector')})"
                if m
                else "–"
            )
        rows.append(row)
    detail_rows = []
    for name in names:
        res = results[name]
        detail_rows.append([name, "float", *[_fmt(res["float"].get(k)) for _, k in QUANTIZED_COLUMNS], str(res.get("bytes_per_vector", "?"))])
        for q in indexes:
            m = res.get("quantized", {}).get(q)
            if m:
                detail_rows.append([name, q, *[_fmt(m.get(k)) for _, k in QUANTIZED_COLUMNS], str(m.get("bytes_per_vector"))])
    first = next(iter(results.values()), {})
    setup = (
        f"Backbone {first.get('backbone', '?')}, embedding size {first.get('embed_dim', '?')}, "
        f"image size {first.get('image_size', '?')}, split {first.get('split', '?')} "
        f"({first.get('queries', '?')} queries, class-disjoint from training). Figures in %."
    )
    return "\n\n".join(
        [
            "# Comparison",
            setup,
            _markdown(header, rows),
            "## Float vs quantized",
            _markdown(["experiment", "index", *[c for c, _ in QUANTIZED_COLUMNS], "B/vec"], detail_rows),
        ]
    ) + "\n"


def retrieval_grid(
    query_images: Sequence[bytes],
    result_images: Sequence[Sequence[bytes]],
    correct: np.ndarray,
    *,
    cell: int = 64,
    border: int = 3,
) -> Image.Image:
    """A grid: one row per query (first column), its top results beside it; a green border
    marks a result of the query's class, a red one a wrong result.
    """
    rows, cols = len(query_images), 1 + (len(result_images[0]) if result_images else 0)
    pad = 4
    grid = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r in range(rows):
        tiles = [query_images[r], *result_images[r]]
        for c, data in enumerate(tiles):
            x, y = pad + c * (cell + pad), pad + r * (cell + pad)
            tile = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell))
            grid.paste(tile, (x, y))
            if c == 0:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(40, 40, 40), width=1)
            else:
                colour = (0, 170, 0) if correct[r, c - 1] else (220, 0, 0)
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=border)
    return grid
