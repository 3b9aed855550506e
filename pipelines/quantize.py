"""Stage quantize: exact, PQ and OPQ faiss indexes of the test gallery at each bit budget.

Codebooks are learned on the training-split embeddings, never on the gallery being searched.
"""

from dml.cli import run_stage, stage_parser
from dml.config import load_params
from dml.embed import read_embeddings
from dml.evaluate.protocols import split_query_gallery
from dml.index import build_index, save_index
from dml.io import atomic_path


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True, help="folder of index files")
    args = parser.parse_args()
    cfg = load_params(args.params)
    table, vectors, meta = read_embeddings(args.embeddings)
    split = table.column("split").to_numpy(zero_copy_only=False)
    train, test = vectors[split == "train"], vectors[split == "test"]
    _, gallery_mask = split_query_gallery(table.column("role").to_numpy(zero_copy_only=False)[split == "test"])
    gallery = test[gallery_mask]
    with atomic_path(args.out, directory=True) as folder:
        recipes = [("flat", None)] + [(k, b) for k in cfg.quantize.kinds for b in cfg.quantize.bits]
        for kind, bits in recipes:
            index = build_index(train, kind, bits=bits, seed=cfg.seed)
            index.reset()  # keep the learned codebooks, index the gallery only
            index.add(gallery)
            name = kind if bits is None else f"{kind}{bits}"
            save_index(index, folder / f"{name}.faiss", info={"kind": kind, "bits": bits, "source": args.embeddings, "embed_dim": meta["embed_dim"]})
            print(f"quantize: {name}: {index.ntotal} vectors")


if __name__ == "__main__":
    run_stage(main)
