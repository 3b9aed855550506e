"""The real pipeline: `dvc repro` of a tiny configuration in a temporary git repository,
run, re-run, changed, swept, interrupted and resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from dml.train.export import load_model

from .processes import kill_when, processes_with_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.dvc, pytest.mark.ray, pytest.mark.slow]


TINY_OPTIONS = {"root": "dml/data/synthetic", "seed": 0, "image_size": 32, "families": 2, "types_per_family": 2, "classes_per_type": 3,
                "images_per_class": 45}


#: The experiments of the tiny pipeline: one per dataset, and DASE + MEMS on the sketches.
EXPERIMENTS = ("tiny", "tiny_sketch", "tiny_dase", "tiny_scenes")


def tiny_params() -> dict:
    """Three datasets (photos; photos with their sketches; multi-object scenes), an
    experiment on each."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    shapes = raw["datasets"]["shapes"]
    shapes["options"] = dict(TINY_OPTIONS)
    shapes["split"]["num_folds"] = 3  # 6 training classes: 2 validated, 4 trained on
    # the sketches' category-level split: 3 query sketches of each class against every photo,
    # ranked by the nearest of image and mirror
    sketches = {**shapes, "options": {**TINY_OPTIONS, "images_per_class": 24, "domains": ["photo", "sketch"]},
                "split": {"method": "held_out_queries", "queries_per_class": 3, "num_folds": 3, "seed": 0},
                "protocol": {"name": "cross_domain", "query_domain": "sketch", "gallery_domain": "photo",
                             "precision_ks": [10], "flip": True}}
    scenes = {**raw["datasets"]["scenes"], "options": {**TINY_OPTIONS, "view": "scenes", "scenes": 90}}
    raw["datasets"] = {"shapes": shapes, "sketches": sketches, "scenes": scenes}
    raw["model"]["embed_dim"] = 16
    raw["train"].update(epochs=1, batch_size=12, sampler={"name": "m_per_class", "m": 3})
    raw["tune"]["trials"] = 0
    raw["quantize"] = {"kinds": ["pq"], "bits": [32]}
    raw["evaluate"]["grid_queries"] = 3
    # The photo experiment is ECAML over multi-similarity: the model's embedding layer applied
    # again to detached trunk features in the loss, through Ray Train, Tune and export.
    # The sketch experiment is SGML: an attribute head on rows of which half (the sketches)
    # have no attributes, through every stage.
    # The scenes experiment trains the soft-PQ head beside adaptive-margin triplets on the
    # multiset Jaccard similarity; its learned codebooks become a faiss index of their own.
    scenes_exp = raw["experiments"]["jaccard_softpq"]
    dase_exp = raw["experiments"]["dase_mems"]
    raw["experiments"] = {"tiny": {**raw["experiments"]["ecaml_ms"], "search": {}},
                          "tiny_sketch": {**raw["experiments"]["sgml"], "dataset": "sketches", "search": {}}}
    # DASE + MEMS: the domain flag into the trunk, the cross-domain sampler, 32-bit hash codes
    raw["experiments"]["tiny_dase"] = {**dase_exp, "search": {},
                                       "quantize": {"kinds": ["hash"], "bits": [32]}}
    raw["experiments"]["tiny_dase"]["train"] = {**raw["experiments"]["tiny_dase"]["train"],
                                                "batch_size": 12, "epochs": 1}
    for name in ("tiny", "tiny_sketch", "tiny_dase"):
        raw["experiments"][name].pop("baseline")
    scenes_exp.update(search={}, quantize={"bits": [32]})
    scenes_exp["model"] = {"heads": {"soft_pq": {"bits": [32], "codeword_bits": 8}}}
    scenes_exp["train"] = {**scenes_exp["train"], "sampler": {"name": "multilabel", "k": 3}}
    scenes_exp.pop("baseline")
    raw["experiments"]["tiny_scenes"] = scenes_exp
    return raw


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


