"""Using what the pipeline trained: `dml search` and the retriever against the evaluate
stage's own ranking, `dml export` to ONNX run by onnxruntime, and their one-line errors, on a
project that real `dvc repro` built (photos ranked by cosine; sketches against photos by
euclidean distance with flips, in 32-bit hash codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dml.config import load_params, resolve_run
from dml.embed import read_embeddings, with_views
from dml.evaluate.experiment import (
    aligned_rows,
    gallery_indices,
    grid_examples,
    pair_scores,
)
from dml.evaluate.protocols import build_protocol
from dml.binary_codes import encode, index_codes
from dml.index import code_vectors, load_index
from dml.retrieve import Retriever

from .test_pipeline_dvc import copy_project, pipeline_env, tiny_params

pytestmark = [pytest.mark.dvc, pytest.mark.ray, pytest.mark.slow]

#: The trained experiments: photo self-retrieval (ECAML, cosine, a PQ index) and DASE + MEMS
#: (sketch queries against photos, euclidean, flips, hash codes).
PHOTOS, SKETCHES = "tiny", "tiny_dase"


def project_params() -> dict:
    raw = tiny_params()
    raw["experiments"] = {name: raw["experiments"][name] for name in (PHOTOS, SKETCHES)}
    used = {exp["dataset"] for exp in raw["experiments"].values()}
    raw["datasets"] = {name: d for name, d in raw["datasets"].items() if name in used}
    return raw


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained():
    """A project that `dml run -- dvc repro` trained, evaluated and indexed."""
    root = Path(tempfile.mkdtemp(prefix="dmlu-", dir="/tmp"))
    repo = root / "project"
    repo.mkdir()
    copy_project(repo, project_params())
    env = pipeline_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "project"], ["dml", "run", "--", "dvc", "repro", "--quiet"]):
        out = run(cmd, repo, env)
        assert out.returncode == 0, out.stdout + out.stderr
    yield repo, env
    shutil.rmtree(root, ignore_errors=True)


def stored(repo: Path, experiment: str):
    """The run's rows, stored views and protocol, as the evaluate stage reads them."""
    spec = resolve_run(load_params(repo / "params.yaml"), experiment)
    protocol = build_protocol(spec.protocol)
    table, vectors, _ = read_embeddings(repo / "embeddings" / experiment / "seed0.parquet")
    data = json.loads((repo / "tuned" / f"{experiment}.json").read_text())["data"]
    rows = aligned_rows(spec, str(repo / data["manifest"]), str(repo / data["splits"]), table)
    return rows, with_views(table, vectors, protocol.views), protocol, repo / data["manifest"]


def write_images(manifest: Path, ids: list[str], folder: Path) -> list[Path]:
    """The stored images of ``ids`` as files, as a user would have them."""
    table = pq.read_table(manifest, columns=["image_id", "image"]).to_pydict()
    data = dict(zip(table["image_id"], table["image"]))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(ids):
        path = folder / f"query{i}.png"
        path.write_bytes(data[image])
        paths.append(path)
    return paths


def test_dml_search_gives_the_evaluate_stages_ranking(trained, tmp_path):
    repo, env = trained
    rows, vectors, protocol, manifest = stored(repo, PHOTOS)
    queries, results, _ = grid_examples(rows, vectors, protocol, n_queries=4, top_k=5)
    paths = write_images(manifest, queries, tmp_path)
    out = run(["dml", "search", "--experiment", PHOTOS, "--k", "6", "--json", *map(str, paths)], repo, env)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    expected = pair_scores(rows, vectors, protocol.metric, queries, results)
    for query, want, scores, answer in zip(queries, results, expected, found):
        hits = answer["results"]
        assert hits[0]["image_id"] == query and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert [h["image_id"] for h in hits[1:]] == want  # the query itself aside, as evaluate ranks
        np.testing.assert_allclose([h["score"] for h in hits[1:]], scores, atol=1e-5)
        assert answer["score"] == "cosine similarity"


