"""Stage source: a fingerprint of the files a dataset's source reads (its image folder, its
annotation CSV); DVC runs it every time and re-runs ingest only when the fingerprint changes."""

from dml.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params
from dml.data.fingerprint import dataset_fingerprint
from dml.io import write_json_atomic


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--dataset", required=True, help="a key of the datasets section")
    parser.add_argument("--out", required=True, help="the fingerprint to write (JSON)")
    args = parser.parse_args()
    cfg = load_params(args.params).dataset(args.dataset)
    write_json_atomic(args.out, dataset_fingerprint(cfg.source, cfg.options))


if __name__ == "__main__":
    run_stage(main)
