"""Stage embed: the exported model -> embeddings.parquet for every image of the manifest."""

import pyarrow.parquet as pq

from dml.cli import run_stage, stage_parser
from dml.data.dataset import ManifestDataset
from dml.embed import embed_dataset, write_embeddings
from dml.train.export import load_model


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    model, card = load_model(args.model)
    dataset = ManifestDataset(args.manifest, args.splits, image_size=card["model"]["image_size"])
    vectors = embed_dataset(model, dataset, batch_size=args.batch_size, progress=True)
    splits = pq.read_table(args.splits, columns=["image_id", "split", "role"]).to_pylist()
    by_id = {row["image_id"]: row for row in splits}
    rows = [by_id[i] for i in dataset.image_ids]
    columns = {
        "image_id": list(dataset.image_ids),
        "split": [r["split"] for r in rows],
        "role": [r["role"] for r in rows],
        "domain": list(dataset.domains),
        "label": dataset.labels,
    }
    write_embeddings(args.out, columns, vectors, model_hash=card["sha256"])
    print(f"embed: {vectors.shape[0]} x {vectors.shape[1]} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