#: The checkout's path: longer than Unix sockets allow (107 bytes), as a project folder a few
#: levels deep can be; Ray's sockets must live elsewhere.
CHECKOUT_PATH_LENGTH = 200


def copy_project(repo: Path, params: dict) -> None:
    """The pipeline's files into ``repo``, with ``params`` as its params.yaml."""
    for item in ("dvc.yaml", "pipelines", "dml", ".gitignore"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, repo / item)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def pipeline_env(**extra: str) -> dict:
    """The environment of a pipeline run in a temporary git repository: this interpreter's
    tools first on PATH, a git identity, no DVC analytics, no Ray auth or outside cluster."""
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",  # `dvc init` would report to DVC (a daemon and a file in TMPDIR)
        "RAY_AUTH_MODE": "disabled",
        "GIT_AUTHOR_NAME": "dml", "GIT_AUTHOR_EMAIL": "dml@example.com",
        "GIT_COMMITTER_NAME": "dml", "GIT_COMMITTER_EMAIL": "dml@example.com",
    } | extra
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def project():
    root = Path(tempfile.mkdtemp(prefix="dmlp-", dir="/tmp"))
    repo = root / "projects"
    while len(str(repo)) < CHECKOUT_PATH_LENGTH:
        repo = repo / "a-folder-of-the-checkout"
    repo.mkdir(parents=True)
    (root / "t").mkdir()
    copy_project(repo, tiny_params())
    env = pipeline_env(
        DML_SCRATCH=str(repo / ".scratch"),  # the default place, under the long path
        TMPDIR=str(root / "t"),  # whatever a run leaves in the temp dir is seen here
    )
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "tiny pipeline"]):
        out = run(cmd, repo, env)
        assert out.returncode == 0, out.stderr
    yield repo, env
    shutil.rmtree(root, ignore_errors=True)


