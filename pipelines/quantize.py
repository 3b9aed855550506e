"""Stage quantize: exact, PQ and OPQ faiss indexes of the protocol's test gallery at each bit
budget.

Codebooks are learned on the training-split embeddings, never on the gallery being searched.
"""

from dml.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params, resolve_run
from dml.embed import read_embeddings
from dml.errors import DataError
from dml.evaluate.experiment import aligned_rows, test_rows
from dml.evaluate.protocols import build_protocol
from dml.index import build_index, save_index
from dml.io import atomic_path


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True, help="folder of index files")
    args = parser.parse_args()
    params = load_params(args.params)
    spec = resolve_run(params, args.experiment)
    protocol = build_protocol(spec.protocol)
    table, vectors, meta = read_embeddings(args.embeddings)
    data = read_tuned(args.tuned)["data"]
    rows = aligned_rows(spec, data["manifest"], data["splits"], table)
    train = vectors[rows.split == "train"]
    test = test_rows(rows)
    _, gallery_rows, _ = protocol.split(rows.subset(test))
    gallery = vectors[test][gallery_rows]
    metric = "ip" if protocol.metric == "cosine" else "l2"
    built, skipped = [], []
    with atomic_path(args.out, directory=True) as folder:
        recipes = [("flat", None)] + [(k, b) for k in params.quantize.kinds for b in params.quantize.bits]
        for kind, bits in recipes:
            name = kind if bits is None else f"{kind}{bits}"
            try:
                index = build_index(train, kind, bits=bits, metric=metric, seed=params.seed)
            except DataError as err:  # this data cannot train this index: say so, build the rest
                skipped.append(f"{name} ({err})")
                continue
            index.reset()  # keep the learned codebooks, index the gallery only
            index.add(gallery)
            save_index(index, folder / f"{name}.faiss", info={
                "kind": kind, "bits": bits, "source": args.embeddings, "embed_dim": meta["embed_dim"]})
            built.append(name)
    print(f"quantize {args.experiment}: {', '.join(built)} over {len(gallery)} gallery vectors"
          + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))


if __name__ == "__main__":
    run_stage(main)
