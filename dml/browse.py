"""``dml browse``: a local page to query a project's trained runs and look at the results.

Pick a test query (or the experiment's worst queries, lowest average precision first) or
upload an image; see its nearest gallery items in any of the run's indexes, with relevance
marks for test queries, and the same query in a second experiment side by side. The server is
Flask, bound to 127.0.0.1; the page loads nothing from outside. Images are served from the
datasets' manifests by image id, never from a file path, so nothing outside the project is
served. Uploads are size-limited and go through ingest's checks (:mod:`dml.retrieve`).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, abort, render_template_string, request

from dml.config import load_params, resolve_run
from dml.data.images import open_rgb
from dml.data.manifest import ImageLookup
from dml.embed import read_embeddings, with_views
from dml.errors import DataError, DmlError
from dml.evaluate.experiment import aligned_rows, test_rows
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.retrieve import Hit, Retriever, RunFiles
from dml.pipeline.stage import read_tuned

#: The largest upload accepted (bytes); a larger one is refused with 413.
MAX_UPLOAD = 8 * 1024 * 1024
#: Test queries listed on the page, and worst queries on their page.
LISTED_QUERIES = 24


@dataclass
class Run:
    """One trained run of the project, as the page shows it: its indexes, test queries and
    their average precision, its images, and a retriever per index (loaded on first use)."""

    files: RunFiles
    #: what a query's figure in :attr:`queries` is (the per-query metric the protocol reports)
    precision_name: str = "average precision"

    @cached_property
    def _data(self) -> tuple[EvalRows, np.ndarray, str]:
        params = load_params(self.files.project / "params.yaml")
        spec = resolve_run(params, self.files.experiment)
        data = read_tuned(str(self.files.tuned))["data"]
        manifest = str(self.files.project / data["manifest"])
        table, vectors, _ = read_embeddings(self.files.embeddings)
        rows = aligned_rows(spec, manifest, str(self.files.project / data["splits"]), table)
        protocol = build_protocol(spec.protocol)
        return rows, with_views(table, vectors, protocol.views, path=self.files.embeddings), manifest

    @cached_property
    def protocol(self) -> Any:
        params = load_params(self.files.project / "params.yaml")
        return build_protocol(resolve_run(params, self.files.experiment).protocol)

    @cached_property
    def queries(self) -> list[tuple[str, float | None]]:
        """The protocol's test queries with each one's average precision (map@R where the
        protocol reports it; None where it cannot be told apart per query)."""
        rows, vectors, _ = self._data
        tested = test_rows(rows)
        sub, sub_vectors = rows.subset(tested), vectors[tested]
        queries, gallery, own = self.protocol.split(sub)
        per_query: dict[str, np.ndarray] = {}
        self.protocol.evaluate(sub, sub_vectors, ks=(1,), nmi=False, per_query=per_query)
        task = self.protocol.tasks(sub, queries, gallery)[0]
        chosen = queries[task.restrict(queries, gallery, own)[0]]
        key = next((k for k in ("map@r", *sorted(per_query)) if k in per_query and "map" in k), None)
        values = per_query.get(key) if key else None
        self.precision_name = key or "average precision"
        if values is None or len(values) != len(chosen):
            return [(str(i), None) for i in sub.ids[chosen]]
        return [(str(i), None if np.isnan(v) else float(v)) for i, v in zip(sub.ids[chosen], values)]

    @cached_property
    def names(self) -> dict[str, str | None]:
        """Each row's fine class name (None for unlabelled rows)."""
        from dml.data.manifest import read_info

        rows, _, manifest = self._data
        info = read_info(manifest)
        fine = rows.labels.get(info.fine)
        if fine is None:
            return {str(i): None for i in rows.ids}
        return {str(i): info.class_names[info.fine][int(v)] if v >= 0 else None
                for i, v in zip(rows.ids, fine)}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {str(image): i for i, image in enumerate(self._data[0].ids)}

    def relevant(self, query: str, results: list[Hit]) -> list[bool]:
        """Whether each result is relevant to the test query ``query``: the same fine class,
        or a shared object class for multi-label scenes."""
        rows = self._data[0]
        at = self._positions
        q, r = at[query], [at[hit.image_id] for hit in results]
        if rows.labels:
            fine = next(iter(rows.labels.values()))
            return [bool(fine[q] == fine[i] and fine[q] >= 0) for i in r]
        counts = rows.counts
        return [bool((counts[q] * counts[i]).sum() > 0) for i in r]

    def domain_of(self, image: str) -> str | None:
        """The domain of row ``image`` (a sketch is embedded as one), None for another
        dataset's image."""
        at = self._positions.get(image)
        return None if at is None else str(self._data[0].domain[at])

    def image(self, image_id: str) -> bytes | None:
        """The stored image bytes of row ``image_id`` (None when it is not one of the run's),
        read on demand: only the rows a page shows are read."""
        if image_id not in self._positions:
            return None
        return self._images.read([image_id]).get(image_id)

    @cached_property
    def _images(self) -> ImageLookup:
        return ImageLookup(self._data[2])

    @cached_property
    def summary(self) -> dict[str, float]:
        """The evaluate stage's headline figures (metrics/<experiment>/seed<k>.summary.json)."""
        path = self.files.metrics.with_suffix(".summary.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    def retriever(self, index: str) -> Retriever:
        cache = self.__dict__.setdefault("_retrievers", {})
        if index not in cache:
            cache[index] = Retriever.from_run(self.files.experiment, seed=self.files.seed, index=index,
                                              project=self.files.project)
        return cache[index]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dml browse: {{ experiment }}</title>
<style>
body { font-family: sans-serif; margin: 1em; color: #222; }
form { margin: .5em 0; } .panes { display: flex; gap: 2em; align-items: flex-start; }
.results { display: flex; flex-wrap: wrap; gap: .5em; max-width: 60em; }
figure { margin: 0; width: 8.5em; font-size: .8em; border: 3px solid #ddd; padding: 2px; }
figure.hit { border-color: #2a2; } figure.miss { border-color: #c22; }
figure img, .query img { width: 8em; height: 8em; object-fit: contain; image-rendering: pixelated; }
.error { color: #b00; font-weight: bold; } table { border-collapse: collapse; }
td, th { padding: 0 .6em; text-align: left; } .queries a { margin-right: .4em; }
</style></head><body>
<h1>{{ experiment }} <small>seed {{ seed }}</small></h1>
<p>{% for key, value in summary.items() %}{{ key }} {{ '%.1f' % (100 * value) }}%{% if not loop.last %} · {% endif %}{% endfor %}</p>
<form method="get" action="/">
  <label>experiment <select name="experiment">{% for name in experiments %}<option{% if name == experiment %} selected{% endif %}>{{ name }}</option>{% endfor %}</select></label>
  <label>index <select name="index">{% for name in indexes %}<option{% if name == index %} selected{% endif %}>{{ name }}</option>{% endfor %}</select></label>
  <label>beside <select name="compare"><option value="">(none)</option>{% for name in experiments %}<option{% if name == compare %} selected{% endif %}>{{ name }}</option>{% endfor %}</select></label>
  <label>k <input name="k" type="number" min="1" max="100" value="{{ k }}" size="3"></label>
  {% if query %}<input type="hidden" name="query" value="{{ query }}">{% endif %}
  <button type="submit">show</button>
</form>
<form method="post" action="/?{{ state }}" enctype="multipart/form-data">
  <label>upload a query image <input type="file" name="image" accept="image/*"></label>
  <button type="submit" id="upload">search</button>
</form>
<p class="queries">test queries: {% for image, ap in queries %}<a href="/?{{ state }}&amp;query={{ image | urlencode }}" title="{{ '%.3f' % ap if ap is not none else '' }}">{{ loop.index }}</a>{% endfor %}
 · <a id="worst" href="/worst?{{ state }}">worst queries</a></p>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% if panes %}
<div class="query">query: {% if query_src %}<img src="{{ query_src }}" alt="query">{% endif %} {{ query_label }}</div>
<div class="panes">{% for pane in panes %}
<div class="pane"><h2>{{ pane.experiment }} · {{ pane.index }}</h2><p>{{ pane.score_name }}{% if pane.precision is not none %} · {{ pane.precision }} of {{ pane.hits|length }} relevant{% endif %}</p>
<div class="results">{% for hit in pane.hits %}
<figure class="{{ pane.marks[loop.index0] }}"><img src="/image/{{ pane.experiment }}/{{ hit.image_id | urlencode }}" alt="{{ hit.image_id }}">
<figcaption>{{ hit.rank }}. {{ hit.name or hit.image_id }}<br>{{ '%.3f' % hit.score }}</figcaption></figure>{% endfor %}</div></div>{% endfor %}
</div>{% endif %}
</body></html>"""

WORST = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dml browse: worst queries of {{ experiment }}</title>
<style>body { font-family: sans-serif; margin: 1em; } td, th { padding: 0 .6em; text-align: left; }
img { width: 4em; height: 4em; object-fit: contain; }</style></head><body>
<h1>Worst queries of {{ experiment }} <small>seed {{ seed }}, lowest {{ measure }} first</small></h1>
<p><a href="/?{{ state }}">back</a></p>
<table><tr><th>query</th><th>class</th><th>{{ measure }}</th></tr>{% for image, ap in worst %}
<tr><td><a class="worst-query" href="/?{{ state }}&amp;query={{ image | urlencode }}"><img src="/image/{{ experiment }}/{{ image | urlencode }}" alt="{{ image }}"> {{ image }}</a></td>
<td>{{ names[image] or '' }}</td><td>{{ '%.3f' % ap }}</td></tr>{% endfor %}</table>
</body></html>"""


def _data_uri(data: bytes) -> str:
    """A small PNG of ``data`` as a data: URI (the uploaded query, shown back)."""
    import io

    picture = open_rgb(data)
    picture.thumbnail((256, 256))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def create_app(project: str | os.PathLike[str], experiment: str, *, seed: int = 0) -> Flask:
    """The browse application over a project's trained runs of ``seed`` (``experiment``: the
    one shown first)."""
    project = Path(project)
    RunFiles.locate(experiment, seed, project)  # a clear error before serving anything
    params = load_params(project / "params.yaml")
    trained = [name for name in params.experiments
               if (RunFiles(project, name, seed).model / "model.json").is_file()
               and RunFiles(project, name, seed).indexes.is_dir()]
    site = _Site(project, experiment, seed, trained)
    app = Flask("dml.browse", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    app.add_url_rule("/", "page", site.page, methods=["GET", "POST"])
    app.add_url_rule("/worst", "worst", site.worst)
    app.add_url_rule("/image/<name>/<path:image_id>", "image", site.image)
    app.register_error_handler(413, _too_large)
    return app


def _state(name: str, index: str, compare: str, k: int) -> str:
    """The page's choices as a query string, carried by its links and forms."""
    from urllib.parse import urlencode

    return urlencode({"experiment": name, "index": index, "compare": compare, "k": k})


@dataclass
class _Site:
    """The browse app's state (trained runs, loaded on first use); its methods answer the routes."""

    project: Path
    experiment: str
    seed: int
    trained: list[str]
    runs: dict[str, Run] = field(default_factory=dict)

    def run_of(self, name: str) -> Run:
        """The run of experiment ``name``, loaded once; 404 for one not trained."""
        if name not in self.trained:
            abort(404, f"no trained run of {name!r}; trained: {', '.join(self.trained)}")
        if name not in self.runs:
            self.runs[name] = Run(RunFiles(self.project, name, self.seed))
        return self.runs[name]

    def page(self) -> Any:
        """``/``: the choices, the test queries and the results of a test query or an upload."""
        name = request.args.get("experiment", self.experiment)
        run = self.run_of(name)
        context = self._page_context(name, run)
        status = 200
        try:
            if request.method == "POST":
                self._show_upload(context, run)
            elif context["query"]:
                self._show_query(context, run)
        except DmlError as err:
            context["error"], status = str(err), 400
        return render_template_string(PAGE, **context), status

    def _page_context(self, name: str, run: Run) -> dict[str, Any]:
        """The page's template values from the request's choices, before any query runs."""
        indexes = run.files.index_names()
        index = request.args.get("index", "flat")
        if index not in indexes:
            index = "flat"
        compare = request.args.get("compare", "")
        k = min(max(request.args.get("k", 10, type=int) or 10, 1), 100)
        query = request.args.get("query", "")
        return {"experiment": name, "seed": self.seed, "experiments": self.trained,
                "indexes": indexes, "index": index,
                "compare": compare if compare in self.trained else "", "k": k,
                "query": query, "queries": run.queries[:LISTED_QUERIES], "summary": run.summary,
                "state": _state(name, index, compare, k), "panes": [], "error": None,
                "query_src": None, "query_label": ""}

    def _show_upload(self, context: dict[str, Any], run: Run) -> None:
        """Put the uploaded image and its results in ``context``; DataError for a bad upload."""
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            raise DataError("choose an image file to upload")
        data = upload.read()
        run.retriever(context["index"]).preprocessing.tensor(data, f"upload {upload.filename}")
        context.update(query_src=_data_uri(data), query_label=f"upload {upload.filename}")
        context["panes"] = _panes(data, None, run, context["index"], context["compare"],
                                  self.run_of, context["k"])

    def _show_query(self, context: dict[str, Any], run: Run) -> None:
        """Put the chosen test query and its results in ``context``; 404 for an unknown image."""
        name, query = context["experiment"], context["query"]
        data = run.image(query)
        if data is None:
            abort(404, f"{query!r} is not an image of {name}")
        context.update(query_src=f"/image/{name}/{query}",
                       query_label=f"{query} ({run.names.get(query) or 'test query'})")
        context["panes"] = _panes(data, query, run, context["index"],
                                  context["compare"], self.run_of, context["k"])

    def worst(self) -> Any:
        """``/worst``: the experiment's test queries, lowest average precision first."""
        name = request.args.get("experiment", self.experiment)
        run = self.run_of(name)
        scored = sorted(((i, ap) for i, ap in run.queries if ap is not None), key=lambda item: item[1])
        return render_template_string(
            WORST, experiment=name, seed=self.seed, worst=scored[:LISTED_QUERIES], names=run.names,
            measure=run.precision_name,
            state=_state(name, request.args.get("index", "flat"), request.args.get("compare", ""),
                         request.args.get("k", 10, type=int) or 10))

    def image(self, name: str, image_id: str) -> Response:
        """``/image/<experiment>/<image id>``: a row's stored image bytes; 404 for any other."""
        data = self.run_of(name).image(image_id)
        if data is None:
            abort(404)
        kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
        return Response(data, mimetype=kind, headers={"Cache-Control": "max-age=3600"})


def _too_large(_: Exception) -> tuple[str, int]:
    """The answer to an upload over :data:`MAX_UPLOAD` (413), its body read and dropped."""
    _drain(request.environ.get("wsgi.input"), request.content_length or 0)
    return (f"<!doctype html><title>too large</title><p class='error'>The upload is larger than "
            f"{MAX_UPLOAD // (1024 * 1024)} MiB; choose a smaller image.</p>", 413)


#: The most of a refused upload read and dropped so that the browser sees the answer.
DRAIN_LIMIT = 64 * 1024 * 1024


def _drain(stream: Any, length: int) -> None:
    """Read and drop a refused request's body: a server that answers before the upload ends
    and closes the connection shows the browser a reset connection instead of the answer."""
    remaining = min(length, DRAIN_LIMIT)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(1 << 16, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


def _panes(data: bytes, query: str | None, run: Run, index: str, compare: str, run_of: Any,
           k: int) -> list[dict[str, Any]]:
    """The results of one query image in ``run``'s index and, beside it, in ``compare``'s
    (its index of the same name where it has one, else exact); a test query (``query``: its
    image id) is not among its own results."""
    panes = []
    for other, name in ((run, index), *(((run_of(compare), index),) if compare else ())):
        name = name if name in other.files.index_names() else "flat"
        retriever = other.retriever(name)
        domain = other.domain_of(query) if query is not None else None
        hits = retriever.search([data], k=k + 1, domain=domain)[0]
        # a test query is left out of its own results, as the evaluate stage ranks it
        hits = [replace(hit, rank=rank) for rank, hit in
                enumerate((hit for hit in hits if hit.image_id != query), start=1)][:k]
        marks = [""] * len(hits)
        precision = None
        if query is not None and query in other._positions:
            relevant = other.relevant(query, hits)
            marks = ["hit" if r else "miss" for r in relevant]
            precision = sum(relevant)
        panes.append({"experiment": other.files.experiment, "index": name, "hits": hits,
                      "marks": marks, "precision": precision, "score_name": retriever.score_name})
    return panes


def serve(project: str | os.PathLike[str], experiment: str, *, seed: int = 0,
          host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the browse page until Ctrl-C."""
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = create_app(project, experiment, seed=seed)
    server = make_server(host, port, app, threaded=False)
    print(f"browse {experiment} seed {seed}: http://{host}:{port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("browse: stopped")
    finally:
        server.server_close()
