"""The ``dml`` command: quick access to the library from a shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dml.errors import DataError
from dml.pipeline.stage import print_notices, run_stage


def _check(args: argparse.Namespace) -> None:
    from dml.checks import check_params
    from dml.config import load_params, resolve_run
    from dml.preflight import preflight, preflight_tune
    from dml.train.training_data import DataSpec

    params = check_params(load_params(args.params))
    checked, missing = [], []
    for name, exp in params.experiments.items():
        folder = Path(args.data) / exp.dataset
        data = DataSpec(manifest=str(folder / "manifest.parquet"), splits=str(folder / "splits.parquet"))
        if not (Path(data.manifest).exists() and Path(data.splits).is_file()):
            missing.append(exp.dataset)
            continue
        print_notices(preflight_tune(params, name, data).notices)
        spec = resolve_run(params, name)
        print_notices(preflight(spec, data, world_size=spec.train.num_workers).notices)
        checked.append(name)
    for dataset in dict.fromkeys(missing):
        print_notices([f"{args.data}/{dataset} is not built yet, so no experiment on it was checked "
                       f"against its data: `dvc repro preprocess@{dataset}` builds it in seconds"])
    against = f"; checked against their data: {', '.join(checked)}" if checked else ""
    print(f"{args.params}: valid; experiments: {', '.join(params.experiments) or '(none)'}{against}")


def _evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from dml.embed import read_embeddings
    from dml.evaluate import retrieval_metrics

    table, vectors, _ = read_embeddings(args.embeddings)
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    present = sorted(set(splits))
    if args.split not in present:
        raise DataError(f"{args.embeddings}: no rows of split {args.split!r}; "
                        f"splits present: {', '.join(present)}")
    mask = splits == args.split
    labels = table.column("label").to_numpy()[mask]
    print(json.dumps(retrieval_metrics(vectors[mask], labels), indent=2))


def _report(args: argparse.Namespace) -> None:
    table = Path(args.table)
    if not table.is_file():
        hint = ("run `make demo` or `dvc repro` first" if Path("dvc.yaml").is_file()
                else "run dml report in the project folder (where dvc.yaml is), or give --table")
        raise DataError(f"{table}: no comparison table yet; {hint}")
    print(table.read_text())
    page = table.with_name("report.html")
    if page.is_file():
        print(f"figures and retrieval grids: {page}")


def _search(args: argparse.Namespace) -> None:
    from dml.retrieve import Retriever

    retriever = Retriever.from_run(args.experiment, seed=args.seed, index=args.index, project=args.project)
    results = retriever.search(args.images, k=args.k)
    if args.json:
        print(json.dumps([{"query": str(image), "index": args.index, "score": retriever.score_name,
                           "results": [hit.__dict__ for hit in hits]}
                          for image, hits in zip(args.images, results)], indent=2))
        return
    for image, hits in zip(args.images, results):
        print(f"{image}: {len(hits)} nearest in {args.experiment} seed {args.seed}, index "
              f"{args.index} ({retriever.score_name})")
        for hit in hits:
            score = f"{hit.score:9.0f}" if retriever.geometry.binary else f"{hit.score:9.4f}"
            print(f"  {hit.rank:>3}  {score}  {hit.image_id}  {hit.name or ''}".rstrip())


def _export(args: argparse.Namespace) -> None:
    from dml.onnx_export import export_run, preprocess_path
    from dml.retrieve import RunFiles

    card = export_run(RunFiles.locate(args.experiment, args.seed, args.project), args.onnx,
                      rows=args.rows, tolerance=args.tolerance)
    check = card["check"]
    print(f"export {args.experiment} seed {args.seed}: {args.onnx} (preprocessing: "
          f"{preprocess_path(args.onnx)}); on {check['rows']} gallery rows the largest absolute "
          f"difference from PyTorch is {check['max_abs_diff']:.1e} (tolerance {check['tolerance']:.0e}), "
          f"{check['same_neighbours']}/{check['rows']} rows keep the same top-{check['k']} neighbours")


def _browse(args: argparse.Namespace) -> None:
    from dml.browse import serve

    serve(args.project, args.experiment, seed=args.seed, host="127.0.0.1", port=args.port)


def _run(args: argparse.Namespace) -> None:
    from dml.pipeline.supervisor import run_command

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise SystemExit("dml run: give a command, e.g. dml run -- dvc repro")
    raise SystemExit(run_command(command, warm=not args.cold, ray=args.ray))


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The options naming one trained run of a project."""
    parser.add_argument("--experiment", required=True, help="an experiment of params.yaml")
    parser.add_argument("--seed", type=int, default=0, help="which seed's run (default: 0)")
    parser.add_argument("--project", default=".", help="the project folder (default: here)")


def build_parser() -> argparse.ArgumentParser:
    """The ``dml`` argument parser: one sub-command per job, each option with its help."""
    parser = argparse.ArgumentParser(prog="dml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and check each experiment against "
                           "its data, in seconds, before any training")
    check.add_argument("--params", default="params.yaml", help="the parameters file")
    check.add_argument("--data", default="data", help="folder of the datasets' manifest.parquet "
                       "and splits.parquet (data/<dataset>/), checked against when present")
    check.set_defaults(func=_check)
    evaluate = sub.add_parser("evaluate", help="retrieval metrics of an embeddings.parquet")
    evaluate.add_argument("embeddings", help="an embed stage output, e.g. embeddings/contrastive/seed0.parquet")
    evaluate.add_argument("--split", default="test", help="the rows to evaluate, each against "
                          "the others (default: test)")
    evaluate.set_defaults(func=_evaluate)
    report = sub.add_parser("report", help="print the comparison table")
    report.add_argument("--table", default="results/comparison.md",
                        help="the report stage's table (default: results/comparison.md)")
    report.set_defaults(func=_report)
    search = sub.add_parser("search", help="the nearest gallery items of images, from a trained "
                            "run's model and one of its indexes")
    _run_options(search)
    search.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    search.add_argument("--index", default="flat", help="which of the run's indexes: flat (exact), "
                        "pq64, opq64, hash64, ... (default: flat)")
    search.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    search.add_argument("--json", action="store_true", help="print JSON for scripts")
    search.set_defaults(func=_search)
    export = sub.add_parser("export", help="a trained run's embedding model as ONNX, checked "
                            "against PyTorch on rows of its dataset")
    _run_options(export)
    export.add_argument("--onnx", required=True, help="the file to write, e.g. model.onnx "
                        "(its preprocessing goes beside it, model.preprocess.json)")
    export.add_argument("--rows", type=int, default=64, help="gallery rows the check embeds")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest absolute difference accepted (default: 1e-4)")
    export.set_defaults(func=_export)
    browse = sub.add_parser("browse", help="a local page (127.0.0.1) to query an experiment's "
                            "indexes with a test image or an upload")
    _run_options(browse)
    browse.add_argument("--port", type=int, default=8765, help="the port (default: 8765)")
    browse.set_defaults(func=_browse)
    run = sub.add_parser("run", help="run a command (dvc repro) with a warm interpreter for its "
                         "stages and one local Ray head for the stages that use Ray (Tune)")
    run.add_argument("--ray", action="store_true",
                     help="train on that Ray head too, through Ray Train (as on a cluster)")
    run.add_argument("--cold", action="store_true", help="no warm interpreter: each stage imports "
                     "its libraries itself")
    run.add_argument("command_line", nargs=argparse.REMAINDER, help="-- command ...")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """``dml check | evaluate | report | search | export | browse | run``: quick access to the library from a shell."""
    args = build_parser().parse_args(argv)
    run_stage(lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
