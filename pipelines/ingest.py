"""Stage ingest: raw images (or the embedded synthetic set) -> data/manifest.parquet."""

from dml.cli import run_stage, stage_parser
from dml.config import load_params
from dml.data.ingest import ingest


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--out", default="data/manifest.parquet")
    parser.add_argument("--report", default="data/ingest_report.json")
    args = parser.parse_args()
    cfg = load_params(args.params).ingest
    report = ingest(cfg.source, cfg.options, args.out, on_bad=cfg.on_bad, report_path=args.report)
    print(f"ingest: {report}")


if __name__ == "__main__":
    run_stage(main)
