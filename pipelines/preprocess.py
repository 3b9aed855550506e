"""Stage preprocess: class-disjoint train/test split, query/gallery roles, validation folds."""

from dml.cli import run_stage, stage_parser
from dml.config import load_params
from dml.data.manifest import read_info, read_manifest
from dml.data.splits import label_tables, make_splits
from dml.io import atomic_path, write_json_atomic


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--labels", default="data/labels.json")
    args = parser.parse_args()
    cfg = load_params(args.params).split
    table = read_manifest(args.manifest)
    splits = make_splits(
        table,
        test_fraction=cfg.test_fraction,
        num_folds=cfg.num_folds,
        seed=cfg.seed,
        method=cfg.method,
    )
    import pyarrow.parquet as pq

    with atomic_path(args.splits) as tmp:
        pq.write_table(splits, tmp)
    write_json_atomic(args.labels, label_tables(table, read_info(args.manifest), splits))
    print(f"preprocess: {splits.num_rows} rows -> {args.splits}")


if __name__ == "__main__":
    run_stage(main)
