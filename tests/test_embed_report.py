"""embeddings.parquet contract, test-split evaluation over indexes, and the comparison table."""

import dataclasses

import numpy as np
import pytest

from dml.embed import head_output, read_embeddings, write_embeddings
from dml.errors import DataError
from dml.evaluate.experiment import evaluate_test_split, grid_examples
from dml.evaluate.metrics import attribute_average_precision
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.index import build_index
from dml.report.comparison import comparison_table
from dml.stats import paired_difference, t_interval


def rows_of(columns) -> EvalRows:
    return EvalRows(ids=np.asarray(columns["image_id"], dtype=object), split=np.asarray(columns["split"], dtype=object),
                    role=np.asarray(columns["role"], dtype=object), domain=np.asarray(columns["domain"], dtype=object),
                    labels={"fine": np.asarray(columns["label"])})


def toy(n_per_class=6, classes=5, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    x = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    split = np.where(labels < 2, "train", "test")
    columns = {
        "image_id": [f"img{i}" for i in range(len(labels))],
        "split": list(split),
        "role": ["both"] * len(labels),
        "domain": ["photo"] * len(labels),
        "label": labels,
    }
    return columns, x.astype(np.float32)


def test_embeddings_round_trip_and_wrong_size(tmp_path):
    columns, x = toy()
    path = tmp_path / "e.parquet"
    write_embeddings(path, columns, x, model_hash="abc")
    table, vectors, meta = read_embeddings(path, expected_dim=16)
    np.testing.assert_array_equal(vectors, x)
    assert table.column("image_id").to_pylist() == columns["image_id"]
    assert meta == {"embed_dim": 16, "model_sha256": "abc", "normalized": True, "heads": [], "views": []}
    assert head_output(table, "attributes") is None
    with pytest.raises(DataError, match=r"e.parquet: embedding size 16 does not match the expected 32"):
        read_embeddings(path, expected_dim=32)
    with pytest.raises(DataError, match="column 'label' has 3 rows"):
        write_embeddings(tmp_path / "f.parquet", columns | {"label": [0, 1, 2]}, x, model_hash="x")
    assert not (tmp_path / "f.parquet").exists()


def test_head_outputs_round_trip(tmp_path):
    columns, x = toy()
    logits = np.arange(len(x) * 3, dtype=np.float32).reshape(-1, 3)
    write_embeddings(tmp_path / "e.parquet", columns, x, model_hash="abc", heads={"attributes": logits})
    table, vectors, meta = read_embeddings(tmp_path / "e.parquet")
    assert meta["heads"] == ["attributes"]
    np.testing.assert_array_equal(head_output(table, "attributes"), logits)
    np.testing.assert_array_equal(vectors, x)


def test_test_split_evaluation_float_equals_exact_index():
    columns, x = toy(n_per_class=60, classes=8)
    test = np.asarray(columns["split"]) == "test"
    indexes = {}
    for kind, bits in (("flat", None), ("pq", 32)):
        index = build_index(np.ascontiguousarray(x[test]), kind, bits=bits, seed=0)
        indexes[kind if bits is None else f"{kind}{bits}"] = index
    report = evaluate_test_split(rows_of(columns), x, build_protocol({"name": "self_retrieval"}), indexes, ks=(1, 2))
    assert report["queries"] == int(test.sum())
    for key in ("recall@1", "recall@2", "map@r", "map"):
        assert report["exact_index"][key] == pytest.approx(report["float"][key], abs=1e-6)
    assert report["quantized"]["pq32"]["bytes_per_vector"] == 4
    assert report["bytes_per_vector"] == 64
    low, high = report["float_bootstrap_ci"]["map@r"]  # one run's interval over its queries
    assert low <= report["float"]["map@r"] <= high and set(report["float_bootstrap_ci"]) >= {"recall@1", "map"}


def test_attribute_head_is_scored_per_attribute_on_the_test_rows():
    columns, x = toy(n_per_class=4, classes=4)  # classes 2 and 3 are the 8 test rows
    n = len(x)
    rng = np.random.default_rng(3)
    attributes = (rng.random((n, 3)) < 0.5).astype(np.float32)
    attributes[:, 2] = 0  # no positive anywhere: AP undefined
    known = np.ones((n, 3), dtype=bool)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    logits[:, 0] = np.where(attributes[:, 0] > 0, 5.0, -5.0)  # a perfect attribute
    known[-1, 1] = False  # an unknown label is left out, whatever its score
    logits[-1, 1] = 100.0
    rows = dataclasses.replace(rows_of(columns), attributes=attributes, attribute_known=known)
    report = evaluate_test_split(rows, x, build_protocol({"name": "self_retrieval"}), {},
                                 attribute_logits=logits, attribute_names=["a", "b", "c"])
    test = np.asarray(columns["split"]) == "test"
    keep = known[test, 1]
    expected_b = attribute_average_precision(logits[test][keep][:, [1]], attributes[test][keep][:, [1]])[0]
    assert report["attributes"] == {"a": 1.0, "b": pytest.approx(expected_b), "c": None}
    assert report["float"]["attributes/map"] == pytest.approx((1.0 + expected_b) / 2)
    # the table shows it beside the retrieval metrics
    table = comparison_table({"m": {0: {**report, "experiment": "m", "dataset": "d"}}})
    assert "attributes mAP" in table


def test_grid_examples_exclude_the_query_itself():
    columns, x = toy()
    queries, results, correct = grid_examples(rows_of(columns), x, build_protocol({"name": "self_retrieval"}), 3, 4)
    assert len(queries) == 3 and all(len(r) == 4 for r in results)
    assert all(q not in row for q, row in zip(queries, results))
    assert correct.shape == (3, 4) and correct.mean() > 0.8


def test_comparison_table_has_one_row_per_experiment():
    metrics = {"recall@1": 0.5, "recall@2": 0.6, "recall@4": 0.7, "recall@8": 0.8, "map@r": 0.2,
               "r_precision": 0.3, "map": 0.25, "nmi": 0.4}
    results = {
        name: {0: {"loss": name, "float": metrics, "bytes_per_vector": 256, "backbone": "small_cnn",
                   "embed_dim": 64, "image_size": 32, "split": "test", "queries": 10,
                   "quantized": {"pq32": metrics | {"bytes_per_vector": 4}}}}
        for name in ("b", "a")
    }
    table = comparison_table(results)
    lines = [line for line in table.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert lines[0].startswith("| a | a | 1 | 50.0 | 60.0 | 70.0 | 80.0 | 20.0 | 30.0 | 25.0 | 40.0 | 256 | 50.0 / 20.0 (4) |")
    assert len(lines) == 2 + 4  # main rows, then float + pq32 detail rows per experiment
    assert "Against the baseline" not in table
    one_run = {"a": {0: {"loss": "a", "float": {"recall@1": 0.5}, "float_bootstrap_ci": {"recall@1": [0.46, 0.54]}}}}
    assert "| a | a | 1 | 50.0 ± 4.0ᵇ |" in comparison_table(one_run)


def test_seeds_give_intervals_and_a_named_baseline_a_paired_difference():
    def run(r1: float) -> dict:
        return {"loss": "x", "float": {"recall@1": r1, "map@r": r1 / 2}}

    results = {"base": {0: run(0.40), 1: run(0.45), 2: run(0.35)},
               "method": {0: run(0.411), 1: run(0.459), 2: run(0.36)},
               "other": {0: run(0.30), 1: run(0.60), 2: run(0.40)}}
    table = comparison_table(results, {"method": "base", "other": "base"})
    base_row = next(line for line in table.splitlines() if line.startswith("| base |"))
    ci = t_interval([0.40, 0.45, 0.35])
    assert f"| 3 | {100 * ci.mean:.1f} ± {100 * ci.half_width:.1f} |" in base_row
    method = next(line for line in table.splitlines() if line.startswith("| method | base |"))
    diff = paired_difference({0: 0.411, 1: 0.459, 2: 0.36}, {0: 0.40, 1: 0.45, 2: 0.35})
    assert f"+{100 * diff.mean:.1f} ± {100 * diff.half_width:.1f} *" in method  # excludes zero: marked
    other = next(line for line in table.splitlines() if line.startswith("| other | base |"))
    assert "*" not in other  # a noisy difference is shown, unmarked

def test_per_scale_sections_show_each_scale_finest_first_and_compare_the_averages():
    """Scales keep the protocol's order (fine, middle, coarse, then avg) although metrics files
    sort their keys, each shows R@1, mAP and ASI, and the paired differences are the averages'."""
    def run(shift: float) -> dict:
        floats = {f"{s}/{m}": v + shift for s, v in (("fine", 0.2), ("middle", 0.3), ("coarse", 0.4), ("avg", 0.3))
                  for m in ("recall@1", "map@r", "map", "asi", "r_precision")}
        return {"loss": "csl", "protocol": {"name": "per_scale"}, "prefixes": ["fine", "middle", "coarse", "avg"],
                "float": dict(sorted(floats.items()))}

    table = comparison_table({"csl": {0: run(0.02)}, "fine_only": {0: run(0.0)}}, {"csl": "fine_only"})
    header = next(line for line in table.splitlines() if line.startswith("| experiment | loss |"))
    assert header.startswith("| experiment | loss | seeds | fine R@1 | fine mAP | fine ASI | middle R@1 | "
                             "middle mAP | middle ASI | coarse R@1 | coarse mAP | coarse ASI | avg R@1 | "
                             "avg mAP | avg ASI |")
    assert "| experiment | baseline | Δ avg R@1 | Δ avg mAP | Δ avg ASI |" in table
    assert "| csl | fine_only | +2.0 (1 seed) | +2.0 (1 seed) | +2.0 (1 seed) |" in table


def test_several_baselines_and_a_cross_domain_headline():
    """A method compared with each of its baselines (one row each); a protocol with P@K is
    headed, and compared, by mAP and that P@K (its declared headline)."""
    def run(value: float) -> dict:
        return {"loss": "x", "protocol": {"name": "cross_domain", "precision_ks": [40]}, "float": {"recall@1": value, "precision@40": value / 2, "map": value / 4,
                                       "map@r": value / 8},
                "quantized": {"hash32": {"recall@1": value, "precision@40": 0.1, "map": 0.2,
                                         "bytes_per_vector": 4}}}

    results = {name: {0: run(v)} for name, v in (("dase_mems", 0.4), ("se_mems", 0.2), ("plain", 0.3))}
    table = comparison_table(results, {"dase_mems": ["se_mems", "plain"]})
    assert "| experiment | baseline | Δ mAP | Δ P@40 | Δ R@1 |" in table
    assert "| dase_mems | se_mems | +5.0 (1 seed) | +10.0 (1 seed) | +20.0 (1 seed) |" in table
    assert "| dase_mems | plain | +2.5 (1 seed) | +5.0 (1 seed) | +10.0 (1 seed) |" in table
    assert "hash32 mAP / P@40 (B/vec)" in table and "| 20.0 / 10.0 (4) |" in table


def test_extract_embeds_the_mirrored_images_as_the_flip_view():
    import torch

    from dml.embed import extract
    from dml.models import EmbeddingModel

    class Rows(torch.nn.Module):
        """A trunk that keeps the first row of pixels: the mirror reverses it."""
        out_dim = 4
        accepts_condition = False

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images[:, 0, 0, :4]

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int):
            return torch.arange(4.0).repeat(3, 4, 1) + i, i

        def collate(self, items):
            from dml.batch import Batch
            return Batch(images=torch.stack([x for x, _ in items]),
                         index=torch.tensor([i for _, i in items]))

    model = EmbeddingModel(Rows(), embed_dim=None)
    plain, _ = extract(model, Images(), normalize=False)
    mirrored, _ = extract(model, Images(), normalize=False, flip=True)
    assert plain[0].tolist() == [0, 1, 2, 3] and mirrored[0].tolist() == [3, 2, 1, 0]
