"""Stage evaluate: the experiment's protocol on the test rows, float and every quantized index."""

from dml.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from pathlib import Path

from dml.config import load_params, resolve_run
from dml.data.manifest import read_manifest
from dml.embed import read_embeddings
from dml.evaluate.experiment import aligned_rows, evaluate_test_split, grid_examples
from dml.evaluate.protocols import build_protocol
from dml.index import load_index
from dml.io import atomic_path, write_json_atomic
from dml.report import retrieval_grid
from dml.train.export import read_card


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True, seed=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--indexes", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--grid", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = params.evaluate
    spec = resolve_run(params, args.experiment)
    protocol = build_protocol(spec.protocol)
    card = read_card(args.model)
    table, vectors, _ = read_embeddings(args.embeddings, expected_dim=card["embed_dim"])
    data = read_tuned(args.tuned)["data"]
    rows = aligned_rows(spec, data["manifest"], data["splits"], table)
    indexes = {p.stem: load_index(p)[0] for p in sorted(Path(args.indexes).glob("*.faiss"))}
    report = evaluate_test_split(rows, vectors, protocol, indexes, ks=tuple(cfg.ks))
    report.update(
        experiment=args.experiment,
        seed=args.seed,
        selected_epoch=card.get("selected_epoch"),
        dataset=spec.dataset,
        protocol=spec.protocol,
        loss=card["loss"]["name"] if card.get("loss") else "untrained",
        backbone=card["model"]["backbone"],
        embed_dim=card["embed_dim"],
        image_size=card["model"]["image_size"],
    )
    queries, results, correct = grid_examples(rows, vectors, protocol, cfg.grid_queries, cfg.grid_topk)
    wanted = set(queries) | {r for row in results for r in row}
    stored = read_manifest(data["manifest"], columns=["image_id", "image"])
    images = {i: b for i, b in zip(*stored.to_pydict().values()) if i in wanted}
    grid = retrieval_grid([images[q] for q in queries], [[images[r] for r in row] for row in results], correct)
    with atomic_path(args.grid) as tmp:
        grid.save(tmp, format="PNG")
    write_json_atomic(args.out, report)
    headline = {k: v for k, v in report["float"].items() if "@" in k or k in ("map", "nmi")}
    print(f"evaluate {args.experiment}: " + ", ".join(f"{k}={v:.3f}" for k, v in list(headline.items())[:8]))


if __name__ == "__main__":
    run_stage(main)
