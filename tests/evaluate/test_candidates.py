"""The approximate candidate stage (dml.evaluate.candidates), with real faiss indexes: an
exhaustive index gives the exact figures and a measured recall of 1; a coarse one reports
its recall below 1; self-matches, views and any relevance stay right; whole-ranking figures
and bad keys are refused naming ``evaluate.candidates``; the evaluate stage's output says
the ranking was approximate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dml.config import parse_params
from dml.errors import ConfigError
from dml.evaluate import retrieval_metrics
from dml.evaluate.candidates import Candidates, CandidateSearch
from dml.evaluate.experiment import evaluate_test_split
from dml.evaluate.geometry import block_scores, gathered_scores, prepare_embeddings
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.report.columns import approximate_note, summary_metrics
from dml.report.comparison import comparison_table

TOP = {"ks": (1, 2, 4, 8), "precision_ks": (5,), "map_ks": (10,), "asi": True, "nmi": False, "full_map": False}


def clustered(n: int = 600, classes: int = 20, dim: int = 16, seed: int = 0,
              noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, dim))[labels] + noise * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def approximate(*args, candidates: Candidates, **kwargs) -> tuple[dict[str, float], dict]:
    ranking: dict = {}
    return retrieval_metrics(*args, candidates=candidates, ranking=ranking, **kwargs), ranking


@pytest.mark.parametrize(("index", "nprobe"), [("Flat", None), ("IVF16,Flat", 16)])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_an_exhaustive_index_gives_the_exact_figures_and_full_recall(index, nprobe, metric):
    x, y = clustered()
    exact_per_query: dict = {}
    exact = retrieval_metrics(x, y, metric=metric, per_query=exact_per_query, **TOP)
    per_query: dict = {}
    got, ranking = approximate(x, y, metric=metric, per_query=per_query,
                               candidates=Candidates(index=index, nprobe=nprobe, k=64), **TOP)
    assert got == exact
    assert all(np.array_equal(per_query[k], exact_per_query[k], equal_nan=True) for k in exact_per_query)
    assert ranking == {"kind": "approximate", "index": index, "nprobe": nprobe, "candidates": 64,
                       "recall_queries": 600, "recall@10": 1.0, "recall@64": 1.0}


def test_a_separate_gallery_leaves_each_query_s_own_item_out():
    """Queries that are also gallery items ("both") never find themselves: an exact duplicate
    of every query sits in the gallery, and the figures still equal the exact ones."""
    x, y = clustered(400)
    gallery, gallery_labels = x[100:], y[100:]
    queries, query_labels = x[:150], y[:150]
    own = np.where(np.arange(150) >= 100, np.arange(150) - 100, -1)  # queries 100.. are gallery rows 0..
    exact = retrieval_metrics(queries, query_labels, gallery, gallery_labels, query_gallery_index=own, **TOP)
    got, ranking = approximate(queries, query_labels, gallery, gallery_labels, query_gallery_index=own,
                               candidates=Candidates(index="IVF8,Flat", nprobe=8, k=32), **TOP)
    assert got == exact and ranking["recall@32"] == 1.0
    search = CandidateSearch(Candidates(index="Flat", k=5), prepare_embeddings(torch.from_numpy(gallery), "cosine"),
                             "cosine")
    found = search.fetch(prepare_embeddings(torch.from_numpy(queries), "cosine"), torch.from_numpy(own))
    assert not (found == torch.from_numpy(own)[:, None]).any()  # its own item is no candidate ...
    assert (found[100:, 0] != torch.from_numpy(own[100:])).all()  # ... though it scores highest


def test_a_coarse_index_reports_its_recall_below_one():
    x, y = clustered(2000, classes=40, dim=16, noise=1.0)
    exact = retrieval_metrics(x, y, **TOP)
    got, ranking = approximate(x, y, candidates=Candidates(index="IVF32,Flat", nprobe=1, k=20, recall_sample=300),
                               **TOP)
    assert ranking["kind"] == "approximate" and ranking["recall_queries"] == 300
    assert 0.0 < ranking["recall@20"] < 1.0 and 0.0 < ranking["recall@10"] < 1.0
    assert set(got) == set(exact)
    again = approximate(x, y, candidates=Candidates(index="IVF32,Flat", nprobe=1, k=20, recall_sample=300), **TOP)
    assert again == (got, ranking)  # seeded: the same index, sample and figures


def test_views_score_as_their_nearest_pair():
    """Image and mirror of every row ([N, 2, D]): each view is indexed and searched, an item
    scores as its nearest pair of views, as the exact path scores it."""
    x, y = clustered(300)
    mirror = x + 0.3 * np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    views = np.stack([x, mirror], axis=1)
    for metric in ("cosine", "euclidean"):
        exact = retrieval_metrics(views, y, metric=metric, **TOP)
        got, ranking = approximate(views, y, metric=metric, candidates=Candidates(index="Flat", k=40), **TOP)
        assert got == exact and ranking["recall@40"] == 1.0
    q = prepare_embeddings(torch.from_numpy(views[:5]), "euclidean")
    g = prepare_embeddings(torch.from_numpy(views[5:20]), "euclidean")
    torch.testing.assert_close(gathered_scores(q, g.expand(5, -1, -1, -1), "euclidean"),
                               block_scores(q, g, "euclidean"))


def test_multi_label_relevance_and_label_sets_are_ranked_right():
    x, y = clustered(500)
    coarse = y // 5
    labels, gallery_labels = {"fine": y, "coarse": coarse}, None
    exact = retrieval_metrics(x, labels, gallery_labels, **TOP)
    got, _ = approximate(x, labels, gallery_labels, candidates=Candidates(index="Flat", k=200), **TOP)
    assert got == exact and "coarse/map@r" in got
    tags = np.random.default_rng(2).random((500, 6)) < 0.3  # multi-label: shares a tag
    queries, gallery = x[:100], x[100:]
    relevance = (tags[:100].astype(int) @ tags[100:].T.astype(int)) > 0
    exact = retrieval_metrics(queries, gallery=gallery, relevance=relevance, **TOP)
    got, _ = approximate(queries, gallery=gallery, relevance=relevance,
                         candidates=Candidates(index="Flat", k=400), **TOP)
    assert got == pytest.approx(exact, abs=1e-12)


def test_figures_over_the_whole_ranking_are_refused():
    x, y = clustered(200)
    flat = Candidates(index="Flat", k=16)
    with pytest.raises(ConfigError, match=r"^evaluate\.candidates: map need\(s\) every query's full ranking"):
        retrieval_metrics(x, y, nmi=False, candidates=flat)  # full_map: the average precision over all
    grades = np.random.default_rng(0).random((200, 200))
    with pytest.raises(ConfigError, match=r"^evaluate\.candidates: ndcg@10"):
        retrieval_metrics(x, y, grades=grades, ndcg_ks=(10,), full_map=False, nmi=False, candidates=flat)
    with pytest.raises(ConfigError, match=r"^evaluate\.candidates\.k: 16 candidates .* top 32"):
        retrieval_metrics(x, y, ks=(1, 32), full_map=False, nmi=False, candidates=flat)
    for spec, title in (({"name": "multilabel"}, "mAP"), ({"name": "cross_domain"}, "mAP"),
                        ({"name": "per_scale"}, "avg mAP")):
        with pytest.raises(ConfigError, match=rf"^evaluate\.candidates: protocol \w+ reports {title}"):
            build_protocol(spec).check_candidates(flat)


def test_a_protocol_without_whole_ranking_figures_is_ranked_approximately():
    x, y = clustered(200)
    rows = _rows(y)
    protocol = build_protocol({"name": "self_retrieval"})
    exact = protocol.evaluate(rows, x, ks=(1, 2), nmi=False)
    ranking: dict = {}
    got = protocol.evaluate(rows, x, ks=(1, 2), nmi=False, candidates=Candidates(index="Flat", k=32), ranking=ranking)
    assert got == {k: v for k, v in exact.items() if k != "map"}  # the whole-ranking mAP is left out
    assert ranking["omitted"] == ["map"] and ranking["recall@32"] == 1.0


@pytest.mark.parametrize(("raw", "key"), [
    ({"nprobes": 4}, "evaluate.candidates.nprobes: unknown key"),
    ({"k": 0}, "evaluate.candidates.k: "),
    ({"k": 4}, "evaluate.candidates: k: 4 candidates per query cannot rank recall@8"),
    ({"nprobe": 0}, "evaluate.candidates.nprobe: "),
])
def test_a_bad_key_is_one_line_naming_it(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_params({"evaluate": {"candidates": raw}})
    assert key in str(err.value) and "\n" not in str(err.value)
    assert parse_params({"evaluate": {"candidates": None}}).evaluate.candidates is None  # the default: exact
    assert parse_params({}).evaluate.candidates is None


@pytest.mark.parametrize(("spec", "key"), [
    (Candidates(index="IVFx,Flat"), "evaluate.candidates.index: faiss cannot build 'IVFx,Flat'"),
    (Candidates(index="HNSW16", nprobe=4), "evaluate.candidates.nprobe: index 'HNSW16' has no inverted lists"),
    (Candidates(index="IVF16,Flat", ef_search=4), "evaluate.candidates.ef_search: index 'IVF16,Flat' is not"),
    (Candidates(index="IVF512,Flat"), "evaluate.candidates.index: 'IVF512,Flat' has 512 inverted lists"),
])
def test_an_index_that_does_not_fit_names_its_key(spec, key):
    x, y = clustered(200)
    with pytest.raises(ConfigError) as err:
        retrieval_metrics(x, y, nmi=False, full_map=False, candidates=spec)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def _rows(labels: np.ndarray) -> EvalRows:
    n = len(labels)
    return EvalRows(ids=np.array([f"r{i}" for i in range(n)], dtype=object), split=np.full(n, "test", dtype=object),
                    role=np.full(n, "both", dtype=object), domain=np.full(n, "photo", dtype=object),
                    labels={"fine": labels})


def test_the_evaluate_stage_output_says_the_ranking_was_approximate():
    """What pipelines/evaluate.py writes: the evaluation (``ranking`` block), its summary
    (``candidate_recall@<d>``), and the report's table marks the run with its recall."""
    x, y = clustered(300)
    rows, protocol = _rows(y), build_protocol({"name": "self_retrieval"})
    candidates = Candidates(index="IVF8,Flat", nprobe=2, k=16, recall_sample=100)
    report = evaluate_test_split(rows, x, protocol, {}, ks=(1, 2, 4, 8), candidates=candidates)
    ranking = report["ranking"]
    assert ranking["kind"] == "approximate" and ranking["index"] == "IVF8,Flat" and ranking["nprobe"] == 2
    assert ranking["candidates"] == 16 and ranking["recall_queries"] == 100 and ranking["omitted"] == ["map"]
    assert 0.0 < ranking["recall@8"] <= 1.0 and 0.0 < ranking["recall@16"] <= 1.0
    assert "map" not in report["float"]
    summary = summary_metrics({**report, "protocol": {"name": "self_retrieval"}})
    assert summary["candidate_recall@8"] == round(ranking["recall@8"], 4) and "recall@1" in summary
    note = approximate_note(report)
    assert note is not None and "IVF8,Flat (nprobe 2)" in note and "recall@8" in note
    table = comparison_table({"m": {0: {**report, "experiment": "m", "dataset": "d", "loss": "l"}}})
    assert "| m ≈ |" in table and "≈ ranked approximately: m: 16 candidates per query" in table
    exact = evaluate_test_split(rows, x, protocol, {}, ks=(1, 2, 4, 8))
    assert exact["ranking"] == {"kind": "exact"} and approximate_note(exact) is None
    assert not any(k.startswith("candidate_") for k in summary_metrics(exact))
    assert "≈" not in comparison_table({"m": {0: {**exact, "experiment": "m", "dataset": "d", "loss": "l"}}})


