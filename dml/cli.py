"""The ``dml`` command and the error handling shared by the pipeline stage scripts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dml.errors import DmlError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; user errors print one clear message (no traceback) and exit 2."""
    try:
        main()
    except DmlError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_parser(
    description: str | None, *, data: bool = True, experiment: bool = False
) -> argparse.ArgumentParser:
    """Arguments the stages share: params.yaml, the manifest and splits, the experiment."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    if data:
        parser.add_argument("--manifest", default="data/manifest.parquet")
        parser.add_argument("--splits", default="data/splits.parquet")
    if experiment:
        parser.add_argument("--experiment", required=True)
    return parser


def _check(args: argparse.Namespace) -> None:
    from dml.config import load_params

    params = load_params(args.params)
    print(f"{args.params}: valid; experiments: {', '.join(params.experiments) or '(none)'}")


def _evaluate(args: argparse.Namespace) -> None:
    from dml.embed import read_embeddings
    from dml.evaluate import retrieval_metrics

    table, vectors, _ = read_embeddings(args.embeddings)
    mask = [s == args.split for s in table.column("split").to_pylist()]
    labels = table.column("label").to_numpy()[mask]
    print(json.dumps(retrieval_metrics(vectors[mask], labels), indent=2))


def _report(args: argparse.Namespace) -> None:
    print(Path(args.table).read_text())


def main(argv: list[str] | None = None) -> None:
    """``dml check | evaluate | report``: quick access to the library from a shell."""
    parser = argparse.ArgumentParser(prog="dml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml")
    check.add_argument("--params", default="params.yaml")
    check.set_defaults(func=_check)
    evaluate = sub.add_parser("evaluate", help="retrieval metrics of an embeddings.parquet")
    evaluate.add_argument("embeddings")
    evaluate.add_argument("--split", default="test")
    evaluate.set_defaults(func=_evaluate)
    report = sub.add_parser("report", help="print the comparison table")
    report.add_argument("--table", default="results/comparison.md")
    report.set_defaults(func=_report)
    args = parser.parse_args(argv)
    run_stage(lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