def test_the_retriever_embeds_as_the_pipeline_and_ranks_by_hamming_with_flips(trained):
    repo, _ = trained
    rows, vectors, protocol, manifest = stored(repo, SKETCHES)
    assert protocol.flip and protocol.metric == "euclidean"
    retriever = Retriever.from_run(SKETCHES, index="hash32", project=repo)
    assert retriever.score_name == "hamming distance" and retriever.query_domain == "sketch"
    sketches = np.flatnonzero((rows.split == "test") & (rows.domain == "sketch"))[:6]
    images = pq.read_table(manifest, columns=["image_id", "image"]).to_pydict()
    by_id = dict(zip(images["image_id"], images["image"]))
    queries = retriever.embed([by_id[i] for i in rows.ids[sketches]])
    # the vectors the quantize stage coded: image and mirror averaged
    np.testing.assert_allclose(queries, code_vectors(vectors[sketches], "euclidean"), atol=1e-4)
    index, _ = load_index(repo / "indexes" / SKETCHES / "seed0" / "hash32.faiss")
    distances = (encode(index, queries)[:, None, :] != index_codes(index)[None]).sum(-1)
    gallery = list(rows.ids[gallery_indices(rows, protocol)])
    for hits, row in zip(retriever.search(queries, k=8), distances):
        assert [h.score for h in hits] == sorted(row)[:8]  # nearest codes first
        assert all(row[gallery.index(h.image_id)] == h.score for h in hits)
        assert all(h.name for h in hits)
    exact = Retriever.from_run(SKETCHES, project=repo)  # flat: euclidean distances
    hits = exact.search([by_id[rows.ids[sketches[0]]]], k=3)[0]
    flat = code_vectors(vectors, "euclidean")
    want = np.linalg.norm(flat[gallery_indices(rows, protocol)] - queries[0], axis=1)
    np.testing.assert_allclose([h.score for h in hits], np.sort(want)[:3], atol=1e-3)


def test_export_writes_an_onnx_model_that_embeds_as_pytorch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    repo, env = trained
    target = tmp_path / "models" / "dase.onnx"
    out = run(["dml", "export", "--experiment", SKETCHES, "--onnx", str(target)], repo, env)
    assert out.returncode == 0, out.stderr
    card = json.loads(target.with_suffix(".preprocess.json").read_text())
    assert card["inputs"] == ["images", "domain"] and card["flip_averaged"]
    assert card["check"]["max_abs_diff"] < 1e-4
    assert card["check"]["same_neighbours"] == card["check"]["rows"] == 64
    assert "largest absolute difference" in out.stdout
    from dml.onnx_export import onnx_embed, onnx_session

    retriever = Retriever.from_run(SKETCHES, project=repo)
    rows, _, _, manifest = stored(repo, SKETCHES)
    paths = write_images(manifest, list(rows.ids[:5]), tmp_path / "q")
    batch = retriever.images(paths)  # the preprocessing the card describes
    got = onnx_embed(onnx_session(target), batch.numpy(), np.zeros(5, dtype=np.int64))
    np.testing.assert_allclose(got, retriever.embed(paths, domain="sketch"), atol=1e-4)
    refused = run(["dml", "export", "--experiment", PHOTOS, "--onnx", str(tmp_path / "no.onnx"),
                   "--tolerance", "1e-12"], repo, env)
    assert refused.returncode == 2 and "above the tolerance" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("no*"))  # nothing written


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_search_errors_are_one_line_and_name_what_is_wrong(trained, tmp_path):
    repo, env = trained
    rows, _, _, manifest = stored(repo, PHOTOS)
    image = write_images(manifest, [rows.ids[0]], tmp_path)[0]

    def search(*args: str) -> str:
        return one_line_error(run(["dml", "search", *args], repo, env))

    assert "unknown experiment 'nope'; valid choices: tiny, tiny_dase" in search("--experiment", "nope", str(image))
    assert "no index 'opq8'; valid choices: flat, pq32" in search("--experiment", PHOTOS, "--index", "opq8", str(image))
    broken = tmp_path / "broken.png"
    broken.write_bytes(image.read_bytes()[:100])
    assert f"{broken}: truncated" in search("--experiment", PHOTOS, str(broken))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert f"{text}: not an image" in search("--experiment", PHOTOS, str(text))
    assert "seed 7 is not one of the project's seeds: 0" in search("--experiment", PHOTOS, "--seed", "7", str(image))
    models = repo / "models" / PHOTOS
    models.rename(repo / "models" / "aside")
    try:
        assert "'tiny' seed 0 was never trained here" in search("--experiment", PHOTOS, str(image))
    finally:
        (repo / "models" / "aside").rename(models)
    index = repo / "indexes" / PHOTOS / "seed0" / "pq32.faiss"
    original = index.read_bytes()
    index.write_bytes(original[:-8] + bytes(8))
    try:
        assert "is corrupt or was replaced" in search("--experiment", PHOTOS, "--index", "pq32", str(image))
    finally:
        index.write_bytes(original)
    out = run(["dml", "search", "--experiment", PHOTOS, "--index", "pq32", str(image)], repo, env)
    assert out.returncode == 0 and rows.ids[0] in out.stdout


