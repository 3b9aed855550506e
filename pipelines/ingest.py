"""Stage ingest: raw images (or the embedded synthetic set) -> data/manifest.parquet."""

import argparse

from dml.cli import run_stage
from dml.config import load_params
from dml.data.ingest import ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/manifest.parquet")
    parser.add_argument("--report", default="data/ingest_report.json")
    args = parser.parse_args()
    cfg = load_params(args.params).ingest
    report = ingest(cfg.source, cfg.options, args.out, on_bad=cfg.on_bad, report_path=args.report)
    print(f"ingest: {report}")


if __name__ == "__main__":
    run_stage(main)
