"""Stage embed: the exported model -> embeddings.parquet (and its extra heads' outputs) for every
row of its dataset and domains, and of the mirrored images where the protocol asks for flip
test-time augmentation."""

from dml.pipeline.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params, resolve_run
from dml.embed import extract, write_embeddings
from dml.evaluate.experiment import experiment_rows
from dml.evaluate.protocols import build_protocol
from dml.train.export import load_model


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    spec = resolve_run(load_params(args.params), args.experiment)
    data = read_tuned(args.tuned)["data"]
    model, card = load_model(args.model)
    dataset, rows = experiment_rows(spec, data["manifest"], data["splits"],
                                    image_size=card["model"]["image_size"])
    protocol = build_protocol(spec.protocol)
    vectors, heads = extract(model, dataset, batch_size=args.batch_size, progress=True,
                             normalize=protocol.geometry.normalized, heads=list(model.heads))
    views = {}
    if "flip" in protocol.views:  # flip test-time augmentation: the mirrored images too
        views["flip"] = extract(model, dataset, batch_size=args.batch_size, progress=True,
                                normalize=protocol.geometry.normalized, flip=True)[0]
    columns = {"image_id": list(rows.ids), "split": list(rows.split), "role": list(rows.role),
               "domain": list(rows.domain)}
    write_embeddings(args.out, columns, vectors, model_hash=card["sha256"],
                     normalized=protocol.geometry.normalized, heads=heads, views=views)
    print(f"embed {args.experiment}: {vectors.shape[0]} x {vectors.shape[1]} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
