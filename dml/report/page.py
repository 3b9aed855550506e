"""The report as one self-contained HTML page: the comparison's blocks, then the figures and
the retrieval grids embedded as PNG data URIs, the style inline, so that it opens offline and
fetches nothing."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

from dml.report.blocks import Block, to_html

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def report_html(blocks: Sequence[Block], figures: Mapping[str, bytes], grids: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: the comparison tables, then the figures, then the
    retrieval grids (``caption -> PNG bytes``), images embedded as data URIs and the style
    inline, so that it shows everything offline."""
    parts = [to_html(blocks)]
    if figures:
        parts += ["<h2>Figures</h2>", *[_figure(c, png) for c, png in figures.items()]]
    if grids:
        parts += ["<h2>Retrieval grids</h2>", *[_figure(c, png) for c, png in grids.items()]]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>dml report</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
