"""The retrieval grid of a run, drawn with matplotlib: one row per query (first column) and
its top results beside it, each tile framed by whether the result is relevant, captioned with
its score and class name, and a legend saying what the frames and numbers mean.

The figure is laid out in pixels (one data unit per pixel of the PNG), so that a tile is
``cell`` pixels whatever the number of rows; captions are cut to a tile's width by a character
count and clipped to their tile, so that a long class name never runs into its neighbour.
matplotlib's bundled font: nothing is downloaded."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from matplotlib import style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import Bbox, TransformedBbox

from dml.data.images import open_rgb
from dml.report.drawing import STYLE, png

RGB = tuple[int, int, int]
QUERY_FRAME, SAME_CLASS, OTHER_CLASS = (40, 40, 40), (0, 170, 0), (220, 0, 0)
PAD = 4  # pixels between tiles and around the grid
DPI = 128  # a power of two: a size in pixels over DPI, times DPI, is that size exactly
FONT_PX = 9  # the captions' and the legend's text, in pixels
LINE_PX = 12  # from one caption line to the next
CHAR_PX = 5.5  # about the mean width of a character at FONT_PX: how many fit a tile's width


def _colour(rgb: RGB) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _wrap(text: str, chars: int, max_lines: int) -> list[str]:
    """``text`` in at most ``max_lines`` lines of at most ``chars`` characters, broken after
    ``-``, ``_``, ``/`` or a space (class names such as ``circle-red-solid-ar100``), a longer
    piece cut anywhere; the last line ends in ``…`` where the rest is left out."""
    lines: list[str] = []
    for token in re.split(r"(?<=[-_/ ])", text):
        if lines and len(lines[-1] + token) <= chars:
            lines[-1] += token
        else:
            lines += [token[i:i + chars] for i in range(0, len(token), chars)] or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:chars - 1] + "…"
    return lines


def _captions(names: Sequence[str] | None, scores: Sequence[float] | None, chars: int,
              max_lines: int) -> list[list[str]]:
    """Caption lines of one grid row: each tile's score (``query`` for the first tile), so
    that the scores of a row line up, then its class name (:func:`_wrap`)."""
    count = len(names) if names is not None else (len(scores) + 1 if scores is not None else 0)
    out = []
    for c in range(count):
        lines = [] if scores is None else ["query" if c == 0 else f"{float(scores[c - 1]):.3f}"]
        if names is not None:
            lines += _wrap(str(names[c]), chars, max_lines)
        out.append(lines)
    return out


def _legend(fig: Figure, score_name: str | None, width: int) -> Legend:
    """The legend of the frames (and of the numbers where ``score_name`` is given), its items
    in as many columns as fit ``width`` pixels, one at least."""
    items = [(QUERY_FRAME, "first column: the query"), (SAME_CLASS, "relevant: same class (or a shared one)"),
             (OTHER_CLASS, "not relevant")]
    handles = [Patch(facecolor="none", edgecolor=_colour(rgb), linewidth=2 * 72 / DPI, label=text)
               for rgb, text in items]
    if score_name:
        handles.append(Patch(visible=False, label=f"number: {score_name}"))
    renderer = FigureCanvasAgg(fig).get_renderer()
    for ncols in range(len(handles), 0, -1):
        legend = fig.legend(handles=handles, ncols=ncols, loc="upper left", frameon=False,
                            fontsize=FONT_PX * 72 / DPI, handlelength=1.0, handleheight=1.0,
                            handletextpad=0.5, columnspacing=1.5, labelspacing=0.3, borderpad=0,
                            borderaxespad=0)
        if ncols == 1 or legend.get_window_extent(renderer).width <= width - 2 * PAD:
            break
        legend.remove()
    return legend


def _tile(ax: Axes, data: bytes, left: int, top: int, cell: int, frame: RGB, border: int) -> None:
    """An encoded image as a ``cell`` x ``cell`` tile whose top left corner is at (``left``,
    ``top``) pixels from the figure's top left, framed inside by ``border`` pixels of
    ``frame``: small images are enlarged pixel for pixel (sharp), large ones reduced smoothly."""
    image = open_rgb(data)
    ax.imshow(np.asarray(image), extent=(left, left + cell, top - cell, top), aspect="auto",
              interpolation="nearest" if max(image.size) < cell else "antialiased")
    ax.add_patch(Rectangle((left + border / 2, top - cell + border / 2), cell - border, cell - border,
                           fill=False, edgecolor=_colour(frame), linewidth=border * 72 / DPI, snap=False))


def retrieval_grid(
    query_images: Sequence[bytes],
    result_images: Sequence[Sequence[bytes]],
    correct: np.ndarray,
    *,
    query_names: Sequence[str] | None = None,
    result_names: Sequence[Sequence[str]] | None = None,
    scores: np.ndarray | None = None,
    score_name: str = "similarity to the query",
    cell: int = 80,
    border: int = 3,
    name_lines: int = 3,
) -> bytes:
    """The grid as PNG bytes: one row per query (first column), its top results beside it; a
    green frame marks a result of the query's class, a red one a wrong result. Under each
    tile its class name (``query_names``, ``result_names``, wrapped to ``name_lines`` lines)
    and each result's score (``scores[r, c]``, described in the legend as ``score_name``); a
    legend at the bottom says what the frames mean (a grid narrower than the legend is widened
    to it). ``cell``: a tile's size in pixels."""
    if (query_names is None) != (result_names is None):
        raise ValueError("give both query_names and result_names, or neither")
    rows, cols = len(query_images), 1 + (len(result_images[0]) if result_images else 0)
    chars = max(1, int(cell / CHAR_PX))
    captions = [_captions(None if query_names is None else [query_names[r], *result_names[r]],
                          None if scores is None else scores[r], chars, name_lines)
                for r in range(rows)]
    strip = max((len(lines) for row in captions for lines in row), default=0) * LINE_PX
    step_y = cell + strip + PAD + (2 if strip else 0)
    width = cols * (cell + PAD) + PAD
    with style.context(STYLE):
        fig = Figure(figsize=(width / DPI, 1.0), dpi=DPI)
        legend = _legend(fig, score_name if scores is not None else None, width)
        extent = legend.get_window_extent(fig.canvas.get_renderer())
        width = max(width, math.ceil(extent.width) + 2 * PAD)  # a grid narrower than the legend widens
        legend_height = math.ceil(extent.height) + 2 * PAD
        height = rows * step_y + PAD + legend_height
        fig.set_size_inches(width / DPI, height / DPI)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        for r in range(rows):
            for c, data in enumerate([query_images[r], *result_images[r]]):
                left, top = PAD + c * (cell + PAD), height - PAD - r * step_y
                frame = QUERY_FRAME if c == 0 else SAME_CLASS if correct[r, c - 1] else OTHER_CLASS
                _tile(ax, data, left, top, cell, frame, 1 if c == 0 else border)
                if captions[r]:
                    clip = TransformedBbox(Bbox.from_bounds(left, top - cell - strip - 2, cell, strip + 2), ax.transData)
                    ax.text(left, top - cell - 2, "\n".join(captions[r][c]), ha="left", va="top",
                            fontsize=FONT_PX * 72 / DPI, linespacing=LINE_PX / FONT_PX, clip_box=clip, clip_on=True)
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        legend.set_bbox_to_anchor((PAD, legend_height - PAD), transform=ax.transData)
        return png(fig, DPI)
