"""params.yaml validation: unknown keys, wrong types and unknown names name the key."""

from pathlib import Path

import pytest
import yaml

from dml.config import load_params, parse_params, resolve_run
from dml.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert set(params.experiments) >= {"contrastive", "multi_similarity", "proxy_anchor"}


def test_unknown_top_level_key_is_named():
    raw = base() | {"trian": {}}
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        parse_params(raw)


def test_unknown_nested_key_is_named():
    raw = base()
    raw["train"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        parse_params(raw)


def test_wrong_type_is_named():
    raw = base()
    raw["train"]["epochs"] = "many"
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_params(raw)


def test_bad_choice_lists_valid_values():
    raw = base()
    raw["tune"]["mode"] = "cluster"
    with pytest.raises(ConfigError, match=r"tune\.mode.*'local' or 'trainer'"):
        parse_params(raw)


def test_unknown_loss_lists_valid_names():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["name"] = "contrastiv"
    with pytest.raises(ConfigError, match=r"unknown loss 'contrastiv'; valid choices: .*contrastive"):
        parse_params(raw)


def test_unknown_loss_knob_is_named_with_valid_keys():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["neg_marign"] = 0.5
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.loss\.neg_marign.*valid keys: neg_margin, pos_margin"):
        parse_params(raw)


def test_unknown_backbone_is_an_error_at_build_time():
    from dml.models import build_model

    params = parse_params(base())
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg'; valid choices: resnet18"):
        build_model(params.model.model_copy(update={"backbone": "vgg"}))


def test_search_key_must_name_a_knob():
    raw = base()
    raw["experiments"]["contrastive"]["search"] = {"loss.nope": {"type": "uniform", "low": 0, "high": 1}}
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.search\.loss\.nope"):
        parse_params(raw)


def test_search_dimension_needs_bounds():
    raw = base()
    raw["experiments"]["contrastive"]["search"] = {"loss.neg_margin": {"type": "uniform", "low": 1, "high": 0}}
    with pytest.raises(ConfigError, match=r"low < high"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_resolve_run_merges_overrides():
    params = parse_params(base())
    spec = resolve_run(params, "contrastive", {"loss.neg_margin": 0.42, "train.lr": 0.01})
    assert spec.loss_kwargs["neg_margin"] == 0.42
    assert spec.train.lr == 0.01
    assert spec.train.epochs == params.train.epochs
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        resolve_run(params, "nope")
    with pytest.raises(ConfigError, match="train.lr"):
        resolve_run(params, "contrastive", {"train.lr": -1.0})


def test_bad_loss_value_is_caught_at_validation():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["neg_margin"] = -1.0
    with pytest.raises(ConfigError, match=r"neg_margin"):
        parse_params(raw)
