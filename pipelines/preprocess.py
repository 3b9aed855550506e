"""Stage preprocess: a dataset's train/test split, query/gallery roles, validation folds, and
its label tables (a fine class with two parents at a coarser scale stops it here)."""

from dml.pipeline.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params
from dml.data.manifest import manifest_columns, read_info, read_manifest
from dml.data.splits import label_tables, make_splits, write_splits
from dml.io import write_json_atomic


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="a key of the datasets section")
    parser.add_argument("--labels", required=True, help="the label tables to write (JSON)")
    args = parser.parse_args()
    cfg = load_params(args.params).dataset(args.dataset).split
    annotations = [c for c in manifest_columns(args.manifest) if c != "image"]  # no pixels
    table = read_manifest(args.manifest, columns=annotations)
    splits = make_splits(table, test_fraction=cfg.test_fraction, num_folds=cfg.num_folds,
                         seed=cfg.seed, method=cfg.method, query_fraction=cfg.query_fraction,
                         queries_per_class=cfg.queries_per_class, query_domain=cfg.query_domain)
    tables = label_tables(table, read_info(args.manifest), splits)  # checks the hierarchy
    write_splits(splits, args.splits)
    write_json_atomic(args.labels, tables)
    print(f"preprocess {args.dataset}: {splits.num_rows} rows -> {args.splits}")


if __name__ == "__main__":
    run_stage(main)