def warm_repro(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`dvc repro` as `make demo` runs it: every stage forked from one warm interpreter."""
    return run(["dml", "run", "--", "dvc", "repro", *args], repo, env)


#: Stages that are not work: the params check (runs when params.yaml changes) and the code
#: fingerprints (run when dml/ or pipelines/ change; a stage re-runs only when its code changed).
BOOKKEEPING = ("check", "code")


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` ran, bookkeeping aside."""
    names = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}
    return {name for name in names if not name.startswith(BOOKKEEPING)}


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``, split as a shell would."""
    import shlex

    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(prefix))
    return shlex.split(line, comments=True)


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def test_repro_runs_everything_then_nothing_then_only_what_changed(project):
    repo, env = project
    first = warm_repro(repo, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    # From a checkout at a 200-character path, with nothing left behind: no process of the run
    # (the Ray head, its workers, the warm interpreter) and no folder in the temp dir.
    assert len(str(repo)) >= CHECKOUT_PATH_LENGTH
    assert processes_with_env("TMPDIR", env["TMPDIR"]) == []
    assert sorted(p.name for p in Path(env["TMPDIR"]).iterdir()) == []
    assert "Running stage 'check'" in first.stdout and "Running stage 'code'" in first.stdout
    per_seed = {"train", "embed", "quantize", "evaluate"}
    assert ran_stages(first.stdout) == {
        *{f"{stage}@{data}" for stage in ("ingest", "preprocess") for data in ("shapes", "sketches", "scenes")},
        "report", *{f"tune@{name}" for name in EXPERIMENTS},
        *{f"{stage}@{name}-0" for stage in per_seed for name in EXPERIMENTS},
    }
    metrics = json.loads((repo / "metrics/tiny/seed0.json").read_text())
    assert set(metrics["float"]) >= {"recall@1", "recall@8", "map@r", "r_precision", "map", "nmi", "ami"}
    assert 0.0 < metrics["float"]["recall@1"] <= 1.0
    # ... and the same figures on the 4 trained classes (6 training classes, 2 validated on)
    # and on 4 of the 6 test classes: the seen/unseen gap
    gap = metrics["gap"]
    assert gap["classes"] == 4 and gap["seen"]["images"] == gap["unseen"]["images"] == 4 * 45
    assert set(gap["seen"]["float"]) >= {"recall@1", "map@r", "nmi", "ami"}
    assert metrics["quantized"]["pq32"]["bytes_per_vector"] == 4
    # The sketch dataset is evaluated with its own protocol: sketch queries against photos.
    sketch = json.loads((repo / "metrics/tiny_sketch/seed0.json").read_text())
    assert sketch["protocol"]["name"] == "cross_domain" and "precision@10" in sketch["float"]
    manifest = pq.read_table(repo / "data/sketches/manifest.parquet", columns=["domain"])
    domains = manifest.column("domain").to_pylist()
    assert sketch["queries"] == 12 * 3 and sketch["gallery"] == domains.count("photo") == 12 * 24
    # DASE + MEMS on them: flips embedded and searched, hash codes ranked by Hamming distance
    dase = json.loads((repo / "metrics/tiny_dase/seed0.json").read_text())
    assert dase["loss"] == "mems" and 0.0 < dase["float"]["map"] <= 1.0
    assert set(dase["quantized"]) == {"hash32"} and dase["quantized"]["hash32"]["bytes_per_vector"] == 4
    assert 0.0 < dase["quantized"]["hash32"]["map"] <= 1.0
    assert "view_flip" in pq.read_schema(repo / "embeddings/tiny_dase/seed0.parquet").names
    assert (repo / "dvclive/tiny_dase/seed0/plots/metrics/loss_margin.tsv").is_file()
    # ... and the attribute head is scored on the test photos, beside the retrieval figures.
    assert sketch["loss"] == "soft_binomial_deviance" and 0.0 < sketch["float"]["attributes/map"] <= 1.0
    assert set(sketch["attributes"]) >= {"warm", "filled", "large"}
    # The scenes: split by image with queries drawn from the test scenes, mAP and Jaccard-graded
    # NDCG on the float features and on the soft-PQ head's own codebooks, searched by faiss.
    scenes = json.loads((repo / "metrics/tiny_scenes/seed0.json").read_text())
    assert scenes["protocol"]["name"] == "multilabel" and scenes["queries"] == 11  # a quarter of 45
    assert {"map", "map@100", "ndcg@10", "ndcg@100"} <= set(scenes["float"])
    assert scenes["quantized"]["softpq32"]["bytes_per_vector"] == 4
    assert 0.0 < scenes["quantized"]["softpq32"]["map"] <= 1.0
    assert (repo / "dvclive/tiny_sketch/seed0/plots/metrics/loss_attribute_bce.tsv").is_file()
    table = (repo / "results/comparison.md").read_text()
    assert "| tiny | energy_confusion | 1 |" in table and "### Seen vs unseen classes" in table
    assert "## shapes · self_retrieval" in table and "## sketches · cross_domain" in table
    assert "hash32 mAP / P@10 (B/vec)" in table
    assert (repo / "plots/tiny/seed0/retrieval_grid.png").stat().st_size > 0
    assert (repo / "dvclive/tiny/seed0/plots/metrics/loss.tsv").is_file()
    assert (repo / "dvclive/tiny/seed0/plots/metrics/loss_energy_confusion.tsv").is_file()
    assert (repo / "dvclive/tiny/seed0/plots/metrics/val_map_at_r.tsv").is_file()  # the validation curve

    again = run(["dvc", "repro"], repo, env)
    assert again.returncode == 0, again.stderr
    assert ran_stages(again.stdout) == set()
    status = run(["dvc", "status"], repo, env)
    assert status.returncode == 0 and status.stdout.strip() == "Data and pipelines are up to date.", status.stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["ks"] = [1, 4]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    # As `make demo` runs it: a line per stage that did work (its result), nothing else.
    changed = warm_repro(repo, env, "--quiet")
    assert changed.returncode == 0, changed.stderr
    lines = changed.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        [*(f"evaluate {name} seed 0" for name in EXPERIMENTS), "report"]), changed.stdout
    assert changed.stderr == "", changed.stderr
    assert "recall@8" not in json.loads((repo / "metrics/tiny/seed0.json").read_text())["float"]

    # A sweep point as a DVC experiment: only what depends on the swept key re-runs.
    assert run(["git", "add", "-A"], repo, env).returncode == 0
    assert run(["git", "commit", "-qm", "pipeline results"], repo, env).returncode == 0
    exp = run(["dvc", "exp", "run", "-S", "evaluate.grid_queries=2"], repo, env)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    # The report page shows the retrieval grids, so it is made again with them.
    assert ran_stages(exp.stdout) == {*{f"evaluate@{name}-0" for name in EXPERIMENTS}, "report"}
    shown = run(["dvc", "exp", "show", "--json"], repo, env)
    assert shown.returncode == 0 and "grid_queries" in shown.stdout
    # The README's comparison line fits a terminal: the changed knob and the headline figures.
    compare = readme_command("dvc exp show --only-changed")
    table = run([*compare, "--no-pager"], repo, env | {"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "grid_queries" in table.stdout, table.stdout
    assert max(map(len, table.stdout.splitlines())) <= 120, table.stdout
    # The metrics DVC compares are the headline figures; the details stay out of its tables.
    listed = run(["dvc", "metrics", "show", "--json"], repo, env)
    files = json.loads(listed.stdout)[""]["data"]  # "": the workspace
    assert set(files) == {f"metrics/{name}/seed0.summary.json" for name in EXPERIMENTS}
    assert set(files["metrics/tiny/seed0.summary.json"]["data"]) == {"recall@1", "map@r"}
    assert set(files["metrics/tiny_scenes/seed0.summary.json"]["data"]) == {"map", "ndcg@10"}


def test_a_changed_module_retrains_and_a_forced_run_never_resumes_a_finished_one(project):
    repo, env = project
    runs = Path(env["DML_SCRATCH"]) / "ray_results"
    before = {p.name for p in runs.glob("tiny-*")}
    loop = repo / "dml/train/loop.py"
    loop.write_text(loop.read_text() + "\n# a change to the training code\n")
    changed = warm_repro(repo, env)  # the forked stages import the edited module, not a stale one
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    ran = ran_stages(changed.stdout)
    assert {"tune@tiny", "train@tiny-0", "train@tiny_sketch-0"} <= ran
    assert not {s for s in ran if s.startswith(("ingest", "preprocess"))}  # they do not run that module
    output = changed.stdout + changed.stderr
    assert "resuming at epoch" not in output
    # The edited code is part of the run's name: a new run, trained from scratch, and its refit
    # on every training class (train.refit), a run of its own.
    assert len({p.name for p in runs.glob("tiny-*")} - before) == 2
    card = json.loads((repo / "models/tiny/seed0/model.json").read_text())
    assert card["resumed_at_epochs"] == [] and card["refit"]["epochs"] == card["selected_epoch"] + 1

    forced = run(["dvc", "repro", "--force", "--single-item", "train@tiny-0"], repo, env)
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert ran_stages(forced.stdout) == {"train@tiny-0"}
    output = forced.stdout + forced.stderr
    assert "resuming at epoch" not in output and "had finished; training it again" in output
    card = json.loads((repo / "models/tiny/seed0/model.json").read_text())
    assert card["resumed_at_epochs"] == [] and len(card["history"]) == card["train"]["epochs"]


def test_unknown_params_key_stops_the_stage_and_names_it(project):
    repo, env = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["quantize"]["bitz"] = [8]
    bad = repo / "bad-params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = run([sys.executable, "pipelines/quantize.py", "--params", str(bad), "--experiment", "tiny",
               "--tuned", "tuned/tiny.json", "--embeddings", "embeddings/tiny/seed0.parquet",
               "--model", "models/tiny/seed0", "--out", "indexes/elsewhere"], repo, env)
    assert out.returncode == 2
    assert "quantize.bitz: unknown key" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (repo / "indexes/elsewhere").exists()


def test_unknown_top_level_key_fails_repro_before_any_stage_and_names_it(project):
    repo, env = project
    saved = (repo / "params.yaml").read_text()
    write_params(repo, {**yaml.safe_load(saved), "epochz": 3})
    try:
        out = run(["dvc", "repro"], repo, env)
    finally:
        (repo / "params.yaml").write_text(saved)
    assert out.returncode != 0
    assert "error: params.yaml: epochz: unknown key" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert ran_stages(out.stdout) == set()


def image_tree(tree: Path) -> None:
    """An ImageFolder tree of two classes, three small PNGs each."""
    from PIL import Image

    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tree / cls / f"{i}.png")


def test_an_edited_image_re_runs_ingest_and_an_untouched_folder_does_not(project, tmp_path):
    from PIL import Image

    repo, env = project
    tree = repo / "mine"
    image_tree(tree)
    saved = (repo / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["datasets"]["mine"] = {"source": "folder", "options": {"root": "mine"}}
    write_params(repo, params)
    try:
        first = run(["dvc", "repro", "ingest@mine"], repo, env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert ran_stages(first.stdout) == {"ingest@mine"}
        untouched = run(["dvc", "repro", "ingest@mine"], repo, env)
        assert untouched.returncode == 0 and ran_stages(untouched.stdout) == set()
        Image.new("RGB", (8, 8), (0, 0, 255)).save(tree / "dog" / "1.png")
        edited = run(["dvc", "repro", "ingest@mine"], repo, env)
        assert edited.returncode == 0, edited.stderr[-3000:]
        assert ran_stages(edited.stdout) == {"ingest@mine"}
    finally:
        (repo / "params.yaml").write_text(saved)
        shutil.rmtree(tree)


def test_corrupt_image_fails_ingest_with_every_bad_file_and_no_output(project, tmp_path):
    repo, env = project
    tree = tmp_path / "images"
    image_tree(tree)
    (tree / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tree / "dog" / "empty.jpg").write_bytes(b"")
    params = tiny_params()
    params["datasets"]["mine"] = {"source": "folder", "on_bad": "fail", "options": {"root": str(tree)}}
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml.safe_dump(params))
    out_path = tmp_path / "manifest.parquet"
    out = run([sys.executable, "pipelines/ingest.py", "--params", str(cfg), "--dataset", "mine",
               "--out", str(out_path), "--report", str(tmp_path / "report.json")], repo, env)
    assert out.returncode == 2, out.stderr
    assert "broken.png" in out.stderr and "empty.jpg" in out.stderr
    assert not out_path.exists() and not (tmp_path / "report.json").exists()


def test_interrupted_repro_leaves_no_partial_output_and_the_next_one_completes(project):
    repo, env = project
    assert run(["git", "add", "-A"], repo, env).returncode == 0
    assert run(["git", "commit", "-qm", "before the interruption"], repo, env).returncode == 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    log = repo.parent / "interrupted.log"
    # Killed 3 s into the train stage: Ray is starting or training.
    kill_when(["dvc", "repro"], repo, env, ready=lambda: "Running stage 'train@tiny-0'" in log.read_text(),
              log=log, delay=3, timeout=300)

    # Stages that finished before the kill (tune) are recorded; the killed one and all after it are not.
    after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("train@tiny-0", "embed@tiny-0", "quantize@tiny-0", "evaluate@tiny-0", "report"):
        assert after[stage] == lock[stage], f"dvc.lock changed for {stage}"
    if (repo / "models/tiny/seed0").exists():  # DVC removes a stage's outputs before running it
        load_model(repo / "models/tiny/seed0")  # whole and verified, or not there at all
    assert not list((repo / "models/tiny").glob(".seed0.*")), "a temporary model folder was left behind"

    again = warm_repro(repo, env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {"train@tiny-0", "embed@tiny-0", "quantize@tiny-0", "evaluate@tiny-0"} <= ran_stages(again.stdout)
    load_model(repo / "models/tiny/seed0")
    status = run(["dvc", "status", "--json"], repo, env)
    assert json.loads(status.stdout) == {}, status.stdout


def test_ctrl_c_stops_a_run_and_leaves_nothing_behind(project):
    """Ctrl-C at a terminal: SIGINT to the foreground process group of `dml run`, mid-train.
    Its Ray head, warm interpreter and stages stop, and their temp folders go with them."""
    repo, env = project
    saved = (repo / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["train"]["lr"] = 0.003
    write_params(repo, params)
    log = repo.parent / "ctrl-c.log"
    with open(log, "w") as handle:
        # as at a terminal, where Ctrl-C has its default action (a suite started in the
        # background of a shell inherits SIGINT ignored, and so would the run)
        proc = subprocess.Popen(["dml", "run", "--", "dvc", "repro"], cwd=repo, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while "Running stage 'train@" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before a train stage: " + log.read_text()[-3000:]
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) != 0, "the run was not stopped: " + log.read_text()[-3000:]
    finally:
        (repo / "params.yaml").write_text(saved)
    deadline = time.monotonic() + 15  # processes that got SIGTERM a moment ago may still exit
    while processes_with_env("TMPDIR", env["TMPDIR"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with_env("TMPDIR", env["TMPDIR"]) == [], log.read_text()[-2000:]
    assert sorted(p.name for p in Path(env["TMPDIR"]).iterdir()) == []
    # the parameters as they were: what the interruption removed comes back from DVC's run cache
    again = warm_repro(repo, env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]


def test_deterministic_stages_give_identical_hashes_when_run_again(project):
    repo, env = project
    assert run(["git", "add", "-A"], repo, env).returncode == 0
    assert run(["git", "commit", "-qm", "resumed"], repo, env).returncode == 0
    # (`dml run` writes dvc.lock with libyaml, plain `dvc` with ruamel: compare the data)
    before = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in ("ingest@shapes", "preprocess@shapes"):
        forced = run(["dvc", "repro", "--force", "--single-item", stage], repo, env)
        assert forced.returncode == 0, forced.stderr
        assert ran_stages(forced.stdout) == {stage}
    after = yaml.safe_load((repo / "dvc.lock").read_text())
    changed = [name for name, entry in after["stages"].items() if before["stages"].get(name) != entry]
    assert not changed, f"output hashes changed on a clean re-run: {changed}"


def test_each_seed_is_a_run_of_its_own_cached_apart(project):
    repo, env = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    two = warm_repro(repo, env)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    # seed 0's runs are reused as they are; only seed 1's run, and the report
    assert ran_stages(two.stdout) == {"report", *{f"{stage}@{name}-1" for stage in ("train", "embed", "quantize", "evaluate")
                                                   for name in EXPERIMENTS}}
    cards = [json.loads((repo / f"models/tiny/seed{s}/model.json").read_text()) for s in (0, 1)]
    assert [c["seed"] for c in cards] == [0, 1] and cards[0]["sha256"] != cards[1]["sha256"]
    table = (repo / "results/comparison.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tiny | "))
    assert row.startswith("| tiny | energy_confusion | 2 |") and " ± " in row

    params["seeds"] = [1]  # dropping a seed re-runs nothing but the report
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    one = run(["dvc", "repro"], repo, env)
    assert one.returncode == 0, one.stderr[-3000:]
    assert ran_stages(one.stdout) == {"report"}