@pytest.fixture
def page(trained):
    """The browse page of the project, served on a free port of 127.0.0.1."""
    import logging
    import threading

    from werkzeug.serving import make_server

    from dml.browse import create_app

    repo, _ = trained
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, create_app(repo, PHOTOS), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}", server.port
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser():
    """Debian's chromium, headless, driven through its chromedriver (`make test` installs both)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    driver.implicitly_wait(20)
    yield driver
    driver.quit()


def navigate(browser, element) -> None:
    """Click ``element`` and wait until the next page has loaded in place of this one: the
    old document carries a mark that the new one does not (an element of the old page can
    read as stale or as "not in the document" while the new one loads)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("window.dmlOldPage = true;")
    element.click()
    WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,)).until(
        lambda driver: driver.execute_script(
            "return window.dmlOldPage === undefined && document.readyState === 'complete';"))


def test_the_browse_page_queries_compares_uploads_and_serves_nothing_else(trained, page, browser, tmp_path):
    import http.client
    from urllib.parse import parse_qs, urlparse

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    repo, _ = trained
    base, port = page
    browser.get(base + "/")
    assert browser.title == f"dml browse: {PHOTOS}"
    sources = [e.get_attribute("src") for e in browser.find_elements(By.CSS_SELECTOR, "[src]")]
    sources += [e.get_attribute("href") for e in browser.find_elements(By.CSS_SELECTOR, "link, script")]
    assert all(s.startswith((base, "data:")) for s in sources)  # nothing loaded from outside
    # a test query: its top 10 in the exact index, each marked relevant or not
    navigate(browser, browser.find_element(By.CSS_SELECTOR, ".queries a"))
    figures = browser.find_elements(By.CSS_SELECTOR, ".pane figure")
    assert len(figures) == 10
    marks = [f.get_attribute("class") for f in figures]
    assert set(marks) <= {"hit", "miss"} and "hit" in marks
    query = parse_qs(urlparse(browser.current_url).query)["query"][0]
    shown = [img.get_attribute("alt") for img in browser.find_elements(By.CSS_SELECTOR, ".pane figure img")]
    assert query not in shown  # a test query is left out of its results, as evaluate ranks
    assert all(img.get_property("naturalWidth") > 0 for img in browser.find_elements(By.CSS_SELECTOR, "figure img"))
    # the same query in the PQ index, beside the other experiment
    Select(browser.find_element(By.NAME, "index")).select_by_visible_text("pq32")
    Select(browser.find_element(By.NAME, "compare")).select_by_visible_text(SKETCHES)
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form[method=get] button"))
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".pane h2")]
    assert headings == [f"{PHOTOS} · pq32", f"{SKETCHES} · flat"]
    # the worst queries, one click away, lowest average precision first
    navigate(browser, browser.find_element(By.ID, "worst"))
    aps = [float(td.text) for td in browser.find_elements(By.CSS_SELECTOR, "tr td:last-child")]
    assert aps and aps == sorted(aps)
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "a.worst-query"))
    assert browser.find_elements(By.CSS_SELECTOR, ".pane figure.miss")
    # an upload: the image embedded with the run's preprocessing, its results shown
    rows, _, _, manifest = stored(repo, PHOTOS)
    image = write_images(manifest, [rows.ids[0]], tmp_path)[0]
    browser.find_element(By.NAME, "image").send_keys(str(image))
    navigate(browser, browser.find_element(By.ID, "upload"))
    assert browser.find_element(By.CSS_SELECTOR, ".query img").get_attribute("src").startswith("data:image/png")
    first = browser.find_element(By.CSS_SELECTOR, ".pane figure img").get_attribute("alt")
    assert first == rows.ids[0]
    # a file that is not an image, and one over the size limit, are refused with a message
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    browser.find_element(By.NAME, "image").send_keys(str(text))
    navigate(browser, browser.find_element(By.ID, "upload"))
    assert "not an image" in browser.find_element(By.CSS_SELECTOR, ".error").text
    big = tmp_path / "big.png"
    big.write_bytes(image.read_bytes() + bytes(9 * 1024 * 1024))
    browser.find_element(By.NAME, "image").send_keys(str(big))
    navigate(browser, browser.find_element(By.ID, "upload"))
    assert "larger than 8 MiB" in browser.find_element(By.CSS_SELECTOR, ".error").text
    # no file outside the project is served, however the path is spelled
    for path in ("/image/tiny/../../../../etc/passwd", "/image/tiny/..%2f..%2f..%2fetc%2fpasswd",
                 "/../../etc/passwd", "/static/../../etc/passwd"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path)
        answer = connection.getresponse()
        assert answer.status == 404 and b"root:" not in answer.read(), path
        connection.close()
    browser.get(base + "/image/tiny/..%2f..%2f..%2f..%2fetc%2fpasswd")
    assert "root:" not in browser.page_source
