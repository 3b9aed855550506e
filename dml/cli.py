"""The ``dml`` command: quick access to the library from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dml.stage import run_stage


def _check(args: argparse.Namespace) -> None:
    from dml.checks import check_params
    from dml.config import load_params

    params = check_params(load_params(args.params))
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


def _run(args: argparse.Namespace) -> None:
    from dml.runtime import run_command

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise SystemExit("dml run: give a command, e.g. dml run -- dvc repro")
    raise SystemExit(run_command(command, warm=not args.cold, ray=args.ray))


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
    run = sub.add_parser("run", help="run a command (dvc repro) with a warm interpreter for its "
                         "stages and, with --ray, one local Ray head for all of them")
    run.add_argument("--ray", action="store_true",
                     help="start one local Ray head for the command (unless RAY_ADDRESS is set)")
    run.add_argument("--cold", action="store_true", help="no warm interpreter: each stage imports "
                     "its libraries itself")
    run.add_argument("command_line", nargs=argparse.REMAINDER, help="-- command ...")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    run_stage(lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