def test_the_check_stage_refuses_candidates_for_a_whole_ranking_protocol():
    """``dml.checks.check_params``: before any compute, the index builds over each experiment's
    embeddings and each protocol can be ranked from candidates, else the key is named."""
    from dml.checks import check_params

    raw = {"datasets": {"shapes": {}}, "experiments": {"a": {"dataset": "shapes", "loss": {"name": "contrastive"}}},
           "evaluate": {"candidates": {"index": "IVF64,Flat", "nprobe": 8, "k": 100}}}
    assert check_params(parse_params(raw)).evaluate.candidates.nprobe == 8
    raw["evaluate"]["candidates"]["index"] = "HNSW32"
    with pytest.raises(ConfigError, match=r"^experiments\.a: evaluate\.candidates\.nprobe: index 'HNSW32'"):
        check_params(parse_params(raw))
    raw["evaluate"]["candidates"] = {"index": "Flat"}
    raw["experiments"]["a"]["protocol"] = {"name": "multilabel"}
    with pytest.raises(ConfigError, match=r"^experiments\.a: evaluate\.candidates: protocol MultiLabel reports mAP"):
        check_params(parse_params(raw))


def test_the_seen_unseen_samples_say_how_they_were_ranked():
    """The gap's samples are ranked from candidates too, and exactly (saying so) where a
    sample has fewer vectors than the index has inverted lists."""
    labels = np.repeat(np.arange(10), 20)
    train = labels < 5
    rows = EvalRows(ids=np.array([f"i{n}" for n in range(200)], dtype=object),
                    split=np.where(train, "train", "test").astype(object), role=np.full(200, "both", dtype=object),
                    domain=np.full(200, "photo", dtype=object), labels={"fine": labels},
                    fold=np.where(train, labels % 3, -1))
    x, _ = clustered(200)
    protocol = build_protocol({"name": "self_retrieval"})
    for index, kind in (("IVF4,Flat", "approximate"), ("IVF64,Flat", "exact")):  # samples of 60 images
        report = evaluate_test_split(rows, x, protocol, {}, ks=(1,), held_out_folds=[0],
                                     candidates=Candidates(index=index, nprobe=4, k=16))
        assert report["ranking"]["kind"] == "approximate"
        assert report["gap"]["seen"]["ranking"]["kind"] == report["gap"]["unseen"]["ranking"]["kind"] == kind
