"""Stage ingest: a dataset's raw images (or the embedded synthetic set) -> its manifest."""

from dml.pipeline.stage import hand_over, print_notices, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params
from dml.data.ingest import ingest, unwatched_paths


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--dataset", required=True, help="a key of the datasets section")
    parser.add_argument("--out", required=True, help="the manifest to write")
    parser.add_argument("--report", required=True, help="the ingest report (JSON)")
    args = parser.parse_args()
    cfg = load_params(args.params).dataset(args.dataset)
    report = ingest(cfg.source, cfg.options, args.out, on_bad=cfg.on_bad,
                    short_side=cfg.images.short_side, background=cfg.images.background,
                    where=f"datasets.{args.dataset}", report_path=args.report)
    print(f"ingest {args.dataset}: {report.images} images "
          f"({', '.join(f'{k} {v}' for k, v in report.classes.items())} classes), "
          f"{report.resized} resized, {report.flattened} flattened, "
          f"{report.quarantined} quarantined -> {args.out}")
    key = f"datasets.{args.dataset}.options"
    print_notices([f"{key}.{name} lies outside {key}.root, which is all that DVC watches: move it "
                   f"into the root to re-ingest when it changes" for name in unwatched_paths(cfg.options)])


if __name__ == "__main__":
    run_stage(main)
