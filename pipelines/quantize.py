"""Stage quantize: exact, PQ and OPQ faiss indexes of the protocol's test gallery at each bit
budget, binary hash codes (``hash``: Hamming ranking, dml/binary_codes.py), and the codebooks a
model learned itself (a soft-PQ head) as plain faiss indexes.

Codebooks and hashes are learned on the training-split embeddings, never on the test
queries (the category-level sketch protocol's gallery is itself training data). Every index
is learned on and filled with :func:`dml.index.code_vectors`: where the protocol flips, the
mean of each image's and its mirror's embedding, the vectors the evaluate stage searches with.
"""

from dml.pipeline.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params, resolve_run
from dml.embed import read_embeddings, with_views
from dml.errors import DataError
from dml.evaluate.experiment import aligned_rows, gallery_indices
from dml.evaluate.protocols import build_protocol
from dml.binary_codes import train_hash_index
from dml.index import build_index, code_vectors, save_index
from dml.io import atomic_path
from dml.train.export import load_model


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--model", required=True, help="the exported model (its learned codebooks)")
    parser.add_argument("--out", required=True, help="folder of index files")
    args = parser.parse_args()
    params = load_params(args.params)
    spec = resolve_run(params, args.experiment)
    protocol = build_protocol(spec.protocol)
    table, vectors, meta = read_embeddings(args.embeddings)
    data = read_tuned(args.tuned)["data"]
    rows = aligned_rows(spec, data["manifest"], data["splits"], table)
    vectors = code_vectors(with_views(table, vectors, protocol.views, path=args.embeddings), protocol.metric)
    trained = rows.split == "train"
    train = vectors[trained]
    train_labels = next(iter(rows.labels.values()))[trained] if rows.labels else None
    gallery = vectors[gallery_indices(rows, protocol)]
    metric = protocol.geometry.faiss_metric
    model, _ = load_model(args.model)
    learned = {name: (head, index) for head, module in model.heads.items()
               if hasattr(module, "faiss_indexes")
               for name, index in module.faiss_indexes(metric).items()}
    built, skipped = [], []
    with atomic_path(args.out, directory=True) as folder:
        recipes = [("flat", None)] + [(k, b) for k in spec.quantize.kinds for b in spec.quantize.bits]
        for kind, bits in recipes:
            name = kind if bits is None else f"{kind}{bits}"
            try:
                if kind == "hash":
                    index = train_hash_index(train, train_labels, bits, seed=params.seed,
                                             steps=spec.quantize.hash_steps)
                else:
                    index = build_index(train, kind, bits=bits, metric=metric, seed=params.seed)
            except DataError as err:  # this data cannot train this index: say so, build the rest
                skipped.append(f"{name} ({err})")
                continue
            index.reset()  # keep the learned codebooks, index the gallery only
            index.add(gallery)
            save_index(index, folder / f"{name}.faiss", info={
                "kind": kind, "bits": bits, "source": args.embeddings, "embed_dim": meta["embed_dim"]})
            built.append(name)
        for name, (head, index) in learned.items():
            index.add(gallery)  # encoded to the nearest code words, as the head does
            save_index(index, folder / f"{name}.faiss", info={
                "kind": name.rstrip("0123456789"), "bits": index.sa_code_size() * 8, "head": head,
                "source": args.model, "embed_dim": meta["embed_dim"]})
            built.append(name)
    print(f"quantize {args.experiment}: {', '.join(built)} over {len(gallery)} gallery vectors"
          + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))


if __name__ == "__main__":
    run_stage(main)
