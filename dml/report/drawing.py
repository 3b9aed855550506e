"""What the report's matplotlib drawings share: the style (matplotlib's defaults, so that a
user's matplotlibrc never changes the report, a few sizes smaller) and the figure as PNG
bytes, drawn offline on the Agg canvas (no pyplot, no display) without the matplotlib
version in the file, so that the same figure gives the same bytes.

matplotlib is imported by the drawing modules only (this one, :mod:`dml.report.figures` and
:mod:`dml.report.grid`): the tables and the page never pay for it."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = ["default", {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8,
                     "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "dml"}]


def png(fig: Figure, dpi: float) -> bytes:
    """The figure as PNG bytes at ``dpi``, without the matplotlib version in its metadata."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
