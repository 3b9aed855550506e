"""benchmarks/peer_pml.py: PML's plain loop on a pipeline's data folder, scored by the
project's evaluation.

The PML runs go in a subprocess: importing ``pytorch_metric_learning.losses`` patches faiss
process-wide (``faiss.contrib.torch_utils``), which must not leak into the rest of the suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import peer_pml  # benchmarks/ is on sys.path: tests/benchmarks/conftest.py

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "multi_similarity"
DATASET = "tiny"
#: 8 classes of 8 images at 32 px: 4 training classes, 32 training rows
OPTIONS = {"seed": 0, "image_size": 32, "families": 2, "types_per_family": 2, "classes_per_type": 2,
           "images_per_class": 8}
PARAMS = {
    "datasets": {DATASET: {"source": "synthetic", "options": OPTIONS,
                           "split": {"method": "random", "test_fraction": 0.5, "num_folds": 2, "seed": 0}}},
    "model": {"backbone": "small_cnn", "backbone_options": {"width": 8, "depth": 2}, "weights": None,
              "embed_dim": 8, "image_size": 32},
    # batch 64 with m 4 needs 16 classes: PML's sampler is served 4 x 4 = 16
    "train": {"epochs": 1, "batch_size": 64, "sampler": {"name": "m_per_class", "m": 4}, "augment": [],
              "lr": 1e-3, "weight_decay": 1e-4, "freeze": 0},
    "evaluate": {"ks": [1, 2]},
    "experiments": {EXPERIMENT: {"dataset": DATASET,
                                 "loss": {"name": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5,
                                          "epsilon": 0.1}}},
}

#: Run in a fresh interpreter: the CLI twice on seed 0 (determinism), the trained model
#: against the project's initial one, and the test vectors for a re-evaluation without PML.
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import peer_pml
    pml_on_import = "pytorch_metric_learning" in sys.modules
    from dml.config import load_params
    from dml.evaluate.experiment import evaluate_test_split
    from dml.evaluate.protocols import EvalRows, build_protocol
    from dml.train.launch import initial_model

    params_path, project, work = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    experiment, data_dir = sys.argv[5], Path(sys.argv[3]) / "data" / sys.argv[6]
    peer_pml.main(["--params", str(params_path), "--project", str(project), "--experiment", experiment,
                   "--seeds", "0", "0", "--scratch", "--out", str(work / "results.json")])
    params = load_params(params_path)
    spec = peer_pml.peer_spec(params, experiment, seed=0, pretrained=False)
    data = peer_pml.data_files(data_dir)
    start = {k: v.clone() for k, v in initial_model(spec, data)[0].state_dict().items()}
    untrained = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 0})})
    zero = peer_pml.train_peer(untrained, experiment, data_dir=data_dir, seed=0, pretrained=False).state_dict()
    model = peer_pml.train_peer(params, experiment, data_dir=data_dir, seed=0, pretrained=False)
    trained = model.state_dict()
    dataset = peer_pml.test_set(spec, data)
    vectors = peer_pml.embedded(model, dataset, spec.protocol)
    report = evaluate_test_split(EvalRows.from_rows(dataset.rows), vectors, build_protocol(spec.protocol), {},
                                 ks=tuple(params.evaluate.ks), seed=0)
    np.save(work / "vectors.npy", vectors)
    params_of = dict(model.named_parameters())
    print(json.dumps({
        "pml_on_import": pml_on_import,
        "same_start": sorted(k for k in start if not (start[k] == zero[k]).all()),
        "parameters": sorted(params_of),
        "unchanged": sorted(k for k in params_of if (start[k] == trained[k]).all()),
        "float": report["float"],
    }))
""")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder as the pipeline leaves it: params.yaml and data/<dataset>/ with the
    manifest and splits the ingest and preprocess stages write."""
    from dml.data.ingest import ingest
    from dml.data.splits import make_splits, write_splits

    root = tmp_path_factory.mktemp("peer")
    data = root / "data" / DATASET
    ingest("synthetic", OPTIONS, data / "manifest.parquet", where=f"datasets.{DATASET}")
    split = PARAMS["datasets"][DATASET]["split"]
    write_splits(make_splits(pq.read_table(data / "manifest.parquet"), test_fraction=split["test_fraction"],
                             num_folds=split["num_folds"], seed=split["seed"], method=split["method"]),
                 data / "splits.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


@pytest.fixture(scope="module")
def outcome(project: Path) -> dict:
    """What the subprocess found, plus the results file the CLI wrote."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO / "benchmarks"), str(project / "params.yaml"), str(project),
         str(project), EXPERIMENT, DATASET],
        check=False, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return {**json.loads(lines[-1]), "printed": lines[:-1],
            "results": json.loads((project / "results.json").read_text())}


