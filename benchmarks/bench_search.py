"""Query latency of one image: `dml search`, the Python retriever and the browse page.

    .venv/bin/python benchmarks/bench_search.py --experiment multi_similarity --index flat opq64

Run in a project the pipeline has trained (`make demo` first); the query is a test image of
the experiment's dataset, written to a file as a user would have it. Measured, wall seconds:

- ``dml search (process)``: the whole command, a fresh process: imports, loading the model, the
  index and the gallery rows, embedding and searching one image (the median of ``--repeats``);
- ``load``: ``Retriever.from_run`` in this process, libraries already imported;
- ``query``: ``retriever.search([image], k=10)`` once loaded: decode, preprocess, embed, search
  (the median of ``--repeats``, after one warm-up call);
- ``page (first)``: the browse page served over HTTP on 127.0.0.1: the first query of an
  index, loading its retriever included; ``page``: the same request again (median).

Figures go to ``benchmarks/results/search-<experiment>.json`` and one line each to the console.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

from dml.io import write_json_atomic
from dml.retrieve import Retriever, RunFiles


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def query_image(files: RunFiles, folder: Path) -> Path:
    """A test query of the run's dataset as a PNG file."""
    retriever = Retriever.from_run(files.experiment, seed=files.seed, project=files.project)
    image_id = retriever.gallery_ids[0]
    data = json.loads(files.tuned.read_text())["data"]
    table = pq.read_table(files.project / data["manifest"], columns=["image_id", "image"]).to_pydict()
    path = folder / "query.png"
    path.write_bytes(table["image"][table["image_id"].index(image_id)])
    return path


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="multi_similarity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", nargs="+", default=["flat", "opq64"])
    parser.add_argument("--project", default=".")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = RunFiles.locate(args.experiment, args.seed, args.project)
    out: dict = {"experiment": args.experiment, "seed": args.seed, "cpu": cpu_name(), "indexes": {}}
    import logging

    from werkzeug.serving import make_server

    from dml.browse import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    app = create_app(files.project, args.experiment, seed=args.seed)
    server = make_server("127.0.0.1", 0, app, threaded=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as folder:
        image = query_image(files, Path(folder))
        image_id = Retriever.from_run(args.experiment, seed=args.seed, project=files.project).gallery_ids[0]
        for index in args.index:
            command = [str(Path(sys.executable).parent / "dml"), "search", "--experiment", args.experiment,
                       "--seed", str(args.seed), "--index", index, "--project", str(files.project), str(image)]
            process = timed(lambda: subprocess.run(command, check=True, capture_output=True), args.repeats)
            start = time.perf_counter()
            retriever = Retriever.from_run(args.experiment, seed=args.seed, index=index, project=files.project)
            load = time.perf_counter() - start
            retriever.search([image], k=10)
            query = timed(lambda: retriever.search([image], k=10), args.repeats)
            url = (f"http://127.0.0.1:{server.port}/?experiment={args.experiment}&index={index}"
                   f"&k=10&query={image_id}")
            start = time.perf_counter()
            urllib.request.urlopen(url).read()
            page_first = time.perf_counter() - start
            page = timed(lambda: urllib.request.urlopen(url).read(), args.repeats)
            figures = {"dml search (process)": process, "load": load, "query": query,
                       "page (first)": page_first, "page": page}
            out["indexes"][index] = figures
            print(f"{args.experiment} {index}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in figures.items()))
    server.shutdown()
    target = Path(__file__).parent / "results" / f"search-{args.experiment}.json"
    write_json_atomic(target, out)
    print(f"{out['cpu']} -> {target}")


if __name__ == "__main__":
    main()
