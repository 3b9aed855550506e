"""Stage evaluate: the experiment's protocol on the test rows, float and every quantized index,
the same float figures on a sample of the training classes (the seen/unseen gap), and the
attribute head's per-attribute average precision where the model has one. A quantized index
whose codes collapsed (most of the gallery on one code) is named in a notice."""

from dml.pipeline.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from pathlib import Path

import numpy as np

from dml.config import load_params, resolve_run
from dml.data.manifest import read_images, read_info
from dml.embed import head_output, read_embeddings, with_views
from dml.evaluate.candidates import Candidates
from dml.evaluate.experiment import (
    aligned_rows,
    evaluate_test_split,
    grid_examples,
    pair_scores,
    print_collapse_notices,
)
from dml.evaluate.protocols import EvalRows, Protocol, build_protocol
from dml.index import load_index
from dml.io import write_bytes_atomic, write_json_atomic
from dml.report.columns import approximate_note, summary_metrics
from dml.report.grid import retrieval_grid
from dml.report.runs import UNTRAINED
from dml.train.export import read_card


def class_names(rows: EvalRows, manifest: str) -> dict[str, str] | None:
    """Each row's fine class name, from the label table of the manifest's metadata (the one
    data/<dataset>/labels.json lists); None where the rows have no class labels (scenes)."""
    info = read_info(manifest)
    labels = rows.labels.get(info.fine)
    if labels is None:
        return None
    names = info.class_names[info.fine]
    return {image: names[int(label)] for image, label in zip(rows.ids, labels)}


def write_grid(path: str, rows: EvalRows, vectors: np.ndarray, protocol: Protocol, manifest: str,
               n_queries: int, top_k: int) -> None:
    """The retrieval grid PNG: test queries and their top results, captioned with their class
    names and each result's score."""
    queries, results, correct = grid_examples(rows, vectors, protocol, n_queries, top_k)
    images = read_images(manifest, set(queries) | {r for row in results for r in row})
    names = class_names(rows, manifest)
    write_bytes_atomic(path, retrieval_grid(
        [images[q] for q in queries], [[images[r] for r in row] for row in results], correct,
        query_names=None if names is None else [names[q] for q in queries],
        result_names=None if names is None else [[names[r] for r in row] for row in results],
        scores=pair_scores(rows, vectors, protocol.metric, queries, results),
        score_name=f"{protocol.geometry.score_name} to the query",
    ))


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True, seed=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--indexes", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="the evaluation, every figure (JSON)")
    parser.add_argument("--summary", required=True,
                        help="its headline figures (JSON): the metrics `dvc exp show` lists")
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
    vectors = with_views(table, vectors, protocol.views, path=args.embeddings)  # [N, V, D] with flips
    indexes = {p.stem: load_index(p)[0] for p in sorted(Path(args.indexes).glob("*.faiss"))}
    candidates = None if cfg.candidates is None else Candidates(**cfg.candidates.model_dump())
    report = evaluate_test_split(rows, vectors, protocol, indexes, ks=tuple(cfg.ks),
                                 attribute_logits=head_output(table, "attributes"),
                                 attribute_names=read_info(data["manifest"]).attribute_names,
                                 held_out_folds=spec.train.val_folds, seed=args.seed, candidates=candidates)
    report.update(
        experiment=args.experiment,
        seed=args.seed,
        selected_epoch=card.get("selected_epoch"),
        dataset=spec.dataset,
        protocol=spec.protocol,
        loss=card["loss"]["name"] if card.get("loss") else UNTRAINED,
        backbone=card["model"]["backbone"],
        embed_dim=card["embed_dim"],
        image_size=card["model"]["image_size"],
    )
    write_grid(args.grid, rows, vectors, protocol, data["manifest"], cfg.grid_queries, cfg.grid_topk)
    write_json_atomic(args.out, report)
    summary = summary_metrics(report)
    write_json_atomic(args.summary, summary)
    print(f"evaluate {args.experiment} seed {args.seed}: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary.items())
          + (f" (approximate ranking: {approximate_note(report)})" if candidates is not None else ""))
    print_collapse_notices(args.experiment, report)  # a quantizer that gave most items one code


if __name__ == "__main__":
    run_stage(main)
