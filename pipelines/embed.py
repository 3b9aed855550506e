"""Stage embed: the exported model -> embeddings.parquet (and its extra heads' outputs) for every
row of its dataset and domains, and of the mirrored images where the protocol asks for flip
test-time augmentation; in this process, or on Ray Data's model actors (params: embed)."""

from dml.pipeline.stage import hand_over, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.config import load_params, resolve_run
from dml.embed_ray import embed_to
from dml.evaluate.protocols import build_protocol


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = params.embed
    spec = resolve_run(params, args.experiment)
    data = read_tuned(args.tuned)["data"]
    protocol = build_protocol(spec.protocol)
    rows, dim = embed_to(args.out, args.model, data["manifest"], data["splits"], domains=spec.domains,
                         normalize=protocol.geometry.normalized,
                         # flip test-time augmentation: the mirrored images too
                         views=("flip",) if "flip" in protocol.views else (),
                         batch_size=cfg.batch_size, actors=cfg.actors,
                         cpus_per_actor=cfg.cpus_per_actor, shard_rows=cfg.shard_rows, progress=True)
    where = "in process" if cfg.actors == 0 else "on Ray Data"
    print(f"embed {args.experiment}: {rows} x {dim} {where} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