@pytest.mark.parametrize(("batch", "m", "classes", "expected"), [
    (64, 4, 100, 64),   # the classes fill the batch
    (64, 4, 16, 64),    # exactly
    (64, 4, 10, 40),    # too few classes: m of each
    (66, 4, 100, 64),   # rounded down to a multiple of m
    (64, 8, 3, 24),
    (4, 4, 1, 4),
])
def test_peer_batch_size(batch: int, m: int, classes: int, expected: int) -> None:
    size = peer_pml.peer_batch_size(batch, m, classes)
    assert size == expected
    assert size % m == 0 and size <= m * classes and size <= batch


@pytest.mark.parametrize(("batch", "m", "classes"), [(3, 4, 10), (64, 4, 0), (64, 0, 10)])
def test_peer_batch_size_refuses_what_no_sampler_serves(batch: int, m: int, classes: int) -> None:
    with pytest.raises(ValueError):
        peer_pml.peer_batch_size(batch, m, classes)


def test_only_multi_similarity_with_m_per_class(project: Path) -> None:
    from dml.config import Component, load_params
    from dml.errors import ConfigError

    params = load_params(project / "params.yaml")
    with pytest.raises(ConfigError, match="pretrained"):
        peer_pml.peer_spec(params, EXPERIMENT, seed=0, pretrained=True)  # weights: null
    other = params.model_copy(update={"train": params.train.model_copy(
        update={"sampler": Component(name="random")})})
    with pytest.raises(ConfigError, match="m_per_class"):
        peer_pml.peer_spec(other, EXPERIMENT, seed=0, pretrained=False)


def test_cli_runs_are_finite_deterministic_and_written(outcome: dict) -> None:
    results = outcome["results"]
    assert results["library"] == "pytorch-metric-learning" and results["pretrained"] is False
    assert results["recipe"]["batch_size"] == {"asked": 64, "served": 16}
    assert results["recipe"]["train_rows"] == 32 and results["recipe"]["train_classes"] == 4
    first, second = results["runs"]
    for run in (first, second):
        assert set(run) == {"seed", "map@r", "recall@1", "seconds"}
        for key in ("map@r", "recall@1"):
            assert math.isfinite(run[key]) and 0.0 <= run[key] <= 1.0
        assert run["seconds"] > 0
    assert {k: first[k] for k in ("map@r", "recall@1")} == {k: second[k] for k in ("map@r", "recall@1")}
    assert len(outcome["printed"]) >= 2 and "seed 0" in outcome["printed"][0]


def test_pml_is_imported_only_when_training(outcome: dict) -> None:
    assert outcome["pml_on_import"] is False


def test_starts_from_the_projects_initial_weights_and_trains_everything(outcome: dict) -> None:
    assert outcome["same_start"] == []  # 0 epochs: the project's initial model, weight for weight
    assert any(name.startswith("trunk.") for name in outcome["parameters"])
    assert outcome["unchanged"] == []  # every parameter, trunk and head, moved


def test_scores_match_an_evaluation_without_pml(outcome: dict, project: Path) -> None:
    """The figures evaluated after PML's import equal those of this process (no PML: faiss
    unpatched) on the same vectors, NMI's faiss k-means included."""
    from dml.config import load_params
    from dml.evaluate.experiment import evaluate_test_split
    from dml.evaluate.protocols import EvalRows, build_protocol

    params = load_params(project / "params.yaml")
    spec = peer_pml.peer_spec(params, EXPERIMENT, seed=0, pretrained=False)
    dataset = peer_pml.test_set(spec, peer_pml.data_files(project / "data" / DATASET))
    vectors = np.load(project / "vectors.npy")
    report = evaluate_test_split(EvalRows.from_rows(dataset.rows), vectors, build_protocol(spec.protocol), {},
                                 ks=(1, 2), seed=0)
    assert "nmi" in report["float"]
    assert report["float"] == pytest.approx(outcome["float"], nan_ok=True)
