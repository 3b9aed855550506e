"""The cluster configs in cluster/: valid for the tools that read them, and consistent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
SHARED = "/mnt/shared"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_launcher_config_passes_rays_own_schema():
    config = load("aws-gpu.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    gpu_nodes = [n for n in nodes.values() if n["resources"].get("GPU", 0) >= 1]
    assert gpu_nodes, "no GPU worker type"
    assert all(n["min_workers"] < n["max_workers"] for n in gpu_nodes), "GPU workers do not autoscale"
    assert sum(n.get("max_workers", 0) for n in nodes.values()) >= config["max_workers"]
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=" in c for c in config["worker_start_ray_commands"])
    assert f"-v {SHARED}:{SHARED}" in config["docker"]["run_options"]


def test_image_installs_this_package_on_the_pinned_ray():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+?)-py(\d)(\d+)", dockerfile, re.M)
    assert base, "the image does not start from a Ray image"
    assert base.group(1) == ray.__version__
    assert f"{base.group(2)}.{base.group(3)}" == "3.11"
    assert re.search(r"^COPY .*pyproject\.toml", dockerfile, re.M)
    assert re.search(r"^COPY .*\bdml\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install .*-e \.", dockerfile, re.M)
    assert "import dml" in dockerfile


def test_kuberay_cluster_runs_the_image_with_gpu_autoscaling():
    cluster = load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    image = load("aws-gpu.yaml")["docker"]["image"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for container in containers(template):
            assert container["image"] == image
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"] == load("kuberay/pvc.yaml")["metadata"]["name"]
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if all(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in containers(g["template"]))]
    assert gpu_groups
    for group in gpu_groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["minReplicas"] < group["maxReplicas"]


def test_shared_volume_is_readwritemany():
    pvc = load("kuberay/pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_rayjob_runs_the_pipeline_on_that_cluster():
    job = load("kuberay/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == load("kuberay/raycluster.yaml")["metadata"]["name"]
    entrypoint = job["spec"]["entrypoint"]
    assert f"cd {SHARED}/" in entrypoint and "dvc repro" in entrypoint


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_every_placeholder_is_explained(name):
    text = (CLUSTER / name).read_text()
    for line in text.splitlines():
        if "<" in line and ">" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"{name}: placeholder without a comment: {line.strip()}"
