"""Stage report: the comparison over every experiment's metrics (per seed aggregated) as
markdown, and as one self-contained HTML page with its figures and retrieval grids (readable
offline: nothing is loaded from the internet)."""

from dml.pipeline.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

import json
from pathlib import Path

from dml.config import Params, load_params, resolve_run
from dml.errors import DataError
from dml.io import atomic_path, write_text_atomic
from dml.report.blocks import to_markdown
from dml.report.comparison import comparison_blocks
from dml.report.figures import Picture, load_curves, report_figures
from dml.report.page import PNG_SIGNATURE, report_html


def read_results(folder: Path, params: Params) -> dict[str, dict[int, dict]]:
    """Every experiment's metrics per seed: ``<folder>/<experiment>/seed<k>.json``."""
    results: dict[str, dict[int, dict]] = {}
    for name in params.experiments:
        results[name] = {}
        for seed in params.seeds:
            path = folder / name / f"seed{seed}.json"
            if not path.is_file():
                raise DataError(f"experiment {name!r}, seed {seed}: no metrics file {path}")
            results[name][seed] = json.loads(path.read_text())
    return results


def read_grids(folder: Path, results: dict[str, dict[int, dict]]) -> dict[str, bytes]:
    """Each run's retrieval grid (``<folder>/<experiment>/seed<k>/retrieval_grid.png``, written
    by the evaluate stage), by caption, in the tables' order."""
    grids = {}
    for name in sorted(results):
        for seed in sorted(results[name]):
            path = folder / name / f"seed{seed}" / "retrieval_grid.png"
            data = path.read_bytes() if path.is_file() else b""
            if not data.startswith(PNG_SIGNATURE):
                raise DataError(f"experiment {name!r}, seed {seed}: {path} is missing or not a PNG "
                                f"(the evaluate stage writes it)")
            grids[f"{name} · seed {seed}: queries (first column) and their top results"] = data
    return grids


def write_figures(folder: str, pictures: list[Picture]) -> None:
    """Replace the figures folder whole: no figure of a previous run is left behind."""
    with atomic_path(folder, directory=True) as tmp:
        for picture in pictures:
            (tmp / picture.file).write_bytes(picture.png)


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--metrics", default="metrics", help="folder of <experiment>/seed<k>.json")
    parser.add_argument("--dvclive", default="dvclive", help="folder of <experiment>/seed<k>/ training curves")
    parser.add_argument("--plots", default="plots", help="folder of <experiment>/seed<k>/retrieval_grid.png")
    parser.add_argument("--out", default="results/comparison.md")
    parser.add_argument("--figures", default="results/figures", help="folder of the PNG figures (replaced)")
    parser.add_argument("--html", default="results/report.html", help="the self-contained HTML report")
    args = parser.parse_args()
    params = load_params(args.params)
    results = read_results(Path(args.metrics), params)
    baselines = {n: e.baselines for n, e in params.experiments.items() if e.baselines}
    val_metrics = {name: resolve_run(params, name).train.val_metric for name in results}
    grids = read_grids(Path(args.plots), results)
    pictures = report_figures(results, load_curves(Path(args.dvclive), results, val_metrics), val_metrics)
    blocks = comparison_blocks(results, baselines)
    html = report_html(blocks, {p.caption: p.png for p in pictures}, grids)
    write_figures(args.figures, pictures)
    write_text_atomic(args.html, html)
    table = to_markdown(blocks)
    write_text_atomic(args.out, table)
    seeds = sum(len(runs) for runs in results.values())
    print(f"report: {len(results)} experiments, {seeds} runs -> {args.out}, {args.html} "
          f"({len(pictures)} figures; `dml report` prints the table)")


if __name__ == "__main__":
    run_stage(main)
