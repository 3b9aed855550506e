"""Stage evaluate: retrieval metrics of the float embeddings and of every quantized index."""

from pathlib import Path

from dml.cli import run_stage, stage_parser
from dml.config import load_params
from dml.data.manifest import read_manifest
from dml.embed import read_embeddings
from dml.evaluate.experiment import evaluate_test_split, grid_examples
from dml.index import load_index
from dml.io import atomic_path, write_json_atomic
from dml.report import retrieval_grid
from dml.train.export import read_card


def main() -> None:
    parser = stage_parser(__doc__, experiment=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--indexes", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--grid", required=True)
    args = parser.parse_args()
    cfg = load_params(args.params).evaluate
    card = read_card(args.model)
    table, vectors, _ = read_embeddings(args.embeddings, expected_dim=card["embed_dim"])
    indexes = {p.stem: load_index(p)[0] for p in sorted(Path(args.indexes).glob("*.faiss"))}
    report = evaluate_test_split(table, vectors, indexes, ks=tuple(cfg.ks))
    report.update(
        experiment=args.experiment,
        loss=card["loss"]["name"],
        backbone=card["model"]["backbone"],
        embed_dim=card["embed_dim"],
        image_size=card["model"]["image_size"],
    )
    queries, results, correct = grid_examples(table, vectors, cfg.grid_queries, cfg.grid_topk)
    images = dict(
        zip(*read_manifest(args.manifest, columns=["image_id", "image"]).to_pydict().values())
    )
    grid = retrieval_grid([images[q] for q in queries], [[images[r] for r in row] for row in results], correct)
    with atomic_path(args.grid) as tmp:
        grid.save(tmp, format="PNG")
    write_json_atomic(args.out, report)
    print(f"evaluate {args.experiment}: " + ", ".join(f"{k}={v:.3f}" for k, v in report["float"].items()))


if __name__ == "__main__":
    run_stage(main)
